"""Shared fixtures: one tiny model pair per test session, in a private cache."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import pytest
from PIL import Image, ImageDraw


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


def picture(size: tuple[int, int] = (96, 64), colour: tuple[int, int, int] = (200, 60, 40)) -> Image.Image:
    img = Image.new("RGB", size, (40, 90, 200))
    ImageDraw.Draw(img).rectangle((size[0] // 4, size[1] // 4, size[0] * 3 // 4, size[1] * 3 // 4), fill=colour)
    return img


def jpeg_bytes(img: Image.Image | None = None, **save: object) -> bytes:
    buf = io.BytesIO()
    (img or picture()).save(buf, "JPEG", quality=90, **save)
    return buf.getvalue()


def data_uri(img: Image.Image | None = None) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg_bytes(img)).decode("ascii")
