"""The metrics server's health check, before and after the model is loaded (no Discord)."""

from __future__ import annotations

from bot.config import load_settings
from bot.metrics import Metrics
from bot.runtime import Runtime
from tests.helpers import http_get


async def test_health_is_503_until_the_model_is_loaded(tiny_pair) -> None:
    runtime = Runtime(load_settings(overrides={"model": {"path": str(tiny_pair[0]), "mmproj": str(tiny_pair[1]), "n_gpu_layers": 0}}))
    metrics = Metrics(runtime)
    port = await metrics.start("127.0.0.1", 0)
    try:
        assert await http_get(f"http://127.0.0.1:{port}/healthz") == (503, "model not loaded\n")
        await runtime.start()
        assert (await http_get(f"http://127.0.0.1:{port}/healthz"))[0] == 200
    finally:
        await runtime.close()
        await metrics.stop()
