"""Media made in memory for the tests: animations (Pillow) and clips (PyAV) whose
colour tells which frame, or which moment, a prepared picture came from."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import av
import numpy as np
from PIL import Image

from bot.images import PreparedImage

#: one colour per frame, far apart (JPEG and palettes keep them recognisable)
COLOURS: list[tuple[int, int, int]] = [
    (255, 0, 0),
    (0, 255, 0),
    (0, 0, 255),
    (255, 255, 0),
    (255, 0, 255),
    (0, 255, 255),
    (128, 128, 128),
    (255, 255, 255),
    (0, 0, 0),
    (255, 128, 0),
    (128, 0, 255),
    (0, 128, 64),
]


def animation(
    fmt: str, count: int, *, size: tuple[int, int] = (64, 48), duration: int | Sequence[int] = 100, **params: object
) -> bytes:
    """An animated GIF / WEBP / PNG whose frame i is a flat COLOURS[i]."""
    frames = [Image.new("RGB", size, COLOURS[i % len(COLOURS)]) for i in range(count)]
    if fmt == "WEBP":
        params.setdefault("lossless", True)
    buf = io.BytesIO()
    frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], duration=duration, **params)
    return buf.getvalue()


def picture_of(prepared: PreparedImage) -> Image.Image:
    raw = base64.b64decode(prepared.data_uri.split(",", 1)[1])
    im = Image.open(io.BytesIO(raw))
    im.load()
    return im


def centre(prepared: PreparedImage) -> tuple[int, int, int]:
    im = picture_of(prepared)
    return im.getpixel((im.width // 2, im.height // 2))


def nearest(colour: tuple[int, int, int]) -> int:
    """Which of COLOURS (its index) ``colour`` is."""
    return min(range(len(COLOURS)), key=lambda i: sum((a - b) ** 2 for a, b in zip(COLOURS[i], colour, strict=True)))


def ramp_colour(t: float, seconds: float) -> tuple[int, int, int]:
    """The colour of a :func:`clip` at ``t`` seconds: red rises, blue falls."""
    level = round(255 * t / seconds)
    return (level, 0, 255 - level)


def clip(
    fmt: str = "mp4",
    codec: str = "libx264",
    *,
    seconds: float = 2.0,
    fps: int = 10,
    size: tuple[int, int] = (64, 48),
    gop: int = 10,
    audio: str | None = None,
    seekable: bool = True,
) -> bytes:
    """A clip whose colour at ``t`` is :func:`ramp_colour` (frame by frame), with a
    keyframe every ``gop`` frames; ``seekable=False`` writes it as a live recording
    would (a WebM without duration or cues)."""
    out = io.BytesIO() if seekable else _Unseekable()
    with av.open(out, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=fps, options={"sc_threshold": "0"})  # keyframes every gop only
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        sound = container.add_stream(audio, rate=48000) if audio else None
        count = round(seconds * fps)
        for i in range(count):
            pixels = np.empty((size[1], size[0], 3), np.uint8)
            pixels[:, :] = ramp_colour(i / fps, seconds)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if sound is not None:
            _add_sound(container, sound, seconds)
    return out.getvalue() if isinstance(out, io.BytesIO) else bytes(out.data)


def sound(fmt: str = "ipod", codec: str = "aac", seconds: float = 1.0) -> bytes:
    """A file with a sound stream only (``ipod``: an M4A; ``ogg`` + ``libopus``: a voice message)."""
    out = io.BytesIO()
    with av.open(out, "w", format=fmt) as container:
        _add_sound(container, container.add_stream(codec, rate=48000), seconds)
    return out.getvalue()


def _add_sound(container, stream, seconds: float) -> None:
    rate, size = 48000, 960
    for start in range(0, int(seconds * rate), size):
        samples = (0.2 * np.sin(np.arange(start, start + size) / 8)).astype(np.float32).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
        frame.sample_rate = rate
        frame.pts = start
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


class _Unseekable(io.RawIOBase):
    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, b) -> int:
        self.data += b
        return len(b)
