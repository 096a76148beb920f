"""Shared fixtures: one tiny model pair per test session, in a private cache; tests
marked ``gpu`` are skipped where there is no CUDA GPU.  Shared plain helpers are in
tests/helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import gpu_available


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keep the tests' generated models out of the user's ~/.cache (subprocesses inherit it)."""
    cache = tmp_path_factory.mktemp("llava-bot-cache")
    old = os.environ.get("LLAVA_BOT_CACHE_DIR")
    os.environ["LLAVA_BOT_CACHE_DIR"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("LLAVA_BOT_CACHE_DIR", None)
    else:
        os.environ["LLAVA_BOT_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def tiny_pair(private_cache: Path) -> tuple[Path, Path]:
    from bot.engine.tiny import TINY, ensure_model_pair

    return ensure_model_pair(TINY, private_cache)


@pytest.fixture(scope="session")
def tiny_engine(tiny_pair: tuple[Path, Path]):
    """One loaded engine on the tiny pair (CPU), shared by the engine tests."""
    from bot.engine.llama_cpp import LlamaCppEngine

    engine = LlamaCppEngine(*tiny_pair, n_ctx=2048, n_gpu_layers=0)
    engine.load()
    yield engine
    engine.close()


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("gpu") and not gpu_available():
        pytest.skip("needs a CUDA GPU and a llama-cpp-python built with GPU offload")
