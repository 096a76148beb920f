"""What every kind of media shares: the result, the settings, the messages, the grid.

:class:`PreparedMedia` is what :func:`bot.media.prepare_media` returns: one
prepared picture for a still, or several (or one contact sheet) for an
animation or a clip.  :class:`FrameSink` turns sampled frames into those
pictures, one at a time, so that only small pictures are ever kept.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Literal

from PIL import Image

from bot.i18n import N_
from bot.images import (
    MSG_DAMAGED,
    ImageError,
    ImageLimits,
    PreparedImage,
    fit,
    frame_to_rgb,
    to_prepared,
)

__all__ = [
    "MSG_NO_PICTURE",
    "MSG_VIDEO_UNREADABLE",
    "FrameSink",
    "MediaKind",
    "MediaLimits",
    "PreparedMedia",
    "grid_layout",
    "sample_times",
    "shown_size",
]

_MB = 1024 * 1024

MediaKind = Literal["image", "animation", "video"]
FramesAs = Literal["images", "grid"]

# User-facing messages (str(ImageError)).
MSG_NO_PICTURE = N_("that file has no picture, only sound")
MSG_VIDEO_UNREADABLE = N_("that video could not be read")

#: what the model was shown of a moving picture (under the footer), by kind, known length and frames
SEEN = {
    ("video", True, False): N_("{frames} frames of a {seconds} s clip"),
    ("video", True, True): N_("{frames} frame of a {seconds} s clip"),
    ("video", False, False): N_("{frames} frames of a clip"),
    ("video", False, True): N_("{frames} frame of a clip"),
    ("animation", True, False): N_("{frames} frames of a {seconds} s animation"),
    ("animation", True, True): N_("{frames} frame of a {seconds} s animation"),
    ("animation", False, False): N_("{frames} frames of an animation"),
    ("animation", False, True): N_("{frames} frame of an animation"),
}
AS_GRID = N_("{seen}, as one grid")

#: white space between the pictures of a contact sheet
GRID_GAP = 4
_WHITE = (255, 255, 255)


@dataclass(frozen=True, slots=True)
class MediaLimits:
    """How many frames an animation or a clip gives, and how much video is taken."""

    frames: int = 4  # sampled evenly over the duration; 1: the first frame only
    frames_as: FramesAs = "images"  # "grid": the frames as one contact sheet
    max_video_bytes: int = 50 * _MB
    max_video_seconds: float = 60.0

    def __post_init__(self) -> None:
        if not 1 <= self.frames <= 16:
            raise ValueError("frames must be between 1 and 16")
        if self.frames_as not in ("images", "grid"):
            raise ValueError("frames_as must be 'images' or 'grid'")
        if self.max_video_bytes < 1:
            raise ValueError("max_video_bytes must be at least 1")
        if not self.max_video_seconds > 0:
            raise ValueError("max_video_seconds must be above 0")

    @classmethod
    def from_settings(cls, images: Any) -> MediaLimits:
        """From an ``[images]`` settings section; absent fields take the defaults."""
        default = cls()
        return cls(
            frames=int(getattr(images, "frames", default.frames)),
            frames_as=getattr(images, "frames_as", default.frames_as),
            max_video_bytes=int(getattr(images, "max_video_bytes", default.max_video_bytes)),
            max_video_seconds=float(getattr(images, "max_video_seconds", default.max_video_seconds)),
        )


@dataclass(frozen=True, slots=True)
class PreparedMedia:
    """A still, an animation or a clip, ready for the model."""

    images: tuple[PreparedImage, ...]  # 1 for a still; the sampled frames, or 1 contact sheet
    kind: MediaKind
    frames: int  # frames sampled (1 for a still)
    duration_s: float | None  # of the animation or clip (None: a still, or no timing)
    grid: bool = False  # the frames are one contact sheet (images has one picture)
    prepare_ms: float = 0.0

    @classmethod
    def still(cls, image: PreparedImage) -> PreparedMedia:
        return cls(images=(image,), kind="image", frames=1, duration_s=None, prepare_ms=image.prepare_ms)

    def describe(self) -> str:
        """What the model is shown, for the prompt or a footer: "" for a still,
        ``"4 frames of a 12.3 s clip"``, ``"4 frames of a 2.0 s animation, as one grid"``."""
        if self.kind == "image":
            return ""
        template = SEEN[(self.kind, self.duration_s is not None, self.frames == 1)]
        seconds = f"{self.duration_s:.1f}" if self.duration_s is not None else ""
        text = template.format(frames=self.frames, seconds=seconds)
        return AS_GRID.format(seen=text) if self.grid else text


def sample_times(duration: float, count: int) -> list[float]:
    """``count`` times evenly spread over ``[0, duration)``, starting at 0."""
    return [duration * i / count for i in range(count)]


_TURNED = frozenset(
    {Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270, Image.Transpose.TRANSPOSE, Image.Transpose.TRANSVERSE}
)


def shown_size(size: tuple[int, int], transpose: Image.Transpose | None) -> tuple[int, int]:
    """``size`` once turned by ``transpose`` (width and height swap for quarter turns)."""
    return (size[1], size[0]) if transpose in _TURNED else size


def grid_layout(count: int, size: tuple[int, int], max_side: int, gap: int = GRID_GAP) -> tuple[int, int]:
    """Columns, and the long side of one cell, for a sheet of ``count`` pictures of
    ``size`` whose long side is at most ``max_side``: the layout with the largest
    cells (never larger than the pictures themselves)."""
    width, height = size
    best: tuple[float, float] | None = None  # largest cells; then a squarish sheet, few empty cells
    best_cols = 1
    for cols in range(1, count + 1):
        rows = math.ceil(count / cols)
        room_w = max_side - gap * (cols - 1)
        room_h = max_side - gap * (rows - 1)
        if room_w < cols or room_h < rows:
            continue
        scale = min(1.0, room_w / (cols * width), room_h / (rows * height))
        sheet_w, sheet_h = cols * width, rows * height
        badness = max(sheet_w / sheet_h, sheet_h / sheet_w) + 0.5 * (cols * rows - count)
        key = (round(scale, 6), -badness)
        if best is None or key > best:
            best, best_cols = key, cols
    if best is None:  # max_side too small for gaps: one column of tiny cells
        return 1, 1
    cols = best_cols
    rows = math.ceil(count / cols)
    cell = max(1, math.floor(best[0] * max(width, height)))
    while cell > 1:  # the short side is rounded: make sure the sheet fits
        cw, ch = fit(width, height, cell)
        if cols * cw + gap * (cols - 1) <= max_side and rows * ch + gap * (rows - 1) <= max_side:
            break
        cell -= 1
    return cols, cell


def compose_grid(cells: list[Image.Image], cols: int, gap: int = GRID_GAP) -> Image.Image:
    """The pictures (all one size) in rows of ``cols``, on white."""
    cols = max(1, min(cols, len(cells)))
    rows = math.ceil(len(cells) / cols)
    cw, ch = cells[0].size
    sheet = Image.new("RGB", (cols * cw + gap * (cols - 1), rows * ch + gap * (rows - 1)), _WHITE)
    for i, cell in enumerate(cells):
        row, col = divmod(i, cols)
        sheet.paste(cell, (col * (cw + gap), row * (ch + gap)))
    return sheet


class FrameSink:
    """Turns sampled frames into prepared pictures as they come.

    ``size`` is the frames' size as shown (after any rotation); ``count`` how
    many frames are expected (for the grid's layout).  With ``frames_as =
    "images"`` each frame is encoded at once and only its JPEG is kept; with
    ``"grid"`` each is shrunk straight to a cell of the sheet.
    """

    def __init__(
        self,
        limits: ImageLimits,
        media: MediaLimits,
        *,
        size: tuple[int, int],
        count: int,
        source_format: str,
        source_size: tuple[int, int],
        source_bytes: int,
        source_frames: int,
        started: float | None = None,
    ) -> None:
        self.limits = limits
        self.grid = media.frames_as == "grid" and count > 1
        self._format = source_format
        self._source_size = source_size
        self._source_bytes = source_bytes
        self._source_frames = max(1, source_frames)
        self._started = time.perf_counter() if started is None else started
        self._images: list[PreparedImage] = []
        self._cells: list[Image.Image] = []
        if self.grid:
            self._cols, self.side = grid_layout(count, size, limits.max_side)
        else:
            self._cols, self.side = 1, limits.max_side

    @property
    def count(self) -> int:
        return len(self._cells) if self.grid else len(self._images)

    def add(self, frame: Image.Image, transpose: Image.Transpose | None = None) -> None:
        """One frame (loaded, any mode, full size): shrunk to :attr:`side` as a still is."""
        started = time.perf_counter()
        rgb = frame_to_rgb(frame, self.side, transpose)
        if self.grid:
            self._cells.append(rgb)
        else:
            self._images.append(self._prepared(rgb, started))

    def _prepared(self, rgb: Image.Image, started: float) -> PreparedImage:
        return to_prepared(
            rgb,
            self.limits,
            source_format=self._format,
            source_size=self._source_size,
            source_bytes=self._source_bytes,
            frames=self._source_frames,
            started=started,
        )

    def finish(self, kind: MediaKind, duration_s: float | None) -> PreparedMedia:
        """The pictures made so far, as the result (a sheet of one frame is that frame)."""
        frames = len(self._cells) if self.grid else len(self._images)
        if self.grid and self._cells:
            sheet = compose_grid(self._cells, self._cols)
            self._images = [self._prepared(sheet, self._started)]
        if not self._images:
            raise ImageError(MSG_VIDEO_UNREADABLE if kind == "video" else MSG_DAMAGED)
        return PreparedMedia(
            images=tuple(self._images),
            kind=kind,
            frames=frames,
            duration_s=duration_s,
            grid=self.grid and frames > 1,
            prepare_ms=(time.perf_counter() - self._started) * 1000,
        )
