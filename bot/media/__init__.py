"""Stills, animations and video, ready for the model; no Discord here.

:func:`prepare_media` takes the bytes of any file somebody posted and returns a
:class:`PreparedMedia`: one prepared picture for a still (exactly what
:func:`bot.images.prepare_image` makes), a few frames sampled evenly over the
time of an animated GIF / WebP / APNG or of a video clip (PyAV), or those
frames as one contact sheet (``frames_as = "grid"``).  See
:mod:`bot.media.frames` for how a file is recognised, :mod:`bot.media.video`
for how a clip is sampled without decoding all of it.
"""

from __future__ import annotations

from .base import MSG_NO_PICTURE, MSG_VIDEO_UNREADABLE, MediaKind, MediaLimits, PreparedMedia
from .frames import media_pixels, prepare_media

__all__ = [
    "MSG_NO_PICTURE",
    "MSG_VIDEO_UNREADABLE",
    "MediaKind",
    "MediaLimits",
    "PreparedMedia",
    "media_pixels",
    "prepare_media",
]
