"""The sizes of the built-in tiny model pairs (:class:`ModelShape`) and the shapes themselves.

A shape's :attr:`~ModelShape.digest` (its fields and the writers' format
versions) is part of its file names, so a changed shape or writer never
reuses stale files, and an unchanged one keeps its cached files.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

# Bump when the writer changes in a way that changes the bytes written.
FORMAT_VERSION = 1
# The same for the Gemma 3 and Qwen2.5-VL writers (bot.engine.tiny.families);
# it is part of their digests only, so the LLaVA file names never move with it.
FAMILIES_FORMAT_VERSION = 1

#: model families this package writes, and how their files and descriptions name them
FAMILIES = ("llava", "gemma3", "qwen2.5vl")
FAMILY_TITLES = {"llava": "LLaVA-1.5", "gemma3": "Gemma 3", "qwen2.5vl": "Qwen2.5-VL"}

# Gemma 3's projector averages each 4×4 square of patches into one token;
# Qwen2.5-VL's merger joins each 2×2 square (both libmtmd defaults).
GEMMA3_POOL = 4
QWEN_MERGE = 2


@dataclass(frozen=True)
class ModelShape:
    """The sizes of one tiny model pair.  ``name`` is used in file names.

    ``family`` picks the architecture: ``"llava"`` (LLaVA-1.5: ``llama`` text
    model, CLIP ``mlp`` projector), ``"gemma3"`` (``gemma3`` text model,
    SigLIP ``gemma3`` projector) or ``"qwen2.5vl"`` (``qwen2vl`` text model
    with M-RoPE, ``qwen2.5vl_merger`` projector); see
    :mod:`bot.engine.tiny.families` for the last two.  ``image_size`` is the
    encoder's fixed input side for LLaVA and Gemma 3, and only the nominal
    side (``clip.vision.image_size``) for Qwen2.5-VL, whose encoder takes
    pictures at their own resolution.
    """

    name: str
    family: str = "llava"
    vocab_extra_words: bool = True
    n_embd: int = 64  # text embedding_length (= projector output width)
    n_layer: int = 2
    n_head: int = 4
    n_ff: int = 128
    n_ctx_train: int = 4096
    image_size: int = 28  # CLIP input side, pixels
    patch_size: int = 14
    v_embd: int = 32  # CLIP hidden width
    v_ff: int = 48
    v_layer: int = 1
    v_head: int = 2
    seed: int = 0
    #: pad the text model's vocabulary to this many tokens (0: just the tokens it needs);
    #: the padding is never generated but its rows are in the output head, as in a real vocab
    vocab_size: int = 0

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "-_" for c in self.name):
            raise ValueError(f"shape name must be [A-Za-z0-9_-]+, got {self.name!r}")
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {self.family!r}")
        if self.n_embd % self.n_head or (self.n_embd // self.n_head) % 2:
            raise ValueError("n_embd must be a multiple of n_head with an even head size")
        if self.v_embd % self.v_head:
            raise ValueError("v_embd must be a multiple of v_head")
        if self.image_size % self.patch_size:
            raise ValueError("image_size must be a multiple of patch_size")
        if self.v_ff == self.v_embd:
            raise ValueError("v_ff must differ from v_embd (libmtmd would swap ffn_up/ffn_down)")
        if min(self.n_layer, self.v_layer, self.n_ff, self.n_ctx_train) < 1:
            raise ValueError("layer counts, n_ff and n_ctx_train must be positive")
        if self.family == "gemma3" and (self.image_size // self.patch_size) % GEMMA3_POOL:
            raise ValueError(f"gemma3: the patch grid (image_size / patch_size) must be a multiple of {GEMMA3_POOL}")
        if self.family == "qwen2.5vl":
            if self.image_size % (QWEN_MERGE * self.patch_size):
                raise ValueError(f"qwen2.5vl: image_size must be a multiple of {QWEN_MERGE} * patch_size")
            if (self.v_embd // self.v_head) % 4:
                raise ValueError("qwen2.5vl: the vision head size must be a multiple of 4 (M-RoPE sections)")
            if (self.n_embd // self.n_head) % 4:
                raise ValueError("qwen2.5vl: the text head size must be a multiple of 4 (M-RoPE sections)")
            if self.v_layer < 2:
                raise ValueError("qwen2.5vl: v_layer must be at least 2 (windowed and full attention)")
        if self.family != "llava" and not self.vocab_extra_words:
            raise ValueError(f"{self.family}: needs vocab_extra_words (its answers walk over the word pieces)")

    @property
    def n_image_tokens(self) -> int:
        """Embeddings (and so text-model positions) one image takes.

        For Qwen2.5-VL, whose count depends on the picture, the count for an
        ``image_size`` square one.
        """
        grid = self.image_size // self.patch_size
        if self.family == "gemma3":
            return (grid // GEMMA3_POOL) ** 2
        if self.family == "qwen2.5vl":
            return (grid // QWEN_MERGE) ** 2
        return grid**2

    @property
    def digest(self) -> str:
        """A short hash of the shape and writer version, used in file names."""
        fields = asdict(self)
        if not self.vocab_size:
            del fields["vocab_size"]  # the digests predate the field: keep them
        if self.family == "llava":
            del fields["family"]  # the LLaVA digests predate the field: keep them
            payload = {"v": FORMAT_VERSION, **fields}
        else:
            payload = {"v": FORMAT_VERSION, "fv": FAMILIES_FORMAT_VERSION, **fields}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]

    def file_names(self) -> tuple[str, str]:
        stem = f"{self.family}-{self.name}-{self.digest}"
        return f"{stem}.gguf", f"{stem}-mmproj.gguf"



TINY = ModelShape(name="tiny")

# LLaVA-1.5 token counts (336 px, 14 px patches: 576 image tokens per image)
# with widths small enough for a 2-core CPU to answer in under a second
# (a 55 MB text model and an 11 MB mmproj, mostly F16).
BENCH = ModelShape(
    name="bench",
    n_embd=512,
    n_layer=8,
    n_head=8,
    n_ff=1536,
    image_size=336,
    patch_size=14,
    v_embd=256,
    v_ff=1024,
    v_layer=6,
    v_head=4,
)

# BENCH's text model with a 32,000-token vocabulary like LLaVA-1.5's (Vicuna's):
# about 60 M parameters, the output head a quarter of them, so decoding is bound
# by reading the weights as on a real model: what batched decoding
# (model.parallel) amortises. Its encoder takes 112 px (64 image tokens): on a
# GPU CLIP costs milliseconds, while on this CPU a 576-token image would cost
# about a second that no batching can share (BENCHMARKS.md shows both).
# Used by part 8 of `llava-bot bench`.
BENCH_60M = ModelShape(**{**asdict(BENCH), "name": "bench60m", "vocab_size": 32_000, "image_size": 112})

# LLaVA-1.5-7B's widths (Vicuna-7B: 4096 wide, 32 layers, 11,008 feed-forward,
# 32,000 tokens; CLIP ViT-L/14 at 336 px: 1024 wide, 24 layers, 576 image
# tokens): a 13.5 GB F16 text model to quantize with llama.cpp, for measuring
# a GPU build the way a real 7B model would load it (random weights, so every
# answer runs to max_tokens).  Not for a 2-core CPU.
LLAVA_7B = ModelShape(
    name="llava7b",
    n_embd=4096,
    n_layer=32,
    n_head=32,
    n_ff=11008,
    image_size=336,
    patch_size=14,
    v_embd=1024,
    v_ff=4096,
    v_layer=24,
    v_head=16,
    vocab_size=32_000,
)

# Gemma 3 and Qwen2.5-VL at the same small widths (a 128-wide, 2-layer text
# model; a 2-layer, 32-wide vision tower).  Gemma 3 takes 112 px pictures in
# 14 px patches, an 8×8 grid pooled 4×4 into 4 image tokens; Qwen2.5-VL takes
# pictures at their own size, one token per 28×28 square.  Their answers stop
# on their own (see bot.engine.tiny.families).
GEMMA3_TINY = ModelShape(
    name="tiny",
    family="gemma3",
    n_embd=128,
    n_layer=2,
    n_head=4,
    n_ff=256,
    image_size=112,
    patch_size=14,
    v_embd=32,
    v_ff=48,
    v_layer=2,
    v_head=2,
)
QWEN25VL_TINY = ModelShape(
    name="tiny",
    family="qwen2.5vl",
    n_embd=128,
    n_layer=2,
    n_head=4,
    n_ff=256,
    image_size=112,
    patch_size=14,
    v_embd=32,
    v_ff=48,
    v_layer=2,
    v_head=2,
)

#: the small shape of each family
FAMILY_SHAPES = {"llava": TINY, "gemma3": GEMMA3_TINY, "qwen2.5vl": QWEN25VL_TINY}

# "tiny" and "bench" (LLaVA), "gemma3-tiny", "qwen2.5vl-tiny"
SHAPES = {(s.name if s.family == "llava" else f"{s.family}-{s.name}"): s for s in (TINY, BENCH, BENCH_60M, LLAVA_7B, GEMMA3_TINY, QWEN25VL_TINY)}
