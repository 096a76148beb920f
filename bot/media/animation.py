"""Animated GIF, WebP and APNG: a few frames, sampled evenly over the animation's time.

The frame timings are read from the file's own blocks first (GIF graphic
control extensions, APNG ``fcTL`` chunks, WebP ``ANMF`` chunks: no pixel is
decoded for that), the sample times are spread evenly over the total, and
Pillow then decodes up to the last frame needed (these formats build each
frame on the one before, so that much decoding cannot be skipped).  Each
sampled frame is prepared exactly as a still (:func:`bot.images.frame_to_rgb`).

Delays of 10 ms or less count as 100 ms, as browsers show them.  A file
whose timings cannot be read is sampled evenly by frame number instead.
"""

from __future__ import annotations

import bisect
import struct
import time

from PIL import ImageFile

from bot.images import ImageLimits, image_orientation, open_image, prepare_image

from .base import FrameSink, MediaLimits, PreparedMedia, sample_times, shown_size

__all__ = ["ANIMATED_FORMATS", "animation_frames", "frame_durations", "pick_frames", "prepare_animation"]

#: Pillow formats whose frames are an animation (an MPO's or a TIFF's are not)
ANIMATED_FORMATS = frozenset({"GIF", "PNG", "WEBP"})
_MIN_DELAY_MS = 10  # at most this: shown for _SLOW_DELAY_MS
_SLOW_DELAY_MS = 100.0


def _delay(ms: float) -> float:
    return _SLOW_DELAY_MS if ms <= _MIN_DELAY_MS else ms


def _skip_sub_blocks(data: bytes, pos: int) -> int:
    while pos < len(data):
        size = data[pos]
        pos += 1
        if size == 0:
            return pos
        pos += size
    return pos


def _gif_durations(data: bytes) -> list[float] | None:
    if len(data) < 13 or data[:6] not in (b"GIF87a", b"GIF89a"):
        return None
    pos = 13
    if data[10] & 0x80:  # global colour table
        pos += 3 * (2 << (data[10] & 7))
    durations: list[float] = []
    delay = 0
    while pos < len(data):
        block = data[pos]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension
            if pos + 2 > len(data):
                break
            label = data[pos + 1]
            pos += 2
            if label == 0xF9 and pos + 5 <= len(data) and data[pos] == 4:  # graphic control
                delay = data[pos + 2] | data[pos + 3] << 8  # hundredths of a second
            pos = _skip_sub_blocks(data, pos)
        elif block == 0x2C:  # image descriptor
            if pos + 10 > len(data):
                break
            flags = data[pos + 9]
            pos += 10
            if flags & 0x80:  # local colour table
                pos += 3 * (2 << (flags & 7))
            pos = _skip_sub_blocks(data, pos + 1)  # after the LZW code size
            durations.append(_delay(delay * 10))
            delay = 0
        else:
            break
    return durations


def _apng_durations(data: bytes) -> list[float] | None:
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    pos = 8
    durations: list[float] = []
    default_image_apart = False
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"IDAT" and not durations:
            default_image_apart = True  # the image before the first fcTL is not a frame
        elif kind == b"fcTL" and length >= 26:
            if default_image_apart and not durations:
                durations.append(0.0)  # Pillow's frame 0, never shown in the animation
            num, den = struct.unpack(">HH", data[pos + 28 : pos + 32])
            durations.append(_delay(1000 * num / (den or 100)))
        elif kind == b"IEND":
            break
        pos += 12 + length
    return durations


def _webp_durations(data: bytes) -> list[float] | None:
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    pos = 12
    durations: list[float] = []
    while pos + 8 <= len(data):
        kind = data[pos : pos + 4]
        (size,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        if kind == b"ANMF" and size >= 16:
            ms = int.from_bytes(data[pos + 20 : pos + 23], "little")
            durations.append(_delay(ms))
        pos += 8 + size + (size & 1)
    return durations


def frame_durations(data: bytes, source_format: str, n_frames: int) -> list[float] | None:
    """Each frame's time on screen (ms), in Pillow's frame order, from the file's
    blocks alone; None when they cannot be read (or do not match Pillow's count)."""
    parse = {"GIF": _gif_durations, "PNG": _apng_durations, "WEBP": _webp_durations}.get(source_format)
    try:
        durations = parse(data) if parse is not None else None
    except (struct.error, IndexError):
        return None
    if durations is None or len(durations) != n_frames or sum(durations) <= 0:
        return None
    return durations


def pick_frames(durations: list[float] | None, n_frames: int, count: int) -> list[int]:
    """The frames on screen at ``count`` evenly spread times (each once, in order);
    by frame number when there are no timings."""
    if durations is None:
        return sorted({n_frames * i // count for i in range(min(count, n_frames))})
    ends: list[float] = []
    total = 0.0
    for ms in durations:
        total += ms
        ends.append(total)
    picked = {min(n_frames - 1, bisect.bisect_right(ends, t)) for t in sample_times(total, count)}
    return sorted(picked)


def animation_frames(n_frames: int, media: MediaLimits) -> int:
    """How many frames of an animation of ``n_frames`` are sampled at most."""
    return max(1, min(media.frames, n_frames))


def prepare_animation(data: bytes, limits: ImageLimits, media: MediaLimits) -> PreparedMedia:
    """A GIF / WebP / PNG: a still as :func:`~bot.images.prepare_image` makes it
    (the same picture), an animation as its sampled frames (or one grid)."""
    started = time.perf_counter()
    with open_image(data, limits) as im:
        n_frames = int(getattr(im, "n_frames", 1) or 1)
        if im.format in ANIMATED_FORMATS and n_frames > 1:
            return _sample(im, data, n_frames, limits, media, started)
    return PreparedMedia.still(prepare_image(data, limits))


def _sample(
    im: ImageFile.ImageFile, data: bytes, n_frames: int, limits: ImageLimits, media: MediaLimits, started: float
) -> PreparedMedia:
    source_format = im.format or "unknown"
    durations = frame_durations(data, source_format, n_frames)
    picked = pick_frames(durations, n_frames, animation_frames(n_frames, media))
    transpose = image_orientation(im)  # EXIF (WebP, PNG) applies to every frame
    sink = FrameSink(
        limits,
        media,
        size=shown_size(im.size, transpose),
        count=len(picked),
        source_format=source_format,
        source_size=im.size,
        source_bytes=len(data),
        source_frames=n_frames,
        started=started,
    )
    for index in picked:
        im.seek(index)  # decodes the frames before it: each is built on the one before
        im.load()
        sink.add(im, transpose)
    return sink.finish("animation", sum(durations) / 1000 if durations is not None else None)
