"""Animations and clips through the image pool and the Runtime: frames count against
the pixel budget; a declared video type gets the video byte limit."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

import aiohttp
import pytest
from aiohttp import web

from bot.config import load_settings
from bot.image_pool import ImagePool
from bot.images import ImageError, ImageLimits
from bot.media import MSG_NO_PICTURE, MediaLimits, PreparedMedia, media_pixels, prepare_media
from bot.runtime import Runtime
from tests.fakes.colour_engine import ColourEngine
from tests.helpers import jpeg_bytes
from tests.media.makers import animation, clip, sound


async def test_frames_count_against_the_budget() -> None:
    pool = ImagePool(ImageLimits(), workers=2, pixel_budget=10_000_000)
    try:
        gif = animation("GIF", 8, size=(64, 48))
        media = await pool.prepare_media(gif)
        assert (media.kind, media.frames) == ("animation", 4)
        assert pool.stats().peak_in_flight_pixels == 4 * 64 * 48

        mp4 = clip(seconds=1.0, size=(64, 48))
        media = await pool.prepare_media(mp4)
        assert (media.kind, media.frames) == ("video", 4)
        assert pool.stats().peak_in_flight_pixels == 4 * 64 * 48
        assert pool.in_flight_pixels == 0 and pool.running == 0

        still = await pool.prepare_media(jpeg_bytes())
        assert still.kind == "image"
    finally:
        pool.close()


async def test_two_clips_whose_frames_overflow_the_budget_run_one_at_a_time() -> None:
    running: list[int] = []
    overlaps: list[int] = []
    lock = threading.Lock()

    def slow_prepare(data: bytes, limits: ImageLimits, media: MediaLimits) -> PreparedMedia:
        with lock:
            running.append(1)
            overlaps.append(len(running))
        try:
            threading.Event().wait(0.05)
            return prepare_media(data, limits, media)
        finally:
            with lock:
                running.pop()

    frame = 64 * 48
    # One clip's 4 frames fit the budget, two clips' 8 do not (a still would fit 8 times).
    pool = ImagePool(ImageLimits(), workers=2, pixel_budget=6 * frame, prepare_media=slow_prepare)
    try:
        data = clip(seconds=1.0, size=(64, 48))
        results = await asyncio.gather(pool.prepare_media(data), pool.prepare_media(data))
        assert [r.frames for r in results] == [4, 4]
        assert max(overlaps) == 1
        assert pool.stats().peak_in_flight_pixels == 4 * frame
    finally:
        pool.close()


async def test_a_failing_media_measure_counts_as_the_largest() -> None:
    def broken(data: bytes, limits: ImageLimits, media: MediaLimits) -> int:
        raise RuntimeError("no header")

    pool = ImagePool(ImageLimits(max_pixels=1000), measure_media=broken, prepare_media=lambda d, lim, m: None)  # type: ignore[arg-type,return-value]
    try:
        await pool.prepare_media(b"x")
        assert pool.stats().peak_in_flight_pixels == 1000 * 4
    finally:
        pool.close()


async def test_media_errors_come_out_of_the_pool() -> None:
    pool = ImagePool()
    try:
        with pytest.raises(ImageError, match=MSG_NO_PICTURE):
            await pool.prepare_media(sound())
        assert pool.in_flight_pixels == 0
    finally:
        pool.close()


def test_pool_media_from_settings() -> None:
    images = SimpleNamespace(frames=6, frames_as="grid", max_video_bytes=1234, max_video_seconds=9.5)
    assert ImagePool.from_settings(images).media == MediaLimits(6, "grid", 1234, 9.5)
    assert ImagePool.from_settings(None).media == MediaLimits()
    settings = load_settings(overrides={"images": {"frames": 2, "frames_as": "grid", "max_video_seconds": 30}})
    assert ImagePool.from_settings(settings.images).media == MediaLimits(2, "grid", 50 * 1024 * 1024, 30.0)
    assert media_pixels(clip(seconds=1.0), media=ImagePool.from_settings(settings.images).media) == 2 * 64 * 48


def test_settings_are_validated() -> None:
    from bot.config import ConfigError

    for bad in ({"frames": 0}, {"frames": 17}, {"frames_as": "sheet"}, {"max_video_seconds": 0}, {"max_video_bytes": 0}):
        with pytest.raises(ConfigError):
            load_settings(overrides={"images": bad})


# --------------------------------------------------------------------------
# Runtime.load_media


@pytest.fixture
async def served():
    files = {"/clip.mp4": clip(seconds=1.0), "/anim.gif": animation("GIF", 8), "/voice.ogg": sound("ogg", "libopus")}
    hits: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(body=files[request.path], content_type="application/octet-stream")

    app = web.Application()
    app.add_routes([web.get(path, handler) for path in files])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as session:
        yield session, f"http://127.0.0.1:{port}", f"127.0.0.1:{port}", hits, files
    await runner.cleanup()


def runtime_with(**images: object) -> Runtime:
    return Runtime(load_settings(overrides={"images": images}), engine=ColourEngine())


async def test_load_media_takes_a_clip_and_an_animation(served) -> None:
    session, base, host, hits, files = served
    runtime = runtime_with()
    try:
        media = await runtime.load_media(
            session, f"{base}/clip.mp4", len(files["/clip.mp4"]), allowed_hosts=[host], content_type="video/mp4"
        )
        assert (media.kind, media.frames) == ("video", 4)
        media = await runtime.load_media(session, f"{base}/anim.gif", None, allowed_hosts=[host], content_type="image/gif")
        assert (media.kind, media.frames) == ("animation", 4)
        still = await runtime.prepare_media(jpeg_bytes())
        assert still.kind == "image"
        with pytest.raises(ImageError, match=f"^{MSG_NO_PICTURE}$"):  # undeclared: told by its bytes
            await runtime.load_media(session, f"{base}/voice.ogg", None, allowed_hosts=[host])
    finally:
        runtime.image_pool.close()


async def test_load_media_limits_by_the_declared_type(served) -> None:
    session, base, host, hits, files = served
    size = len(files["/clip.mp4"])
    # Videos: max_video_bytes, before download, whatever max_bytes says.
    runtime = runtime_with(max_bytes=100, max_video_bytes=size)
    try:
        media = await runtime.load_media(session, f"{base}/clip.mp4", size, allowed_hosts=[host], content_type="video/mp4")
        assert media.kind == "video"  # downloaded under the video cap, not max_bytes
        with pytest.raises(ImageError, match="the limit is"):  # a non-video type keeps max_bytes
            await runtime.load_media(session, f"{base}/clip.mp4", size, allowed_hosts=[host], content_type="image/png")
    finally:
        runtime.image_pool.close()

    runtime = runtime_with(max_video_bytes=size - 1)
    try:
        hits.clear()
        with pytest.raises(ImageError, match="the limit is"):
            await runtime.load_media(session, f"{base}/clip.mp4", size, allowed_hosts=[host], content_type="video/mp4")
        assert hits == []  # refused from the declared size: never downloaded
        with pytest.raises(ImageError, match="the limit is"):  # a size that lied: the download's cap holds
            await runtime.load_media(session, f"{base}/clip.mp4", 10, allowed_hosts=[host], content_type="video/mp4")
        with pytest.raises(ImageError, match=f"^{MSG_NO_PICTURE}$"):  # a declared sound file is not fetched
            await runtime.load_media(session, f"{base}/voice.ogg", 100, allowed_hosts=[host], content_type="audio/ogg")
        assert hits == ["/clip.mp4"]
    finally:
        runtime.image_pool.close()
