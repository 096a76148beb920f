"""Bytes in, a prepared image out: everything between an attachment and the model.

:func:`prepare_image` takes the raw bytes of a file somebody sent and returns a
:class:`PreparedImage`: an RGB JPEG no larger than ``max_side`` on its long
side, as a ``data:`` URI ready for a llama-cpp-python chat message, together
with what the source was and how long the work took.

Everything here is pure and synchronous (no Discord, no asyncio); callers run
it in a worker thread with :func:`asyncio.to_thread`.  Bad input of any kind
raises :class:`ImageError`, whose text is short enough to show the user; it
is the only exception type callers have to catch for bad input.

What it takes care of:

* the format is detected from the content, never from the file name, and only
  an allow-list of plain raster formats is ever handed to a decoder (nothing
  that would start Ghostscript or another external program);
* the pixel count is checked from the header, before anything is decoded,
  without touching Pillow's process-wide ``MAX_IMAGE_PIXELS``;
* JPEGs are decoded straight at a reduced scale (``Image.draft``), which is
  most of the speed: libjpeg does the first downscale while decoding;
* memory: the decoded source is the only full-size buffer.  It is box-reduced
  by an integer factor first (``Image.reduce``, what ``resize(reducing_gap=)``
  does) then resampled; a picture that needs a mode conversion (alpha,
  palette, CMYK, 16-bit) is converted and scaled a band of rows at a time;
  EXIF orientation is applied to the small result, and the source is closed
  before the JPEG is encoded.  :func:`decoded_pixels` tells from the header
  alone how many pixels a preparation will decode (what
  :mod:`bot.image_pool` budgets);
* EXIF orientation, the first frame of animations, transparency (composited
  on white), CMYK, 16-bit and 1-bit images all end up as ordinary RGB.

Several frames of an animation, and video, are :mod:`bot.media`'s: it uses the
pieces below (:func:`open_image`, :func:`frame_to_rgb`, :func:`to_prepared`) so
that every frame is prepared exactly as a still is, and :func:`sniff_container`
tells it what a file is from its first bytes.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import math
import re
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from PIL import Image, ImageFile, features
from PIL.JpegImagePlugin import JpegImageFile

from bot.i18n import N_

if TYPE_CHECKING:
    from PIL.ImageCms import ImageCmsTransform

__all__ = [
    "Container",
    "ImageError",
    "ImageLimits",
    "PreparedImage",
    "check_declared_size",
    "decoded_pixels",
    "frame_to_rgb",
    "image_orientation",
    "open_image",
    "plain_prepare",
    "prepare_image",
    "sniff_container",
    "to_prepared",
]

log = logging.getLogger(__name__)

_MB = 1024 * 1024
_WHITE = (255, 255, 255)

# User-facing messages (str(ImageError)).
MSG_EMPTY = N_("that file is empty")
MSG_NOT_IMAGE = N_("that file is not an image")
MSG_DAMAGED = N_("that image file is damaged or incomplete")
MSG_UNREADABLE = N_("could not read that image")
MSG_TOO_MANY_BYTES = N_("file is {size} MB, the limit is {limit} MB")
MSG_TOO_MANY_PIXELS = {"image": N_("image is {size} MP, the limit is {limit} MP"), "video": N_("video is {size} MP, the limit is {limit} MP")}
MSG_TOO_LARGE = N_("image is too large, the limit is {limit} MP")
MSG_UNSUPPORTED = N_("{name} images are not supported here, please send JPEG, PNG, WebP or GIF")

# Formats handed to Pillow.  All are plain raster formats decoded in-process;
# MPO (camera multi-picture JPEGs) comes in through the JPEG opener.  AVIF is
# added only when this Pillow build has libavif.
_ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
if features.check("avif"):
    _ALLOWED_FORMATS += ("AVIF",)

_HEIF_BRANDS = frozenset(
    {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"heif"}
)
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_BMP_HEADER_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")

# Downscaling: box-reduce by an integer factor while the picture is at least
# this many times the target (as ``resize(reducing_gap=3.0)``), then resample.
_REDUCING_GAP = 3.0
# A picture that needs a mode conversion is converted and scaled about this
# many source pixels (a band of whole rows) at a time: no full-size copy.
_BAND_PIXELS = 2_000_000
# EXIF orientation -> the transposition that undoes it (as PIL.ImageOps.exif_transpose).
_ORIENTATIONS: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class ImageError(Exception):
    """Bad input.  ``str(exc)`` is a short message fit to show a user,
    e.g. ``"that file is not an image"``."""


@dataclass(frozen=True, slots=True)
class ImageLimits:
    """How much work one image may cost, and what comes out."""

    max_bytes: int = 25 * _MB  # file size
    max_pixels: int = 40_000_000  # width*height of the source, from the header
    max_side: int = 1344  # long side of the prepared image (downscale only)
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        if self.max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        if self.max_pixels < 1:
            raise ValueError("max_pixels must be at least 1")
        if self.max_side < 1:
            raise ValueError("max_side must be at least 1")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError("jpeg_quality must be between 1 and 100")


@dataclass(frozen=True, slots=True)
class PreparedImage:
    """One image ready for the model, and what it was made from."""

    data_uri: str  # "data:image/jpeg;base64,..."
    width: int  # prepared size
    height: int
    source_format: str  # "JPEG", "PNG", "WEBP", "GIF", "MPO", ...
    source_width: int
    source_height: int
    source_bytes: int
    frames: int  # frames in the source (1 for still images)
    digest: str  # sha256 hex of the prepared JPEG bytes
    prepare_ms: float


_DEFAULT_LIMITS = ImageLimits()


# --------------------------------------------------------------------------
# Messages


def fmt_tenths(tenths: int) -> str:
    """``312`` -> ``"31.2"``, ``250`` -> ``"25"``."""
    whole, frac = divmod(tenths, 10)
    return f"{whole}" if frac == 0 else f"{whole}.{frac}"


def _size_text(value: int, unit: int, *, round_up: bool) -> str:
    # Integer arithmetic; the measured size is rounded up so that anything
    # over a round limit never reads as equal to it ("25 MB, the limit is 25").
    if round_up:
        tenths = -(-value * 10 // unit)
    else:
        tenths = (value * 10 + unit // 2) // unit
    return fmt_tenths(tenths)


def too_many_bytes(size: int, limits: ImageLimits) -> ImageError:
    return ImageError(
        MSG_TOO_MANY_BYTES.format(size=_size_text(size, _MB, round_up=True), limit=_size_text(limits.max_bytes, _MB, round_up=False))
    )


def too_many_pixels(pixels: int, limit: int, what: str = "image") -> ImageError:
    template = MSG_TOO_MANY_PIXELS.get(what, "{what} is {size} MP, the limit is {limit} MP")
    return ImageError(
        template.format(what=what, size=_size_text(pixels, 1_000_000, round_up=True), limit=_size_text(limit, 1_000_000, round_up=False))
    )


def _unsupported(name: str) -> ImageError:
    return ImageError(MSG_UNSUPPORTED.format(name=name))


def _bomb_error(exc: Image.DecompressionBombError, limits: ImageLimits) -> ImageError:
    """Pillow refused the size itself (its own limit is twice MAX_IMAGE_PIXELS)."""
    limit = limits.max_pixels
    if Image.MAX_IMAGE_PIXELS:
        limit = min(limit, 2 * int(Image.MAX_IMAGE_PIXELS))
    match = _BOMB_PIXELS.search(str(exc))
    if match is None:
        return ImageError(MSG_TOO_LARGE.format(limit=_size_text(limit, 1_000_000, round_up=False)))
    return too_many_pixels(int(match.group(1)), limit)


# --------------------------------------------------------------------------
# Content sniffing (only what Pillow is not asked about, or cannot tell us)


def _ftyp_brands(data: bytes) -> set[bytes]:
    """Major and compatible brands of an ISO-BMFF ``ftyp`` box, or empty."""
    if len(data) < 12 or data[4:8] != b"ftyp":
        return set()
    (box_size,) = struct.unpack(">I", data[:4])
    box_size = min(max(box_size, 16), len(data), 4096)
    brands = {data[8:12]}
    brands.update(data[i : i + 4] for i in range(16, box_size - 3, 4))
    return brands


def _refuse_known_unsupported(data: bytes) -> None:
    """Refuse image formats we recognise but do not take, with a helpful message.

    Done before Pillow sees the bytes: HEIC shares its container with AVIF
    (Pillow's AVIF opener would try it and fail obscurely), and formats like
    PostScript must never reach a decoder at all.
    """
    head = data[:64]
    brands = _ftyp_brands(head)
    if brands:
        avif = bool(brands & _AVIF_BRANDS)
        if (avif and "AVIF" not in _ALLOWED_FORMATS) or (
            not avif and brands & (_HEIF_BRANDS | {b"mif1", b"msf1"})
        ):
            raise _unsupported("HEIC/AVIF")
        return
    if head.startswith(b"8BPS"):
        raise _unsupported("Photoshop (PSD)")
    if head.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")):
        raise _unsupported("JPEG XL")
    if head.startswith((b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51")):
        raise _unsupported("JPEG 2000")
    if head.startswith((b"%!PS", b"\xc5\xd0\xd3\xc6")):
        raise _unsupported("PostScript")
    text_head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text_head.startswith((b"<svg", b"<?xml")) and b"<svg" in text_head:
        raise _unsupported("SVG")


def _looks_like_allowed_image(data: bytes) -> bool:
    """Whether the magic says "one of our formats" (so a failure means damage)."""
    head = data[:32]
    if head.startswith(
        (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a")
    ) or head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return True
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return True
    if head[:2] == b"BM" and len(head) >= 18:
        return struct.unpack("<I", head[14:18])[0] in _BMP_HEADER_SIZES
    return bool(_ftyp_brands(head) & _AVIF_BRANDS) and "AVIF" in _ALLOWED_FORMATS


@dataclass(frozen=True, slots=True)
class Container:
    """A video or sound container recognised by :func:`sniff_container`."""

    demuxer: str  # the FFmpeg demuxer that is forced when it is opened (never probed)
    name: str  # for messages and PreparedImage.source_format: "MP4", "MOV", "WEBM", ...
    sound_only: bool = False  # a format that never holds a picture (MP3, WAV, FLAC)


# QuickTime files without an ``ftyp`` box start with one of these atoms.
_QUICKTIME_ATOMS = frozenset({b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"})
_ASF_GUID = b"\x30\x26\xb2\x75\x8e\x66\xcf\x11\xa6\xd9\x00\xaa\x00\x62\xce\x6c"


def sniff_container(data: bytes) -> Container | None:
    """The video (or sound) container ``data`` is, from its first bytes; None for
    anything else (images included: HEIC/AVIF stay images, refused or taken as today).

    Each answer names the one FFmpeg demuxer the file is opened with, so FFmpeg
    never guesses (no playlist or other demuxer that reaches for more files).
    """
    head = data[:400]
    if _looks_like_allowed_image(head):  # a GIF starts with 0x47 too, as MPEG-TS packets do
        return None
    brands = _ftyp_brands(head[:64])
    if brands:
        if brands & (_AVIF_BRANDS | _HEIF_BRANDS | {b"mif1", b"msf1"}):
            return None  # a still (or an image sequence): images, not video
        if brands & {b"qt  "} and not brands & {b"isom", b"mp41", b"mp42"}:
            return Container("mov", "MOV")
        return Container("mp4", "MP4")  # isom, iso2..6, mp41, mp42, avc1, M4V, M4A, 3gp, dash...
    if len(head) >= 8 and head[4:8] in _QUICKTIME_ATOMS:
        (box_size,) = struct.unpack(">I", head[:4])
        if box_size in (0, 1) or box_size >= 8:  # 0: to the end, 1: a 64-bit size follows
            return Container("mov", "MOV")
    if head.startswith(b"\x1a\x45\xdf\xa3"):  # EBML: Matroska / WebM
        return Container("matroska", "WEBM" if b"webm" in head[:64] else "MKV")
    if head.startswith(b"OggS"):  # Theora video, or (a voice message) Opus / Vorbis
        return Container("ogg", "OGG")
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return Container("avi", "AVI")
    if head.startswith(b"FLV\x01"):
        return Container("flv", "FLV")
    if head.startswith(_ASF_GUID):
        return Container("asf", "WMV")
    if head.startswith(b"\x00\x00\x01\xba"):
        return Container("mpeg", "MPEG")
    if len(head) > 376 and head[0] == head[188] == head[376] == 0x47:
        return Container("mpegts", "MPEG-TS")
    # Formats that only ever hold sound (never opened: there is nothing to show).
    if (head[:4] == b"RIFF" and head[8:12] == b"WAVE") or (head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC")):
        return Container("", "audio", sound_only=True)
    if head.startswith((b"ID3", b"fLaC", b"#!AMR", b"MThd")) or (
        # an MPEG audio frame (MP3) or ADTS (AAC): 11 sync bits; a JPEG's FF D8 is not one
        len(head) >= 3 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and head[2] >> 4 != 0xF
    ):
        return Container("", "audio", sound_only=True)
    return None


# --------------------------------------------------------------------------
# Pixels


def fit(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Size with the long side capped at ``max_side``, aspect kept, never larger."""
    long_side = max(width, height)
    if long_side <= max_side:
        return width, height
    scale = max_side / long_side
    if width >= height:
        return max_side, max(1, round(height * scale))
    return max(1, round(width * scale)), max_side


def _band_extrema(im: Image.Image) -> tuple[float, float]:
    """``im.getextrema()`` of a one-band picture ("I", "F", "I;16"): one (min, max) pair,
    not the per-band pairs Pillow's return type also allows."""
    return cast("tuple[float, float]", im.getextrema())


def _to_eight_bit(
    im: Image.Image, extrema: tuple[float, float] | None = None
) -> Image.Image:
    """16/32-bit integer and float grey -> "L", scaled rather than clipped.

    Pillow's own conversion clips (a mid-grey 16-bit PNG turns white).
    ``extrema`` are those of the whole picture when ``im`` is a band of it.
    """
    if im.mode.startswith("I;16"):
        return im.convert("I").point(lambda v: v * (1 / 257)).convert("L")
    low, high = extrema if extrema is not None else _band_extrema(im)
    if im.mode == "F":
        if low >= 0 and high <= 1.0:
            return im.point(lambda v: v * 255).convert("L")
    elif 0 <= low and high <= 255:
        return im.convert("L")
    elif 0 <= low and high <= 65535:
        return im.point(lambda v: v * (1 / 257)).convert("L")
    if high <= low:  # flat image of odd values
        return Image.new("L", im.size, 128)
    # Anything else (negative, floats outside 0..1): stretch to the full range.
    scale = 255 / (high - low)
    return im.point(lambda v: (v - low) * scale).convert("L")


_per_thread = threading.local()


def _lab_to_srgb() -> ImageCmsTransform:
    """A CIELab -> sRGB transform, built once per thread (12 ms; used per band)."""
    transform = getattr(_per_thread, "lab_to_srgb", None)
    if transform is None:
        from PIL import ImageCms

        transform = ImageCms.buildTransform(
            ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB"
        )
        _per_thread.lab_to_srgb = transform
    return transform


def _to_rgb(im: Image.Image, extrema: tuple[float, float] | None = None) -> Image.Image:
    """Any mode -> "RGB"; transparency is composited onto white.

    Works pixel by pixel, so a band of rows converts like the whole picture
    (given the whole picture's ``extrema`` for "I" and "F").
    """
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        im = _to_eight_bit(im, extrema)  # 16-bit tRNS values are meaningless after this
    elif _has_alpha(im):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        background.alpha_composite(rgba)
        del rgba
        return background.convert("RGB")
    if im.mode == "RGB":
        return im
    if im.mode == "LAB":  # CIELab TIFFs: Pillow's convert() would copy channels raw
        from PIL import ImageCms

        converted = ImageCms.applyTransform(im, _lab_to_srgb())
        assert converted is not None  # None only with inPlace=True
        return converted
    return im.convert("RGB")


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        "transparency" in im.info and im.mode in ("P", "L", "RGB", "1")
    )


def _reduce_factor(size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    """The box-reduction ``resize(target, reducing_gap=_REDUCING_GAP)`` would do first."""
    return (
        int(size[0] / target[0] / _REDUCING_GAP) or 1,
        int(size[1] / target[1] / _REDUCING_GAP) or 1,
    )


def _scale(im: Image.Image, target: tuple[int, int], factor: tuple[int, int]) -> Image.Image:
    """``im`` box-reduced by ``factor``, then resampled to ``target`` (or ``im``
    itself when it has that size already): ``resize(reducing_gap=)``'s steps.

    HAMMING: made for downscaling, sharp enough for a model that scales to
    336 px itself, and twice as fast as LANCZOS (bench, part 3).
    """
    if im.size == target:
        return im
    width, height = im.size
    if factor != (1, 1):
        im = im.reduce(factor)
    # The source's extent in reduced pixels (a last block may be partial).
    box = (0.0, 0.0, width / factor[0], height / factor[1])
    return im.resize(target, Image.Resampling.HAMMING, box=box)


def _scale_in_bands(
    im: Image.Image, target: tuple[int, int], factor: tuple[int, int]
) -> Image.Image:
    """``_scale(_to_rgb(im), target, factor)``, made a band of rows at a time.

    Each band of output rows is made from the source rows it needs (plus the
    filter's reach on either side, starting on a multiple of the vertical
    factor), converted, reduced and resampled on its own, so the only
    full-size buffer is the decoded source: an RGBA picture used to cost
    four full-size copies on top of it, a palette one a 4-byte RGB copy.
    The result is the whole-picture one, to rounding.
    """
    width, height = im.size
    extrema = _band_extrema(im) if im.mode in ("I", "F") else None
    if width * height <= _BAND_PIXELS:
        return _scale(_to_rgb(im, extrema), target, factor)
    out = Image.new("RGB", target)
    if target == im.size:  # nothing to scale: only the conversion is banded
        rows = max(1, _BAND_PIXELS // width)
        for top in range(0, height, rows):
            band = im.crop((0, top, width, min(height, top + rows)))
            out.paste(_to_rgb(band, extrema), (0, top))
        return out
    fx, fy = factor
    reduced_height = -(-height // fy)
    scale = height / fy / target[1]  # reduced rows per output row
    reach = math.ceil(scale) + 2  # HAMMING's support is one output pixel each side
    out_rows = max(1, int(_BAND_PIXELS / width / fy / scale))
    for top in range(0, target[1], out_rows):
        bottom = min(target[1], top + out_rows)
        first = max(0, int(top * scale) - reach)  # in reduced rows
        last = min(reduced_height, math.ceil(bottom * scale) + reach)
        band = _to_rgb(im.crop((0, first * fy, width, min(height, last * fy))), extrema)
        if factor != (1, 1):
            band = band.reduce(factor)
        box = (0.0, top * scale - first, width / fx, bottom * scale - first)
        out.paste(band.resize((target[0], bottom - top), Image.Resampling.HAMMING, box=box), (0, top))
        del band
    return out


def _shrink_to_rgb(im: Image.Image, max_side: int) -> Image.Image:
    """``im`` (loaded) as RGB with its long side <= max_side; may be ``im`` itself."""
    target = fit(im.width, im.height, max_side)
    factor = _reduce_factor(im.size, target)
    if im.mode in ("RGB", "L") and not _has_alpha(im):
        # Averaging is valid in these modes: scale first, convert what is left.
        small = _scale(im, target, factor)
        return small if small.mode == "RGB" else small.convert("RGB")
    return _scale_in_bands(im, target, factor)


def _orientation(im: Image.Image) -> Image.Transpose | None:
    """The transposition EXIF orientation asks for, or None (also for broken EXIF)."""
    try:
        value = im.getexif().get(0x0112, 1)
        return _ORIENTATIONS.get(value) if isinstance(value, int) else None
    except Exception:  # a broken EXIF block should not cost the picture
        log.debug("ignoring unreadable EXIF orientation", exc_info=True)
        return None


# --------------------------------------------------------------------------
# Public API


def check_declared_size(size: int | None, limits: ImageLimits = _DEFAULT_LIMITS) -> None:
    """Raise :class:`ImageError` before download when an attachment's declared
    size is over the limit (or zero).  ``None`` means unknown and passes."""
    if size is None:
        return
    if size <= 0:
        raise ImageError(MSG_EMPTY)
    if size > limits.max_bytes:
        raise too_many_bytes(size, limits)


def prepare_image(data: bytes, limits: ImageLimits = _DEFAULT_LIMITS) -> PreparedImage:
    """Decode, check and shrink one image; see the module docstring.

    Raises :class:`ImageError` (and nothing else) for any bad input.
    """
    started = time.perf_counter()
    with open_image(data, limits) as im:
        source_format = im.format or "unknown"
        source_size = im.size
        frames, rgb = _decode(im, limits.max_side)
        if rgb is not im:
            im.close()  # the full-size source goes before the encode
        # Encoded inside the block: ``rgb`` may be ``im`` itself, which
        # cannot be used once closed.
        jpeg = _encode(rgb, limits)
    return _prepared(jpeg, rgb.size, source_format, source_size, len(data), frames, started)


@contextmanager
def open_image(data: bytes, limits: ImageLimits = _DEFAULT_LIMITS) -> Iterator[ImageFile.ImageFile]:
    """``data`` opened by Pillow, after the checks that need no decoding (size,
    refused formats, the allow-list, pixels from the header); closed on exit.

    Any error inside the block (decoding, seeking to a frame, encoding) comes
    out as :class:`ImageError` with the message :func:`prepare_image` gives.
    """
    if not data:
        raise ImageError(MSG_EMPTY)
    if len(data) > limits.max_bytes:
        raise too_many_bytes(len(data), limits)
    _refuse_known_unsupported(data)
    try:
        try:
            im = Image.open(io.BytesIO(data), formats=_ALLOWED_FORMATS)
        except Image.DecompressionBombError:
            raise
        except Exception as exc:
            # UnidentifiedImageError, or an opener that accepted the first
            # bytes and then choked on the header (e.g. text starting "BM").
            if _looks_like_allowed_image(data):
                raise ImageError(MSG_DAMAGED) from exc
            raise ImageError(MSG_NOT_IMAGE) from exc
        with im:
            pixels = im.width * im.height
            if pixels > limits.max_pixels:
                raise too_many_pixels(pixels, limits.max_pixels)
            yield im
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise _bomb_error(exc, limits) from exc
    except (OSError, SyntaxError, EOFError, struct.error, zlib.error) as exc:
        # Truncated data, broken chunks, bad checksums, decoder errors.
        raise ImageError(MSG_DAMAGED) from exc
    except Exception as exc:  # anything else Pillow may throw at odd files
        raise ImageError(MSG_UNREADABLE) from exc


def image_orientation(im: Image.Image) -> Image.Transpose | None:
    """The transposition ``im``'s EXIF orientation asks for (None: none, or broken EXIF)."""
    return _orientation(im)


def frame_to_rgb(im: Image.Image, max_side: int, transpose: Image.Transpose | None = None) -> Image.Image:
    """The current (loaded) frame of ``im`` as a new RGB picture, its long side
    at most ``max_side``, turned by ``transpose``: a still's pixels (never
    ``im`` itself, so ``im`` may move on to another frame)."""
    rgb = _shrink_to_rgb(im, max_side)
    if transpose is not None:
        return rgb.transpose(transpose)
    return rgb.copy() if rgb is im else rgb


def to_prepared(
    rgb: Image.Image,
    limits: ImageLimits,
    *,
    source_format: str,
    source_size: tuple[int, int],
    source_bytes: int,
    frames: int,
    started: float,
) -> PreparedImage:
    """``rgb`` (already shrunk) encoded as the model's JPEG, as a :class:`PreparedImage`;
    ``started`` is the ``time.perf_counter()`` its preparation began at."""
    try:
        jpeg = _encode(rgb, limits)
    except Exception as exc:  # pragma: no cover - encoding an RGB picture does not fail
        raise ImageError(MSG_UNREADABLE) from exc
    return _prepared(jpeg, rgb.size, source_format, source_size, source_bytes, frames, started)


def _encode(rgb: Image.Image, limits: ImageLimits) -> bytes:
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=limits.jpeg_quality)
    return out.getvalue()


def _prepared(
    jpeg: bytes,
    size: tuple[int, int],
    source_format: str,
    source_size: tuple[int, int],
    source_bytes: int,
    frames: int,
    started: float,
) -> PreparedImage:
    prepared = PreparedImage(
        data_uri="data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii"),
        width=size[0],
        height=size[1],
        source_format=source_format,
        source_width=source_size[0],
        source_height=source_size[1],
        source_bytes=source_bytes,
        frames=frames,
        digest=hashlib.sha256(jpeg).hexdigest(),
        prepare_ms=(time.perf_counter() - started) * 1000,
    )
    log.debug(
        "prepared %s %dx%d (%d bytes, %d frame(s)) -> JPEG %dx%d (%d bytes) in %.1f ms",
        source_format,
        source_size[0],
        source_size[1],
        source_bytes,
        frames,
        prepared.width,
        prepared.height,
        len(jpeg),
        prepared.prepare_ms,
    )
    return prepared


def _decode(im: ImageFile.ImageFile, max_side: int) -> tuple[int, Image.Image]:
    """Frame count, and the first frame as RGB with its long side <= max_side.

    The result may be ``im`` itself (an RGB picture that needed nothing).
    """
    frames = int(getattr(im, "n_frames", 1) or 1)
    if im.tell() != 0:
        im.seek(0)
    if isinstance(im, JpegImageFile):  # also MPO
        target = fit(im.width, im.height, max_side)
        if target != im.size:
            # libjpeg decodes at 1/2, 1/4 or 1/8 scale, never below target.
            im.draft("RGB", target)
    im.load()
    # Scaling and orientation commute (fit is symmetric), so the picture is
    # shrunk first and turned when small.
    transpose = _orientation(im)
    rgb = _shrink_to_rgb(im, max_side)
    if transpose is not None:
        rgb = rgb.transpose(transpose)
    return frames, rgb


def decoded_pixels(data: bytes, limits: ImageLimits = _DEFAULT_LIMITS) -> int:
    """How many pixels :func:`prepare_image` will decode for ``data``, read
    from the header only (nothing is decoded: well under a millisecond).

    0 when the file will be refused before any decoding (empty, too many
    bytes, a refused format, over ``max_pixels``); for a JPEG, the reduced
    size libjpeg will decode at; ``limits.max_pixels`` when the header cannot
    be read (the preparation will then say what is wrong, at worst after
    decoding what it can).
    """
    if not data or len(data) > limits.max_bytes:
        return 0
    try:
        _refuse_known_unsupported(data)
    except ImageError:
        return 0
    try:
        with Image.open(io.BytesIO(data), formats=_ALLOWED_FORMATS) as im:
            width, height = im.size
            if width * height > limits.max_pixels:
                return 0
            if isinstance(im, JpegImageFile):
                target = fit(width, height, limits.max_side)
                if target != im.size:
                    im.draft("RGB", target)  # header only: picks the scale
                    width, height = im.size
            return width * height
    except Image.DecompressionBombError:
        return 0
    except Exception:
        return limits.max_pixels


def plain_prepare(data: bytes, max_side: int) -> bytes:
    """The naive way, for benchmarks only: full decode, convert, thumbnail, save."""
    with Image.open(io.BytesIO(data)) as im:
        rgb = im.convert("RGB")
    rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=90)
    return out.getvalue()
