"""What a vision projector ("mmproj") file says about the images it takes.

Read from the GGUF's metadata with ``gguf`` (only the header is parsed; the
tensors stay on disk), before the model is loaded, so the image preparation
can size pictures for the model:

* fixed-size encoders (LLaVA-1.5's CLIP at 336 px, Gemma 3's SigLIP at
  896 px) resize every picture to their own square: a larger picture only
  costs decoding time;
* tiling encoders (LLaVA-1.6's grid pinpoints, MiniCPM-V's slices, SmolVLM's
  splits) cut a larger picture into several tiles of that size;
* dynamic-resolution encoders (Qwen2-VL, Qwen2.5-VL, Pixtral) turn every
  ``patch × merge`` square of the picture into one token: a 1920×1080 photo
  becomes about 2,700 tokens on Qwen2.5-VL, so they get a token budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: projector types whose encoder takes pictures at their own resolution
DYNAMIC_PROJECTORS = frozenset(
    {"qwen2vl_merger", "qwen2.5vl_merger", "qwen3vl_merger", "pixtral", "kimivl", "lightonocr", "glm4v"}
)
#: projector types that tile a large picture into several encoder-sized pieces
TILING_PROJECTORS = frozenset({"resampler", "idefics3", "llama4", "internvl", "lfm2"})

#: the long side sent to tiling encoders (and the ceiling for the others)
TILED_SIDE = 1344
#: the smallest long side sent to fixed-size encoders
FIXED_MIN_SIDE = 672
#: image tokens a dynamic-resolution picture may take when ``images.max_image_tokens`` is unset
DEFAULT_IMAGE_TOKENS = 1024


@dataclass(frozen=True, slots=True)
class Projector:
    """The image side of a projector file."""

    kind: str  # clip.projector_type, e.g. "mlp" (LLaVA), "gemma3", "qwen2.5vl_merger"
    image_size: int = 336
    patch_size: int = 14
    #: LLaVA-1.6's list of tile grids (present only in LLaVA-1.6-style files)
    grid_pinpoints: bool = False
    #: patches merged into one token (2×2 for Qwen2-VL: ``merge`` = 2)
    merge: int = 2

    @property
    def dynamic(self) -> bool:
        return self.kind in DYNAMIC_PROJECTORS

    @property
    def tiles(self) -> bool:
        return self.grid_pinpoints or self.kind in TILING_PROJECTORS

    def max_side(self, image_tokens: int | None = None) -> int:
        """The long side images are prepared to when ``images.max_side`` is unset.

        Fixed-size encoders get twice their input size (detail for their own
        resize, a quarter of the decoding of 1344 px), from 672 to 1344; tiling
        encoders get 1344; dynamic-resolution encoders the side of a square
        that fits the token budget (1024 tokens of 28 px on Qwen2.5-VL: 896 px).
        """
        if self.dynamic:
            budget = image_tokens or DEFAULT_IMAGE_TOKENS
            return max(self.patch_size * self.merge, int(math.isqrt(budget)) * self.patch_size * self.merge)
        if self.tiles:
            return TILED_SIDE
        return min(max(2 * self.image_size, FIXED_MIN_SIDE), TILED_SIDE)


def _value(field: Any) -> Any:
    """A scalar or string metadata value from a ``gguf.ReaderField``."""
    import gguf

    if not field.types:
        return None
    kind = field.types[0]
    if kind == gguf.GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8", "replace")
    if kind == gguf.GGUFValueType.ARRAY:
        return [field.parts[i].tolist() for i in field.data]
    return field.parts[field.data[0]].tolist()[0]


def read_metadata(path: str | Path, keys: tuple[str, ...]) -> dict[str, Any]:
    """The named metadata values of a GGUF file (absent keys are left out)."""
    import gguf

    reader = gguf.GGUFReader(str(path), "r")
    found: dict[str, Any] = {}
    for key in keys:
        field = reader.get_field(key)
        if field is not None:
            found[key] = _value(field)
    return found


def read_projector(path: str | Path) -> Projector:
    """The :class:`Projector` an mmproj file describes (defaults for keys it lacks)."""
    meta = read_metadata(
        path,
        (
            "clip.projector_type",
            "clip.vision.projector_type",
            "clip.vision.image_size",
            "clip.vision.patch_size",
            "clip.vision.image_grid_pinpoints",
            "clip.vision.spatial_merge_size",
        ),
    )
    kind = meta.get("clip.vision.projector_type") or meta.get("clip.projector_type") or "mlp"
    return Projector(
        kind=str(kind),
        image_size=int(meta.get("clip.vision.image_size") or 336),
        patch_size=int(meta.get("clip.vision.patch_size") or 14),
        grid_pinpoints=bool(meta.get("clip.vision.image_grid_pinpoints")),
        merge=int(meta.get("clip.vision.spatial_merge_size") or 2),
    )
