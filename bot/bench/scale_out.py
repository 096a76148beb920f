"""``llava-bot bench --scale-out``: the queue's throughput with one OpenAI-compatible
endpoint vs two (llama-cpp-python servers on loopback, one core each)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bot.bench.common import QUESTION, encode, photo
from bot.config import Settings
from bot.runtime import Runtime


def start_server(model: tuple[Path, Path], port: int, threads: int) -> Any:
    import subprocess
    import sys

    return subprocess.Popen(
        [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(model[0]), "--clip_model_path", str(model[1]), "--chat_format", "llava-1-5",
            "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_gpu_layers", "0",
            "--n_threads", str(threads), "--n_threads_batch", str(threads),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run_scale_out(
    settings: Settings, *, questions: int = 12, max_tokens: int = 16, progress: Callable[[str], None] = lambda _: None
) -> dict[str, Any]:
    """Throughput of the queue with one endpoint vs two (llama-cpp-python servers on loopback)."""
    import urllib.request

    from bot.config import EngineSettings

    if settings.model.path is None or settings.model.mmproj is None:
        from bot.engine.tiny import BENCH, ensure_model_pair

        model = ensure_model_pair(BENCH, settings.cache_dir)
    else:
        model = (settings.model.path, settings.model.mmproj)
    ports = [free_port(), free_port()]
    procs = [start_server(model, port, threads=1) for port in ports]
    results: dict[str, Any] = {"scale_questions": questions, "scale_max_tokens": max_tokens}
    try:
        progress("starting two llama-cpp-python servers")
        for port, proc in zip(ports, procs):
            deadline = time.monotonic() + 120
            while True:
                if proc.poll() is not None:
                    raise RuntimeError("a llama-cpp-python server did not start (is the [server] extra installed?)")
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
        pictures = [encode(photo(640, 480, seed=300 + i), "JPEG", quality=90) for i in range(questions)]
        for count in (1, 2):
            progress(f"{questions} questions through {count} endpoint(s)")
            engines = [EngineSettings(kind="openai", url=f"http://127.0.0.1:{p}/v1") for p in ports[:count]]
            run_settings = settings.model_copy(
                update={
                    "engines": engines,
                    "queue": settings.queue.model_copy(update={"max_size": 100, "per_user": 100, "per_user_per_minute": 0}),
                }
            )
            runtime = Runtime(run_settings)
            await runtime.start()
            try:
                prepared = [await runtime.prepare(p) for p in pictures]
                await runtime.submit(runtime.request([prepared[0]], QUESTION, max_tokens=max_tokens)).result()  # warm
                t0 = time.perf_counter()
                handles = [runtime.submit(runtime.request([p], QUESTION, max_tokens=max_tokens)) for p in prepared]
                for handle in handles:
                    await handle.result()
                elapsed = time.perf_counter() - t0
            finally:
                await runtime.close()
            results[f"throughput_{count}_endpoint{'s' if count > 1 else ''}_per_s"] = round(questions / elapsed, 2)
        results["scale_out_ratio"] = round(results["throughput_2_endpoints_per_s"] / results["throughput_1_endpoint_per_s"], 2)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    return results
