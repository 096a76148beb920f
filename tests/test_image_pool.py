"""bot.image_pool: bounded threads, a pixel budget, FIFO, and real memory."""

from __future__ import annotations

import asyncio
import io
import json
import os
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from bot.image_pool import DEFAULT_PIXEL_BUDGET, DEFAULT_WORKERS, ImagePool
from bot.images import ImageError, ImageLimits, PreparedImage, decoded_pixels, prepare_image
from tests.helpers import photo_like_png

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------
# helpers


def fake_prepared(data: bytes) -> PreparedImage:
    return PreparedImage(
        data_uri="data:image/jpeg;base64,",
        width=1,
        height=1,
        source_format=data.decode(),
        source_width=1,
        source_height=1,
        source_bytes=len(data),
        frames=1,
        digest="",
        prepare_ms=0.0,
    )


class Recorder:
    """A stand-in ``prepare`` that records what runs at once.

    An image is named by its bytes (``b"big1"``); ``pixels`` gives its cost.
    With ``gated``, each one runs until the test opens its gate.
    """

    def __init__(self, pixels: dict[bytes, int], *, gated: bool = False, hold_s: float = 0.02) -> None:
        self.pixels = pixels
        self.gated = gated
        self.hold_s = hold_s
        self.lock = threading.Lock()
        self.current = 0
        self.peak = 0
        self.running: set[bytes] = set()
        self.started: list[bytes] = []
        self.finished: list[bytes] = []
        self.overlaps: list[frozenset[bytes]] = []
        self.gates: dict[bytes, threading.Event] = {name: threading.Event() for name in pixels}

    def measure(self, data: bytes, limits: ImageLimits) -> int:
        return self.pixels[data]

    def prepare(self, data: bytes, limits: ImageLimits) -> PreparedImage:
        with self.lock:
            self.current += self.pixels[data]
            self.peak = max(self.peak, self.current)
            self.running.add(data)
            self.started.append(data)
            self.overlaps.append(frozenset(self.running))
        try:
            if self.gated:
                assert self.gates[data].wait(10), f"{data!r} was never let go"
            else:
                time.sleep(self.hold_s)
            if data.startswith(b"bad"):
                raise ImageError("that file is not an image")
            return fake_prepared(data)
        finally:
            with self.lock:
                self.current -= self.pixels[data]
                self.running.discard(data)
                self.finished.append(data)

    def pool(self, **kwargs) -> ImagePool:
        return ImagePool(ImageLimits(), prepare=self.prepare, measure=self.measure, **kwargs)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.002)


def png(width: int, height: int, colour=(200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, "PNG")
    return out.getvalue()


# --------------------------------------------------------------------------
# the budget


async def test_two_big_images_never_decode_at_the_same_time():
    rec = Recorder({b"big1": 30, b"big2": 30, b"big3": 30, b"s1": 5, b"s2": 5})
    pool = rec.pool(workers=4, pixel_budget=48)

    results = await asyncio.gather(*(pool.prepare(name) for name in rec.pixels))

    assert [r.source_format for r in results] == ["big1", "big2", "big3", "s1", "s2"]
    assert rec.peak <= 48
    for together in rec.overlaps:
        assert len(together & {b"big1", b"big2", b"big3"}) <= 1
    assert pool.stats().peak_in_flight_pixels <= 48
    assert pool.in_flight_pixels == 0 and pool.running == 0 and pool.waiting == 0


async def test_small_images_share_the_budget():
    names = [bytes([65 + i]) for i in range(6)]
    rec = Recorder({name: 10 for name in names}, gated=True)
    pool = rec.pool(workers=3, pixel_budget=48)

    tasks = [asyncio.create_task(pool.prepare(name)) for name in names]
    await until(lambda: len(rec.running) == 3)  # the workers are the limit, not the pixels
    await asyncio.sleep(0.05)
    assert len(rec.started) == 3 and pool.in_flight_pixels == 30 and pool.waiting == 3

    for name in names:
        rec.gates[name].set()
    await asyncio.gather(*tasks)
    assert rec.peak == 30


async def test_workers_bound_the_threads_whatever_the_budget():
    names = [bytes([65 + i]) for i in range(8)]
    rec = Recorder({name: 1 for name in names}, gated=True)
    pool = rec.pool(workers=2, pixel_budget=10**9)

    tasks = [asyncio.create_task(pool.prepare(name)) for name in names]
    await until(lambda: len(rec.running) == 2)
    await asyncio.sleep(0.05)
    assert len(rec.started) == 2 and pool.running == 2 and pool.waiting == 6

    for name in names:
        rec.gates[name].set()
    await asyncio.gather(*tasks)
    assert max(len(together) for together in rec.overlaps) == 2


async def test_an_image_over_the_whole_budget_runs_alone():
    rec = Recorder({b"s1": 10, b"huge": 500, b"s2": 10, b"s3": 10}, gated=True)
    pool = rec.pool(workers=4, pixel_budget=48)

    tasks = [asyncio.create_task(pool.prepare(name)) for name in (b"s1", b"huge", b"s2", b"s3")]
    await until(lambda: rec.started == [b"s1"] and pool.waiting == 3)
    await asyncio.sleep(0.05)
    assert rec.started == [b"s1"]  # the huge one waits for s1, and the rest wait behind it

    rec.gates[b"s1"].set()
    await until(lambda: rec.started == [b"s1", b"huge"])
    assert pool.in_flight_pixels == 500 and pool.running == 1
    await asyncio.sleep(0.05)
    assert rec.running == {b"huge"}  # alone

    rec.gates[b"huge"].set()
    await until(lambda: set(rec.started) == {b"s1", b"huge", b"s2", b"s3"})
    rec.gates[b"s2"].set()
    rec.gates[b"s3"].set()
    results = await asyncio.gather(*tasks)
    assert [r.source_format for r in results] == ["s1", "huge", "s2", "s3"]
    assert all(len(together) == 1 for together in rec.overlaps if b"huge" in together)


async def test_fifo_a_big_image_is_not_overtaken_by_small_ones():
    rec = Recorder({b"a": 30, b"big": 40, b"small": 5, b"small2": 5}, gated=True)
    pool = rec.pool(workers=4, pixel_budget=48)

    tasks = [asyncio.create_task(pool.prepare(name)) for name in (b"a", b"big", b"small", b"small2")]
    await until(lambda: pool.running == 1 and pool.waiting == 3)
    await asyncio.sleep(0.05)
    # "small" would fit next to "a" (35 <= 48) but "big" came first.
    assert rec.started == [b"a"]

    rec.gates[b"a"].set()
    await until(lambda: len(rec.started) == 3)
    await asyncio.sleep(0.05)
    # Both let in together (45 <= 48); 40 + 5 + 5 would be over 48.
    assert rec.started[0] == b"a" and set(rec.started[1:]) == {b"big", b"small"}
    assert pool.in_flight_pixels == 45 and pool.waiting == 1

    rec.gates[b"small"].set()
    await until(lambda: len(rec.started) == 4)
    assert rec.started[3] == b"small2"
    rec.gates[b"big"].set()
    rec.gates[b"small2"].set()
    results = await asyncio.gather(*tasks)
    assert [r.source_format for r in results] == ["a", "big", "small", "small2"]
    assert rec.peak <= 48


async def test_start_order_is_arrival_order():
    names = [f"img{i}".encode() for i in range(10)]
    # No two fit together (30 + 30 > 50): they go one by one, first come first served.
    rec = Recorder({name: 30 + 7 * (i % 3) for i, name in enumerate(names)}, hold_s=0.01)
    pool = rec.pool(workers=3, pixel_budget=50)

    await asyncio.gather(*(pool.prepare(name) for name in names))

    assert rec.started == names
    assert rec.peak <= 50


# --------------------------------------------------------------------------
# nothing leaks


async def test_errors_give_the_pixels_back():
    rec = Recorder({b"bad": 40, b"good": 40})
    pool = rec.pool(workers=2, pixel_budget=48)

    with pytest.raises(ImageError, match="not an image"):
        await pool.prepare(b"bad")
    assert pool.in_flight_pixels == 0 and pool.running == 0
    assert (await pool.prepare(b"good")).source_format == "good"
    assert pool.stats().completed == 2


async def test_many_errors_and_successes_together_leave_nothing_behind():
    names = [(b"bad" if i % 2 else b"ok") + bytes([48 + i]) for i in range(8)]
    rec = Recorder({name: 20 for name in names})
    pool = rec.pool(workers=2, pixel_budget=48)

    results = await asyncio.gather(*(pool.prepare(name) for name in names), return_exceptions=True)

    assert [isinstance(r, ImageError) for r in results] == [i % 2 == 1 for i in range(8)]
    assert pool.stats() == pool.stats().__class__(
        workers=2, pixel_budget=48, running=0, in_flight_pixels=0, waiting=0, peak_in_flight_pixels=40, completed=8
    )


async def test_cancelling_a_waiting_caller_gives_its_place_back_at_once():
    rec = Recorder({b"first": 40, b"second": 40, b"third": 5}, gated=True)
    pool = rec.pool(workers=2, pixel_budget=48)

    first = asyncio.create_task(pool.prepare(b"first"))
    second = asyncio.create_task(pool.prepare(b"second"))
    third = asyncio.create_task(pool.prepare(b"third"))
    await until(lambda: pool.running == 1 and pool.waiting == 2)

    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    # "second" held the line; with it gone "third" fits next to "first".
    await until(lambda: rec.started == [b"first", b"third"])
    assert pool.waiting == 0 and pool.in_flight_pixels == 45

    rec.gates[b"first"].set()
    rec.gates[b"third"].set()
    await asyncio.gather(first, third)
    assert b"second" not in rec.started
    assert pool.in_flight_pixels == 0 and pool.running == 0


async def test_cancelling_a_running_caller_gives_the_pixels_back_when_its_worker_stops():
    rec = Recorder({b"running": 40, b"next": 40}, gated=True)
    pool = rec.pool(workers=2, pixel_budget=48)

    running = asyncio.create_task(pool.prepare(b"running"))
    await until(lambda: rec.started == [b"running"])
    following = asyncio.create_task(pool.prepare(b"next"))
    await until(lambda: pool.waiting == 1)

    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    # The thread still holds the decoded picture: its pixels stay counted.
    assert pool.in_flight_pixels == 40 and rec.started == [b"running"]

    rec.gates[b"running"].set()
    await until(lambda: rec.started == [b"running", b"next"])
    rec.gates[b"next"].set()
    assert (await following).source_format == "next"
    assert pool.in_flight_pixels == 0 and pool.running == 0 and pool.waiting == 0


async def test_cancelling_everything_leaves_an_empty_pool():
    names = [bytes([65 + i]) for i in range(6)]
    rec = Recorder({name: 30 for name in names}, hold_s=0.02)
    pool = rec.pool(workers=2, pixel_budget=48)

    tasks = [asyncio.create_task(pool.prepare(name)) for name in names]
    await until(lambda: rec.started)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await until(lambda: pool.running == 0)

    assert pool.in_flight_pixels == 0 and pool.waiting == 0
    assert (await pool.prepare(b"A")).source_format == "A"


async def test_a_failing_measure_counts_as_the_largest_image():
    def broken(data: bytes, limits: ImageLimits) -> int:
        raise RuntimeError("no header for you")

    seen: list[int] = []
    pool = ImagePool(ImageLimits(max_pixels=1234), prepare=lambda data, _limits: fake_prepared(data), measure=broken)
    original = pool._admit

    def spy() -> None:
        seen.extend(t.pixels for t in pool._waiting)
        original()

    pool._admit = spy  # type: ignore[method-assign]
    assert (await pool.prepare(b"x")).source_format == "x"
    assert seen == [1234]


async def test_closed_pool_refuses_work():
    pool = ImagePool()
    assert (await pool.prepare(png(20, 10))).width == 20
    pool.close()
    with pytest.raises(RuntimeError):
        await pool.prepare(png(20, 10))


# --------------------------------------------------------------------------
# real images


async def test_real_images_through_the_pool():
    pool = ImagePool(ImageLimits(max_side=64), workers=2, pixel_budget=1_000_000)

    prepared = await asyncio.gather(pool.prepare(png(400, 200)), pool.prepare(png(30, 30)))
    assert [(p.width, p.height) for p in prepared] == [(64, 32), (30, 30)]

    with pytest.raises(ImageError, match="not an image"):
        await pool.prepare(b"hello, this is text")
    with pytest.raises(ImageError, match="empty"):
        await pool.prepare(b"")
    assert pool.in_flight_pixels == 0 and pool.running == 0


async def test_real_decodes_respect_the_budget():
    limits = ImageLimits(max_side=64)
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}

    def counting_prepare(data: bytes, lim: ImageLimits) -> PreparedImage:
        pixels = decoded_pixels(data, lim)
        with lock:
            state["now"] += pixels
            state["peak"] = max(state["peak"], state["now"])
        try:
            return prepare_image(data, lim)
        finally:
            with lock:
                state["now"] -= pixels

    pictures = [png(1000, 1000, (i * 20, 0, 0)) for i in range(6)]
    pool = ImagePool(limits, workers=4, pixel_budget=1_500_000, prepare=counting_prepare)
    prepared = await asyncio.gather(*(pool.prepare(p) for p in pictures))

    assert all((p.width, p.height) == (64, 64) for p in prepared)
    assert state["peak"] == 1_000_000  # one at a time: two would be 2 MP
    assert pool.stats().peak_in_flight_pixels == 1_000_000


def test_decoded_pixels_reads_the_header_only():
    limits = ImageLimits(max_side=672, max_pixels=40_000_000)
    assert decoded_pixels(png(300, 200), limits) == 60_000

    jpeg = io.BytesIO()
    Image.new("RGB", (4000, 3000), (10, 20, 30)).save(jpeg, "JPEG")
    assert decoded_pixels(jpeg.getvalue(), limits) == 1000 * 750  # libjpeg's 1/4 scale
    assert decoded_pixels(jpeg.getvalue(), ImageLimits(max_side=4000)) == 12_000_000

    # A header claiming 50 MP is refused from the header: nothing to decode.
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", 10_000, 5_000, 8, 2, 0, 0, 0)
    big = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr))
    assert decoded_pixels(big + b"\0\0\0\0IDAT", limits) == 0
    assert decoded_pixels(b"", limits) == 0
    assert decoded_pixels(b"x" * 100, ImageLimits(max_bytes=50)) == 0
    # Unreadable: counted as the largest allowed.
    assert decoded_pixels(b"\x89PNG\r\n\x1a\n garbage", limits) == 40_000_000
    assert decoded_pixels(b"just some text", limits) == 40_000_000


def test_pool_from_settings():
    limits = ImageLimits(max_side=100)
    pool = ImagePool.from_settings(SimpleNamespace(prepare_workers=3, pixel_budget=9_000_000), limits)
    assert (pool.workers, pool.pixel_budget, pool.limits) == (3, 9_000_000, limits)

    default = ImagePool.from_settings(None)
    assert (default.workers, default.pixel_budget) == (DEFAULT_WORKERS, DEFAULT_PIXEL_BUDGET)

    from bot.config import ImageSettings

    settings = ImageSettings()
    assert (settings.prepare_workers, settings.pixel_budget) == (DEFAULT_WORKERS, DEFAULT_PIXEL_BUDGET)
    with pytest.raises(ValueError):
        ImagePool(workers=0)
    with pytest.raises(ValueError):
        ImagePool(pixel_budget=0)


# --------------------------------------------------------------------------
# memory: twelve 40 MP PNGs posted at once (issue 10)

_CHILD = r"""
import asyncio, json, resource, sys, time
from pathlib import Path

from bot.image_pool import ImagePool
from bot.images import ImageLimits

source = Path(sys.argv[1]).read_bytes()
copies = int(sys.argv[2])
# One buffer per member, as twelve downloads would be.
datas = [bytes(bytearray(source)) for _ in range(copies)]
del source


async def main():
    pool = ImagePool(ImageLimits())  # the defaults, as Runtime builds it
    return await asyncio.gather(*(pool.prepare(d) for d in datas))


started = time.perf_counter()
results = asyncio.run(main())
print(json.dumps({
    "prepared": [[r.width, r.height, r.source_width, r.source_height] for r in results],
    "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    "seconds": time.perf_counter() - started,
}))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux")
@pytest.mark.slow
def test_twelve_40mp_pngs_at_once_stay_under_1_2_gb(tmp_path: Path):
    limits = ImageLimits()
    data = photo_like_png(8000, 5000)
    assert len(data) <= limits.max_bytes  # a file the bot accepts
    assert decoded_pixels(data, limits) == 40_000_000
    path = tmp_path / "40mp.png"
    path.write_bytes(data)
    del data

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), "12"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == 0, child.stderr
    report = json.loads(child.stdout.strip().splitlines()[-1])

    assert report["prepared"] == [[1344, 840, 8000, 5000]] * 12  # all twelve answered
    peak_bytes = report["maxrss_kib"] * 1024
    assert peak_bytes < 1_200_000_000, f"peak RSS {peak_bytes / 1e6:.0f} MB"
