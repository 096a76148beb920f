"""What the bench parts share: photo-like pictures, small statistics, the loop-lag
timer, and a wrapper that times the engine's own calls."""

from __future__ import annotations

import asyncio
import io
import random
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from PIL import Image, ImageDraw, ImageFilter

from bot.engine.base import Answer, VisionRequest
from bot.runtime import Runtime

QUESTION = "What is in this picture?"

# -- pictures ------------------------------------------------------------------------


def photo(width: int, height: int, seed: int) -> Image.Image:
    """Photo-like content: gradients, shapes, blur and grain (compresses like a photo)."""
    rng = random.Random(seed)
    sky = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    tint = Image.new("RGB", (width, height), tuple(rng.randrange(60, 200) for _ in range(3)))
    img = Image.blend(sky, tint, 0.5)
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        x, y = rng.randrange(width), rng.randrange(height)
        r = rng.randrange(width // 20, width // 5)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rng.randrange(256) for _ in range(3)))
    img = img.filter(ImageFilter.GaussianBlur(radius=max(1, width // 400)))
    grain = Image.effect_noise((width, height), 18).convert("RGB")
    return Image.blend(img, grain, 0.08)


def encode(img: Image.Image, fmt: str, **params: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


# -- small statistics ------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


class LoopLag:
    """A 10 ms timer on the event loop; records how late each tick fires."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            self.samples.append(max(0.0, loop.time() - due))

    @contextmanager
    def running(self) -> Iterator[LoopLag]:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        try:
            yield self
        finally:
            self._task.cancel()



def timed_engine(runtime: Runtime) -> list[float]:
    """Wrap the engine so each call's own duration is recorded (list returned;
    ``del engine.generate`` undoes it)."""
    engine = runtime.engine
    original = engine.generate
    durations: list[float] = []

    def generate(request: VisionRequest, **kw: Any) -> Answer:
        t0 = time.perf_counter()
        try:
            return original(request, **kw)
        finally:
            durations.append(time.perf_counter() - t0)

    engine.generate = generate  # type: ignore[method-assign]
    return durations

