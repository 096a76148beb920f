"""Helpers shared by the test modules: pictures as bytes, and whether a CUDA GPU is here.

Fixtures live in the conftest.py files; plain functions and constants that more than
one test module uses live here (the bot-process and fake-Discord ones in
``tests/e2e/helpers.py``), so that no test module imports another."""

from __future__ import annotations

import asyncio
import base64
import functools
import io
import urllib.error
import urllib.request
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]


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


def photo_like_png(width: int, height: int) -> bytes:
    """A photo-like RGB PNG just under the 25 MiB limit at 40 MP: smooth random
    shapes (a coarse random grid, bicubic-upscaled) with fine noise on the top
    quarter (a lossless photo this size would be over the limit)."""
    import numpy as np

    rng = np.random.default_rng(10)
    coarse = rng.integers(0, 256, size=(height // 512 + 2, width // 512 + 2, 3), dtype=np.uint8)
    smooth = Image.fromarray(coarse, "RGB").resize((width, height), Image.Resampling.BICUBIC)
    pixels = np.asarray(smooth, dtype=np.uint8).copy()
    del smooth
    rows = height // 4
    noisy = pixels[:rows].astype(np.int16) + rng.integers(-3, 4, size=(rows, width, 1), dtype=np.int16)
    np.clip(noisy, 0, 255, out=noisy)
    pixels[:rows] = noisy
    del noisy
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, "PNG", compress_level=1)
    return out.getvalue()


async def http_get(url: str) -> tuple[int, str]:
    """GET ``url`` (in a thread): the status and the body, an HTTP error's too."""

    def fetch() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    return await asyncio.to_thread(fetch)


@functools.cache
def gpu_available() -> bool:
    """A CUDA GPU is present and llama-cpp-python was built to offload to it
    (what a test marked ``gpu`` needs; tests/conftest.py skips it otherwise)."""
    if not any(Path("/dev").glob("nvidia[0-9]*")):
        return False
    try:
        import llama_cpp
    except ImportError:
        return False
    return bool(llama_cpp.llama_supports_gpu_offload())
