"""Video (MP4, MOV, WebM, MKV, AVI, ...) with PyAV: a few frames, found by seeking.

Everything is read from memory (a ``BytesIO``); nothing is written to disk.
The container is opened with the one demuxer :func:`bot.images.sniff_container`
named (FFmpeg never probes, so no playlist or other demuxer reaching for more
files), then, before a single frame is decoded:

* no video stream (only sound: a voice message, an M4A) -> :data:`MSG_NO_PICTURE`;
* the frame size from the stream header is checked against ``max_pixels``;
* the duration comes from the header (a file without one, as a browser's
  recording, is demuxed once, packets only, to find its end) and is checked
  against ``max_video_seconds``.

Then for each of the ``frames`` times spread evenly over the clip, the demuxer
seeks to the keyframe at or before it and decodes forward to the first frame
at that time, or, when the container's index says no keyframe lies between
the frame decoded last and the next time, simply decodes on: a few frames per
sample, never the whole clip.  Each frame is turned into a PIL picture and
prepared as a still (:func:`bot.images.frame_to_rgb`), turned as its display
matrix says (phone videos).
"""

from __future__ import annotations

import io
import logging
import math
import time
from collections.abc import Iterator
from fractions import Fraction
from typing import TYPE_CHECKING

from PIL import Image

from bot.i18n import N_
from bot.images import Container, ImageError, ImageLimits, fmt_tenths, too_many_bytes, too_many_pixels

from .base import MSG_NO_PICTURE, MSG_VIDEO_UNREADABLE, FrameSink, MediaLimits, PreparedMedia, sample_times, shown_size

if TYPE_CHECKING:
    from av.container import InputContainer
    from av.video.frame import VideoFrame
    from av.video.stream import VideoStream

__all__ = ["prepare_video", "video_pixels"]

log = logging.getLogger(__name__)

MSG_TOO_LONG = N_("video is {seconds} s long, the limit is {limit} s")

# The display matrix's counter-clockwise rotation -> the transposition that shows the frame upright.
_ROTATIONS = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}


def _too_long(seconds: float, media: MediaLimits) -> ImageError:
    limit = f"{media.max_video_seconds:.1f}".removesuffix(".0")
    return ImageError(MSG_TOO_LONG.format(seconds=fmt_tenths(math.ceil(seconds * 10)), limit=limit))


def _open(data: bytes, container: Container) -> InputContainer:
    import av

    try:
        return av.open(io.BytesIO(data), "r", format=container.demuxer)
    except Exception as exc:  # av.FFmpegError: not that format, or broken beyond its header
        log.debug("could not open a %s", container.name, exc_info=True)
        raise ImageError(MSG_VIDEO_UNREADABLE) from exc


def _video_stream(source: InputContainer) -> VideoStream:
    """The first video stream that is a picture in motion (not an album's cover art)."""
    from av.stream import Disposition

    for stream in source.streams.video:
        if not stream.disposition & Disposition.attached_pic:
            return stream
    if source.streams.audio:
        raise ImageError(MSG_NO_PICTURE)
    raise ImageError(MSG_VIDEO_UNREADABLE)


def _frame_size(stream: VideoStream) -> tuple[int, int]:
    width, height = stream.codec_context.width, stream.codec_context.height
    if width <= 0 or height <= 0:
        raise ImageError(MSG_VIDEO_UNREADABLE)
    return width, height


def _check_pixels(width: int, height: int, limits: ImageLimits) -> None:
    if width * height > limits.max_pixels:
        raise too_many_pixels(width * height, limits.max_pixels, "video")


def _duration(source: InputContainer, stream: VideoStream, time_base: Fraction, start: int, media: MediaLimits) -> float:
    """Seconds from the header; else from the last packet (demuxed, not decoded)."""
    import av

    if stream.duration:
        return float(stream.duration * time_base)
    if source.duration:
        return source.duration / av.time_base
    end = start
    limit = media.max_video_seconds
    for packet in source.demux(stream):
        if packet.pts is not None:
            end = max(end, packet.pts + (packet.duration or 0))
            if (end - start) * time_base > limit:
                raise _too_long(float((end - start) * time_base), media)
    return float((end - start) * time_base)


def _decoded_frames(source: InputContainer, stream: VideoStream) -> Iterator[VideoFrame]:
    """The stream's frames from where the demuxer stands (tests count them here)."""
    yield from source.decode(stream)


def _keyframe_behind(stream: VideoStream, decoded_pts: int | None, target: int) -> bool:
    """Whether the container's index says the keyframe before ``target`` is not after
    the frame decoded last: decoding on is then cheaper than seeking."""
    if decoded_pts is None:
        return False
    entries = stream.index_entries
    if len(entries) == 0:
        return False
    i = entries.search_timestamp(target, backward=True)
    return i < 0 or entries[i].timestamp <= decoded_pts


def _transpose(frame: VideoFrame) -> Image.Transpose | None:
    try:
        rotation = frame.rotation
    except Exception:  # no display matrix, or an odd one
        return None
    return _ROTATIONS.get(round(rotation / 90) * 90 % 360)


def _sample(source: InputContainer, stream: VideoStream, targets: list[int], time_base: Fraction) -> Iterator[VideoFrame]:
    """The first frame at or after each target (pts), each frame once, in order."""
    frames: Iterator[VideoFrame] | None = None
    current: VideoFrame | None = None  # the frame decoded last
    ended = False
    taken: set[int | None] = set()
    for target in targets:
        frame: VideoFrame | None = None
        if current is not None and current.pts is not None and current.pts >= target:
            frame = current  # frames are sparser than the samples
        elif not ended:
            if frames is None or not _keyframe_behind(stream, None if current is None else current.pts, target):
                source.seek(target, stream=stream, backward=True)
                frames = _decoded_frames(source, stream)
            for decoded in frames:
                current = decoded
                if decoded.pts is None or decoded.pts >= target:
                    frame = decoded
                    break
            else:
                ended = True
        if frame is None:
            frame = current  # past the last frame: the last one
        if frame is None:
            continue
        if frame.pts in taken:
            continue
        taken.add(frame.pts)
        log.debug("sampled the frame at %.3f s for %.3f s", float((frame.pts or 0) * time_base), float(target * time_base))
        yield frame


def prepare_video(data: bytes, container: Container, limits: ImageLimits, media: MediaLimits) -> PreparedMedia:
    """Frames of a clip (see the module docstring); raises :class:`ImageError` only."""
    started = time.perf_counter()
    if container.sound_only:
        raise ImageError(MSG_NO_PICTURE)
    if len(data) > media.max_video_bytes:
        raise too_many_bytes(len(data), ImageLimits(max_bytes=media.max_video_bytes))
    source = _open(data, container)
    try:
        with source:
            stream = _video_stream(source)
            width, height = _frame_size(stream)
            _check_pixels(width, height, limits)
            time_base = stream.time_base
            if time_base is None or time_base <= 0:
                raise ImageError(MSG_VIDEO_UNREADABLE)
            start = stream.start_time or 0
            duration = _duration(source, stream, time_base, start, media)
            if duration > media.max_video_seconds:
                raise _too_long(duration, media)
            targets = [start + int(t / time_base) for t in sample_times(max(0.0, duration), media.frames)]
            source_frames = stream.frames or round(duration * float(stream.average_rate or 0)) or 1
            sink: FrameSink | None = None
            for frame in _sample(source, stream, targets, time_base):
                _check_pixels(frame.width, frame.height, limits)  # the stream may change size
                transpose = _transpose(frame)
                if sink is None:
                    sink = FrameSink(
                        limits,
                        media,
                        size=shown_size((frame.width, frame.height), transpose),
                        count=len(targets),
                        source_format=container.name,
                        source_size=(width, height),
                        source_bytes=len(data),
                        source_frames=source_frames,
                        started=started,
                    )
                picture = frame.to_image()
                sink.add(picture, transpose)
                del picture
            if sink is None:
                raise ImageError(MSG_VIDEO_UNREADABLE)
            return sink.finish("video", duration)
    except (ImageError, MemoryError):
        raise
    except Exception as exc:  # av.FFmpegError (broken packets, a decoder failing), odd streams
        log.debug("could not read a %s", container.name, exc_info=True)
        raise ImageError(MSG_VIDEO_UNREADABLE) from exc


def video_pixels(data: bytes, container: Container, limits: ImageLimits, media: MediaLimits) -> int:
    """Pixels :func:`prepare_video` decodes at once at most, from the header only:
    ``frames`` full-size frames; 0 when it will be refused before decoding."""
    if container.sound_only or not data or len(data) > media.max_video_bytes:
        return 0
    try:
        with _open(data, container) as source:
            width, height = _frame_size(_video_stream(source))
    except ImageError:
        return 0
    except Exception:
        return 0
    if width * height > limits.max_pixels:
        return 0
    return media.frames * width * height
