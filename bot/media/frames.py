"""Bytes in, :class:`~bot.media.base.PreparedMedia` out: a still, an animation or a clip.

What a file is comes from its content (:func:`bot.images.sniff_container`,
then Pillow's own detection), never from its name or declared type:

* a video or sound container (ISO-BMFF ``ftyp`` brands such as isom, mp41,
  mp42, avc1, M4V, ``qt  ``; the EBML header of WebM / Matroska; Ogg, AVI,
  FLV, ...) goes to :mod:`bot.media.video` (PyAV); HEIC / AVIF, which share
  the ISO-BMFF box, stay images (refused, or taken by Pillow as today);
* everything else goes to Pillow: an animated GIF / WebP / APNG to
  :mod:`bot.media.animation`, a still to :func:`bot.images.prepare_image`
  (the very same picture ``prepare_image`` makes).

Like :mod:`bot.images`, everything here is synchronous and raises
:class:`~bot.images.ImageError` (a line fit for the user) for any bad input.
"""

from __future__ import annotations

import io

from PIL import Image

from bot.images import ImageLimits, decoded_pixels, sniff_container

from .animation import ANIMATED_FORMATS, animation_frames, prepare_animation
from .base import MediaLimits, PreparedMedia
from .video import prepare_video, video_pixels

__all__ = ["media_pixels", "prepare_media"]

_DEFAULT_LIMITS = ImageLimits()
_DEFAULT_MEDIA = MediaLimits()


def prepare_media(data: bytes, limits: ImageLimits = _DEFAULT_LIMITS, media: MediaLimits = _DEFAULT_MEDIA) -> PreparedMedia:
    """Prepare whatever ``data`` is: a still as :func:`~bot.images.prepare_image`
    does (``images.max_bytes``), an animation's sampled frames, a clip's
    (``images.max_video_bytes``, ``max_video_seconds``); see the module docstring."""
    container = sniff_container(data)
    if container is not None:
        return prepare_video(data, container, limits, media)
    return prepare_animation(data, limits, media)


def media_pixels(data: bytes, limits: ImageLimits = _DEFAULT_LIMITS, media: MediaLimits = _DEFAULT_MEDIA) -> int:
    """Decoded pixels :func:`prepare_media` will hold for ``data``, from headers
    only (what :class:`~bot.image_pool.ImagePool` budgets): the frames it samples
    times a frame's pixels; a still's :func:`~bot.images.decoded_pixels`.

    For a video this opens the container (its header, no frame is decoded: a
    millisecond or a few), so callers on an event loop run it in a thread.
    """
    container = sniff_container(data)
    if container is not None:
        return video_pixels(data, container, limits, media)
    pixels = decoded_pixels(data, limits)
    if pixels <= 0 or media.frames == 1:
        return pixels
    try:
        with Image.open(io.BytesIO(data), formats=tuple(ANIMATED_FORMATS)) as im:
            n_frames = int(getattr(im, "n_frames", 1) or 1)
    except Exception:  # not an animation (or a broken one): a still's cost
        return pixels
    return pixels * animation_frames(n_frames, media) if n_frames > 1 else pixels
