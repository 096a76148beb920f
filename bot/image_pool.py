"""A bounded pool for image preparation: few threads, and a pixel budget.

Decoding a picture costs memory in proportion to its pixels (a 40 MP PNG is a
160 MB buffer before anything is scaled), so running every upload in its own
thread lets a burst of large images multiply that.  :class:`ImagePool` runs
:func:`bot.images.prepare_image` in a small set of worker threads of its own
and admits work by *decoded pixels in flight*:

* each image's cost is read from its header only (:func:`decoded_pixels`:
  for a JPEG, the reduced size libjpeg will decode at), nothing is decoded;
* images start in arrival order (FIFO).  The first one waiting starts as soon
  as a worker is free and its pixels fit in what is left of the budget; the
  ones behind it wait too, so a stream of small images cannot starve a big one;
* an image larger than the whole budget is never refused for it: it starts
  alone, once nothing else is running;
* cancelling the caller gives its place back at once when it was still
  waiting; when its worker had started, the pixels come back as soon as the
  worker is done with them (a thread cannot be stopped, and that memory is in
  use until it is).  Errors release their pixels the same way.

Animations and clips go through the same pool (:meth:`ImagePool.prepare_media`):
their cost is the frames sampled times a frame's pixels
(:func:`bot.media.media_pixels`, from the headers, read in a thread: a
video's means opening the container), since each sampled frame is decoded
at full size.

No Discord here, and nothing global: the :class:`~bot.runtime.Runtime` owns
one pool.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from bot.images import (
    ImageLimits,
    PreparedImage,
    decoded_pixels,
    prepare_image,
)
from bot.media import MediaLimits, PreparedMedia, media_pixels
from bot.media import prepare_media as prepare_any

__all__ = [
    "DEFAULT_PIXEL_BUDGET",
    "DEFAULT_WORKERS",
    "ImagePool",
    "PoolStats",
]

log = logging.getLogger(__name__)

DEFAULT_WORKERS = 2
#: one maximum-size (40 MP) image plus small ones, never two large ones
DEFAULT_PIXEL_BUDGET = 48_000_000

PrepareFn = Callable[[bytes, ImageLimits], PreparedImage]
MeasureFn = Callable[[bytes, ImageLimits], int]
MediaPrepareFn = Callable[[bytes, ImageLimits, MediaLimits], PreparedMedia]
MediaMeasureFn = Callable[[bytes, ImageLimits, MediaLimits], int]

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A snapshot of an :class:`ImagePool`."""

    workers: int  # threads at most
    pixel_budget: int  # decoded pixels in flight at most (but see "alone")
    running: int  # images being prepared now
    in_flight_pixels: int  # their pixels
    waiting: int  # images waiting for a worker or for pixels
    peak_in_flight_pixels: int  # the most pixels ever in flight at once
    completed: int  # preparations finished (done, failed or cancelled)


class _Ticket:
    __slots__ = ("admitted", "pixels")

    def __init__(self, pixels: int, admitted: asyncio.Future[None]) -> None:
        self.pixels = pixels
        self.admitted = admitted  # result set when the pool lets it start


class ImagePool:
    """Prepare images in ``workers`` threads, ``pixel_budget`` pixels at a time.

    ``prepare`` and ``measure`` are the preparation and the cost functions
    (:func:`~bot.images.prepare_image` and :func:`~bot.images.decoded_pixels`
    unless a test swaps them); ``media``, ``prepare_media`` and ``measure_media``
    are their counterparts for :meth:`prepare_media` (frames of animations and
    clips).  The pool's state is only touched on the event loop; its threads
    start on first use.
    """

    def __init__(
        self,
        limits: ImageLimits | None = None,
        *,
        workers: int = DEFAULT_WORKERS,
        pixel_budget: int = DEFAULT_PIXEL_BUDGET,
        prepare: PrepareFn = prepare_image,
        measure: MeasureFn = decoded_pixels,
        media: MediaLimits | None = None,
        prepare_media: MediaPrepareFn = prepare_any,
        measure_media: MediaMeasureFn = media_pixels,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        if pixel_budget < 1:
            raise ValueError("pixel_budget must be at least 1")
        self.limits = limits if limits is not None else ImageLimits()
        self.workers = workers
        self.pixel_budget = pixel_budget
        self._prepare = prepare
        self._measure = measure
        self.media = media if media is not None else MediaLimits()
        self._prepare_media = prepare_media
        self._measure_media = measure_media
        self._waiting: collections.deque[_Ticket] = collections.deque()
        self._running = 0
        self._in_flight = 0
        self._peak = 0
        self._completed = 0
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()
        self._closed = False

    @classmethod
    def from_settings(cls, images: Any, limits: ImageLimits | None = None) -> ImagePool:
        """A pool from an ``[images]`` settings section; absent fields take the defaults."""
        return cls(
            limits,
            workers=int(getattr(images, "prepare_workers", DEFAULT_WORKERS) or DEFAULT_WORKERS),
            pixel_budget=int(getattr(images, "pixel_budget", DEFAULT_PIXEL_BUDGET) or DEFAULT_PIXEL_BUDGET),
            media=MediaLimits.from_settings(images),
        )

    # ------------------------------------------------------------------
    # what callers use

    async def prepare(self, data: bytes) -> PreparedImage:
        """Prepare one image; raises :class:`~bot.images.ImageError` like
        :func:`~bot.images.prepare_image` (and ``RuntimeError`` once closed)."""
        if self._closed:
            raise RuntimeError("the image pool is closed")
        return await self._run(self._cost(data), self._prepare, data, self.limits)

    async def prepare_media(self, data: bytes) -> PreparedMedia:
        """Prepare a still, an animation's frames or a clip's (see :mod:`bot.media`);
        raises :class:`~bot.images.ImageError` like :func:`~bot.media.prepare_media`.
        Its cost is the sampled frames' pixels together."""
        if self._closed:
            raise RuntimeError("the image pool is closed")
        # Off the event loop: a video's header is read by opening the container, and
        # counting a long GIF's frames walks the whole file.
        pixels = await asyncio.to_thread(self._media_cost, data)
        return await self._run(pixels, self._prepare_media, data, self.limits, self.media)

    async def _run(self, pixels: int, fn: Callable[..., _T], *args: Any) -> _T:
        """Wait for a worker and ``pixels`` of the budget, then run ``fn(*args)`` there."""
        loop = asyncio.get_running_loop()
        ticket = _Ticket(pixels, loop.create_future())
        self._waiting.append(ticket)
        self._admit()
        try:
            await ticket.admitted
        except BaseException:
            if ticket.admitted.done() and not ticket.admitted.cancelled():
                # Let in just as it was cancelled: it holds a worker and pixels.
                self._release(ticket)
            else:
                self._forget(ticket)
            raise

        try:
            work = self._executor_now().submit(fn, *args)
        except BaseException:
            self._release(ticket)
            raise
        work.add_done_callback(lambda _: self._release_from_thread(loop, ticket))
        # Cancelling this await cancels ``work`` only if it has not started;
        # either way the done-callback above gives the pixels back.
        return await asyncio.wrap_future(work, loop=loop)

    def stats(self) -> PoolStats:
        return PoolStats(
            workers=self.workers,
            pixel_budget=self.pixel_budget,
            running=self._running,
            in_flight_pixels=self._in_flight,
            waiting=self.waiting,
            peak_in_flight_pixels=self._peak,
            completed=self._completed,
        )

    @property
    def in_flight_pixels(self) -> int:
        return self._in_flight

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return sum(1 for ticket in self._waiting if not ticket.admitted.done())

    def close(self, *, wait: bool = False) -> None:
        """Refuse new work and stop the threads (work already started finishes)."""
        self._closed = True
        with self._executor_lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=wait, cancel_futures=True)

    # ------------------------------------------------------------------
    # admission

    def _cost(self, data: bytes) -> int:
        try:
            pixels = int(self._measure(data, self.limits))
        except Exception:  # the measure is a guess; prepare() will say what is wrong
            log.debug("could not measure an image, counting it as the largest", exc_info=True)
            pixels = self.limits.max_pixels
        return max(0, pixels)

    def _media_cost(self, data: bytes) -> int:
        try:
            pixels = int(self._measure_media(data, self.limits, self.media))
        except Exception:
            log.debug("could not measure a file, counting it as the largest", exc_info=True)
            pixels = self.limits.max_pixels * self.media.frames
        return max(0, pixels)

    def _admit(self) -> None:
        """Start waiting tickets from the front while a worker and pixels are free."""
        while self._waiting:
            ticket = self._waiting[0]
            if ticket.admitted.done():  # cancelled while waiting
                self._waiting.popleft()
                continue
            if self._running >= self.workers:
                return
            if self._running and self._in_flight + ticket.pixels > self.pixel_budget:
                return  # FIFO: the ones behind wait for this one
            self._waiting.popleft()
            self._running += 1
            self._in_flight += ticket.pixels
            self._peak = max(self._peak, self._in_flight)
            ticket.admitted.set_result(None)

    def _forget(self, ticket: _Ticket) -> None:
        try:
            self._waiting.remove(ticket)
        except ValueError:
            pass
        self._admit()  # it may have been the one holding the others back

    def _release(self, ticket: _Ticket) -> None:
        if ticket.pixels < 0:  # released already
            return
        self._running -= 1
        self._in_flight -= ticket.pixels
        self._completed += 1
        ticket.pixels = -1
        self._admit()

    def _release_from_thread(self, loop: asyncio.AbstractEventLoop, ticket: _Ticket) -> None:
        try:
            loop.call_soon_threadsafe(self._release, ticket)
        except RuntimeError:  # the loop is closed: nobody is left to wait
            self._release(ticket)

    def _executor_now(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._executor_lock:
            if self._closed:
                raise RuntimeError("the image pool is closed")
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=self.workers, thread_name_prefix="image-prepare"
                )
            return self._executor
