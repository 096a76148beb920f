"""Tiny, random, LLaVA-1.5-shaped GGUF model pairs for tests and benchmarks.

(Gemma-3- and Qwen2.5-VL-shaped pairs too: a :class:`ModelShape` with
``family="gemma3"`` or ``"qwen2.5vl"``, written by
:mod:`bot.engine.tiny_families`, whose answers end on their own.  What
follows is about the LLaVA pair.)

A real LLaVA-1.5 pair is a ``llama`` text model plus a CLIP "mmproj" file,
several gigabytes together.  This module writes a pair with the same
*structure* but random weights and tiny widths, so the whole real stack
(llama-cpp-python, libllama, libmtmd) can be exercised in milliseconds
without downloading anything.  The answers are gibberish; the shapes, the
token accounting and the timings are real.

The files are written deterministically (fixed numpy seed, fixed key and
tensor order), so the same :class:`ModelShape` always produces the same bytes.

What libmtmd (``tools/mtmd/clip.cpp`` in llama.cpp) requires of the mmproj
file, learned from its loader:

* Metadata is read with *typed* getters that abort the whole process
  (``GGML_ASSERT``, not an exception) when a key has another type:
  ``clip.has_vision_encoder`` must be BOOL, ``clip.projector_type`` STRING,
  every ``clip.vision.*`` count and size UINT32,
  ``clip.vision.attention.layer_norm_epsilon`` FLOAT32, and
  ``clip.vision.image_mean``/``image_std`` ARRAY of FLOAT32 (at least three).
  Hence every key below is written with an explicit type, never with
  gguf's type guessing (which turns Python ints into INT32).
* ``clip.projector_type = "mlp"`` selects the LLaVA-1.5 graph: patch
  embedding (a conv kernel, ggml ``ne = [P, P, 3, hidden]``, i.e. numpy
  shape ``(hidden, 3, P, P)``), class embedding appended, learned position
  embeddings (``(S/P)^2 + 1`` rows), pre-LN, ``block_count - 1`` ViT blocks
  (LLaVA takes the second-to-last layer), then ``mm.0`` -> GELU -> ``mm.2``.
  One image becomes ``(S/P)^2`` embeddings of width ``mm.2``'s output,
  which must equal the text model's ``embedding_length``.
* For the "mlp" projector the loader swaps ``ffn_up``/``ffn_down`` when
  ``ffn_down``'s input width equals the hidden width (a fix for old
  conversions), so the ViT's feed-forward width must differ from its hidden
  width for the tensors to be used as written.

Weights use ggml's dimension order: numpy shape ``(out, in)`` for a weight
applied as ``W @ x``.  Everything is F32 except the large matrices of bigger
shapes, which are F16 to halve the file size.

The text model has its own small byte-level SentencePiece ("llama") vocab:
``<unk>``, ``<s>``, ``</s>``, the 256 byte tokens and, optionally, a few
dozen normal tokens (letters, common words and their prefixes, so the SPM
merge can actually reach the words).  The output head is shaped so that
greedy decoding never picks a control token or a byte that is not
printable ASCII: answers are valid UTF-8 and always run to ``max_tokens``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import gguf
import numpy as np

__all__ = [
    "BENCH",
    "BENCH_60M",
    "FAMILIES",
    "FAMILY_SHAPES",
    "GEMMA3_TINY",
    "LLAVA_7B",
    "QWEN25VL_TINY",
    "TINY",
    "ModelShape",
    "default_cache_dir",
    "ensure_model_pair",
    "write_model_pair",
]

log = logging.getLogger(__name__)

# Bump when the writer changes in a way that changes the bytes written.
_FORMAT_VERSION = 1
# The same for the Gemma 3 and Qwen2.5-VL writers (bot.engine.tiny_families);
# it is part of their digests only, so the LLaVA file names never move with it.
_FAMILIES_FORMAT_VERSION = 1

#: model families this module writes, and how their files and descriptions name them
FAMILIES = ("llava", "gemma3", "qwen2.5vl")
_FAMILY_TITLES = {"llava": "LLaVA-1.5", "gemma3": "Gemma 3", "qwen2.5vl": "Qwen2.5-VL"}

# OpenAI CLIP normalisation, as in the real LLaVA-1.5 mmproj.
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Matrices with at least this many elements are stored as F16.
_F16_MIN_ELEMENTS = 1 << 16
# Matrices with at least this many elements (only LLaVA-7B-sized shapes have
# them) are cut from one pool of random numbers instead of drawn afresh.
_POOL_MIN_ELEMENTS = 1 << 24

# Gemma 3's projector averages each 4×4 square of patches into one token;
# Qwen2.5-VL's merger joins each 2×2 square (both libmtmd defaults).
_GEMMA3_POOL = 4
_QWEN_MERGE = 2

# fmt: off
_WORDS = (
    "the", "a", "an", "is", "of", "and", "in", "on", "with", "this", "that",
    "it", "there", "image", "picture", "photo", "shows", "cat", "dog", "man",
    "woman", "car", "tree", "sky", "red", "blue", "green", "white", "black",
    "small", "large", "sitting", "standing", "table",
)
# fmt: on


@dataclass(frozen=True)
class ModelShape:
    """The sizes of one tiny model pair.  ``name`` is used in file names.

    ``family`` picks the architecture: ``"llava"`` (LLaVA-1.5: ``llama`` text
    model, CLIP ``mlp`` projector), ``"gemma3"`` (``gemma3`` text model,
    SigLIP ``gemma3`` projector) or ``"qwen2.5vl"`` (``qwen2vl`` text model
    with M-RoPE, ``qwen2.5vl_merger`` projector); see
    :mod:`bot.engine.tiny_families` for the last two.  ``image_size`` is the
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
        if self.family == "gemma3" and (self.image_size // self.patch_size) % _GEMMA3_POOL:
            raise ValueError(f"gemma3: the patch grid (image_size / patch_size) must be a multiple of {_GEMMA3_POOL}")
        if self.family == "qwen2.5vl":
            if self.image_size % (_QWEN_MERGE * self.patch_size):
                raise ValueError(f"qwen2.5vl: image_size must be a multiple of {_QWEN_MERGE} * patch_size")
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
            return (grid // _GEMMA3_POOL) ** 2
        if self.family == "qwen2.5vl":
            return (grid // _QWEN_MERGE) ** 2
        return grid**2

    @property
    def digest(self) -> str:
        """A short hash of the shape and writer version, used in file names."""
        fields = asdict(self)
        if not self.vocab_size:
            del fields["vocab_size"]  # the digests predate the field: keep them
        if self.family == "llava":
            del fields["family"]  # the LLaVA digests predate the field: keep them
            payload = {"v": _FORMAT_VERSION, **fields}
        else:
            payload = {"v": _FORMAT_VERSION, "fv": _FAMILIES_FORMAT_VERSION, **fields}
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
# on their own (see bot.engine.tiny_families).
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


def default_cache_dir() -> Path:
    """``$LLAVA_BOT_CACHE_DIR``, else ``$XDG_CACHE_HOME/llava-bot``, else ``~/.cache/llava-bot``."""
    explicit = os.environ.get("LLAVA_BOT_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "llava-bot"


def ensure_model_pair(shape: ModelShape = TINY, cache_dir: Path | None = None) -> tuple[Path, Path]:
    """Return ``(text_model_path, mmproj_path)``, writing them only if missing.

    Each file is written to a temporary file in the same directory and moved
    into place with :func:`os.replace`, so a crash never leaves a half file
    and concurrent callers at worst both write the same bytes.  The file
    names carry a hash of the shape, so a changed shape never reuses stale
    files.
    """
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    text_path, mmproj_path = (directory / n for n in shape.file_names())
    write_text, write_mmproj = _writers(shape)
    if not text_path.is_file():
        _write_atomically(text_path, lambda p: write_text(shape, p))
    if not mmproj_path.is_file():
        _write_atomically(mmproj_path, lambda p: write_mmproj(shape, p))
    return text_path, mmproj_path


def write_model_pair(shape: ModelShape, directory: Path) -> tuple[Path, Path]:
    """Write (or overwrite) the pair for ``shape`` into ``directory``."""
    directory = Path(directory)
    text_path, mmproj_path = (directory / n for n in shape.file_names())
    write_text, write_mmproj = _writers(shape)
    _write_atomically(text_path, lambda p: write_text(shape, p))
    _write_atomically(mmproj_path, lambda p: write_mmproj(shape, p))
    return text_path, mmproj_path


_Writer = Callable[[ModelShape, Path], None]


def _writers(shape: ModelShape) -> tuple[_Writer, _Writer]:
    """The (text model, mmproj) writers of the shape's family."""
    if shape.family == "llava":
        return _write_text_model, _write_mmproj
    # Imported here: tiny_families imports its helpers from this module.
    from bot.engine import tiny_families

    return tiny_families.WRITERS[shape.family]


# --------------------------------------------------------------------------
# writing


def _write_atomically(target: Path, write: Callable[[Path], None]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # A unique name that the writer creates itself, so the usual umask
    # applies (tempfile.mkstemp would leave the file readable by us only).
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.info("wrote %s (%d bytes)", target, target.stat().st_size)


class _Weights:
    """Deterministic random tensors, each drawn from its own named stream.

    Seeding per tensor name (rather than drawing from one stream in order)
    keeps every tensor stable even if others are added or reordered.
    """

    def __init__(self, seed: int, part: str) -> None:
        self._seed = seed
        self._part = part
        self._pool: np.ndarray | None = None

    def _rng(self, name: str) -> np.random.Generator:
        key = hashlib.sha256(f"{self._seed}/{self._part}/{name}".encode()).digest()
        return np.random.default_rng(int.from_bytes(key[:8], "little"))

    def normal(self, name: str, shape: tuple[int, ...], scale: float | None = None) -> np.ndarray:
        """Gaussian weights, by default scaled by 1/sqrt(fan_in)."""
        if scale is None:
            scale = 1.0 / np.sqrt(shape[-1])
        size = int(np.prod(shape))
        if size >= _POOL_MIN_ELEMENTS:
            return self._pooled(name, size).reshape(shape) * np.float32(scale)
        return (self._rng(name).standard_normal(shape) * scale).astype(np.float32)

    def _pooled(self, name: str, size: int) -> np.ndarray:
        """``size`` standard normals cut from one shared pool at a random offset.

        Drawing billions of fresh normals for a 7B-shaped model would take
        minutes; every shape smaller than that never gets here, so its bytes
        are what they always were.
        """
        if self._pool is None:
            self._pool = self._rng("pool").standard_normal(_POOL_MIN_ELEMENTS, dtype=np.float32)
        start = int(self._rng(name).integers(_POOL_MIN_ELEMENTS))
        return np.resize(np.roll(self._pool, -start), size)

    def norm(self, name: str, width: int) -> np.ndarray:
        """Layer-norm gains close to one."""
        return (1.0 + 0.1 * self._rng(name).standard_normal(width)).astype(np.float32)

    def bias(self, name: str, width: int) -> np.ndarray:
        return (0.02 * self._rng(name).standard_normal(width)).astype(np.float32)

    def permutation(self, name: str, n: int) -> np.ndarray:
        """A random order of ``range(n)``."""
        return self._rng(name).permutation(n)


def _store(array: np.ndarray) -> np.ndarray:
    """Large matrices as F16, everything else (vectors, norms) as F32."""
    if array.ndim >= 2 and array.size >= _F16_MIN_ELEMENTS:
        return array.astype(np.float16)
    return array


def _new_writer(path: Path, arch: str, shape: ModelShape, what: str) -> gguf.GGUFWriter:
    writer = gguf.GGUFWriter(path, arch)
    writer.add_name(f"llava-bot {shape.name} {what} (random weights)")
    writer.add_description(
        f"Random tiny {_FAMILY_TITLES[shape.family]}-shaped test model written by bot.engine.tiny; "
        f"shape {shape.name} {shape.digest}"
    )
    return writer


def _finish(writer: gguf.GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# ---- vocab --------------------------------------------------------------


@dataclass(frozen=True)
class _Vocab:
    tokens: list[str]
    scores: list[float]
    types: list[int]

    def __len__(self) -> int:
        return len(self.tokens)


def _word_pieces() -> Iterator[str]:
    """Normal tokens: "▁", lower-case letters, then each word with its prefixes.

    SentencePiece merges adjacent pieces only into pieces that exist, so a
    word is reachable from its letters only if every prefix is a token too.
    """
    yield "\u2581"
    yield from "abcdefghijklmnopqrstuvwxyz"
    for word in _WORDS:
        piece = "\u2581" + word
        for end in range(2, len(piece) + 1):
            yield piece[:end]


_LLAMA_HEAD = (("<unk>", gguf.TokenType.UNKNOWN), ("<s>", gguf.TokenType.CONTROL), ("</s>", gguf.TokenType.CONTROL))


def _build_vocab(
    with_words: bool,
    head: Sequence[tuple[str, gguf.TokenType]] = _LLAMA_HEAD,
    controls: Sequence[str] = (),
) -> _Vocab:
    """``head`` (the special tokens before the bytes), the 256 byte tokens,
    the word pieces if ``with_words``, then ``controls`` as CONTROL tokens."""
    token_type = gguf.TokenType
    tokens = [text for text, _ in head]
    types = [typ for _, typ in head]
    scores = [0.0] * len(tokens)
    for byte in range(256):
        tokens.append(f"<0x{byte:02X}>")
        types.append(token_type.BYTE)
        scores.append(0.0)
    if with_words:
        seen = set(tokens)
        for piece in _word_pieces():
            if piece in seen:
                continue
            seen.add(piece)
            tokens.append(piece)
            types.append(token_type.NORMAL)
            # Longer pieces score higher, so SPM merges prefer them.
            scores.append(-100.0 + len(piece))
    for text in controls:
        tokens.append(text)
        types.append(token_type.CONTROL)
        scores.append(0.0)
    return _Vocab(tokens, scores, [int(t) for t in types])


def _pad_vocab(vocab: _Vocab, size: int) -> _Vocab:
    """``vocab`` with UNUSED tokens appended up to ``size`` tokens."""
    extra = max(0, size - len(vocab))
    return _Vocab(
        vocab.tokens + [f"<unused{i}>" for i in range(extra)],
        vocab.scores + [0.0] * extra,
        vocab.types + [int(gguf.TokenType.UNUSED)] * extra,
    )


def _output_row_gains(vocab: _Vocab) -> np.ndarray:
    """Per-token gains for the output head.

    Control tokens and bytes outside printable ASCII get zero rows (logit
    0, which random positive logits always beat under greedy decoding), so
    answers never stop early, never emit ``<s>``/``</s>`` and never split
    a character into invalid UTF-8.  Word pieces are boosted over bytes so
    the gibberish looks like words.
    """
    gains = np.zeros(len(vocab), dtype=np.float32)
    for i, (tok, typ) in enumerate(zip(vocab.tokens, vocab.types)):
        if typ == gguf.TokenType.BYTE:
            byte = int(tok[3:5], 16)
            gains[i] = 1.0 if 0x20 <= byte < 0x7F else 0.0
        elif typ == gguf.TokenType.NORMAL:
            gains[i] = 2.0
    return gains


# ---- text model ---------------------------------------------------------


def _write_text_model(shape: ModelShape, path: Path) -> None:
    vocab = _pad_vocab(_build_vocab(shape.vocab_extra_words), shape.vocab_size)
    head_dim = shape.n_embd // shape.n_head
    w = _Weights(shape.seed, "text")
    writer = _new_writer(path, "llama", shape, "text model")

    writer.add_context_length(shape.n_ctx_train)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layer)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(vocab))
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)

    writer.add_tokenizer_model("llama")
    writer.add_token_list(vocab.tokens)
    writer.add_token_scores(vocab.scores)
    writer.add_token_types(vocab.types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)

    d, ff, nv = shape.n_embd, shape.n_ff, len(vocab)
    writer.add_tensor("token_embd.weight", _store(w.normal("token_embd", (nv, d), scale=1.0)))
    for i in range(shape.n_layer):
        blk = f"blk.{i}"
        writer.add_tensor(f"{blk}.attn_norm.weight", w.norm(f"{blk}.attn_norm", d))
        for part in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"{blk}.{part}.weight", _store(w.normal(f"{blk}.{part}", (d, d))))
        writer.add_tensor(f"{blk}.ffn_norm.weight", w.norm(f"{blk}.ffn_norm", d))
        writer.add_tensor(f"{blk}.ffn_gate.weight", _store(w.normal(f"{blk}.ffn_gate", (ff, d))))
        writer.add_tensor(f"{blk}.ffn_up.weight", _store(w.normal(f"{blk}.ffn_up", (ff, d))))
        writer.add_tensor(f"{blk}.ffn_down.weight", _store(w.normal(f"{blk}.ffn_down", (d, ff))))
    writer.add_tensor("output_norm.weight", w.norm("output_norm", d))
    head = w.normal("output", (nv, d), scale=4.0 / np.sqrt(d)) * _output_row_gains(vocab)[:, None]
    writer.add_tensor("output.weight", _store(head))
    _finish(writer)


# ---- CLIP mmproj --------------------------------------------------------


def _vit_parts(h: int, ff: int) -> tuple[tuple[str, int, int], ...]:
    """(name, out width, in width) of a ViT block's matrices."""
    return (
        ("attn_q", h, h),
        ("attn_k", h, h),
        ("attn_v", h, h),
        ("attn_out", h, h),
        ("ffn_up", ff, h),
        ("ffn_down", h, ff),
    )


def _add_vit_blocks(writer: gguf.GGUFWriter, w: _Weights, n_layer: int, h: int, ff: int) -> None:
    """CLIP/SigLIP ViT blocks: biased matrices, then the two layer norms with bias."""
    for i in range(n_layer):
        blk = f"v.blk.{i}"
        for part, out_w, in_w in _vit_parts(h, ff):
            writer.add_tensor(f"{blk}.{part}.weight", _store(w.normal(f"{blk}.{part}", (out_w, in_w))))
            writer.add_tensor(f"{blk}.{part}.bias", w.bias(f"{blk}.{part}.bias", out_w))
        for part in ("ln1", "ln2"):
            writer.add_tensor(f"{blk}.{part}.weight", w.norm(f"{blk}.{part}", h))
            writer.add_tensor(f"{blk}.{part}.bias", w.bias(f"{blk}.{part}.bias", h))


def _add_clip_header(writer: gguf.GGUFWriter, shape: ModelShape, projector: str, eps: float, *, llava: bool = False) -> None:
    """The projector type and the vision encoder's sizes, in the order every mmproj writer uses.

    Typed explicitly: libmtmd aborts the process on a type mismatch.
    """
    writer.add_string("clip.projector_type", projector)
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_bool("clip.has_text_encoder", False)
    if llava:
        writer.add_bool("clip.has_llava_projector", True)
    writer.add_uint32(gguf.Keys.General.FILE_TYPE, int(gguf.LlamaFileType.MOSTLY_F16))
    writer.add_uint32("clip.vision.image_size", shape.image_size)
    writer.add_uint32("clip.vision.patch_size", shape.patch_size)
    writer.add_uint32("clip.vision.embedding_length", shape.v_embd)
    writer.add_uint32("clip.vision.feed_forward_length", shape.v_ff)
    writer.add_uint32("clip.vision.block_count", shape.v_layer)
    writer.add_uint32("clip.vision.projection_dim", shape.n_embd)
    writer.add_uint32("clip.vision.attention.head_count", shape.v_head)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", eps)


def _write_mmproj(shape: ModelShape, path: Path) -> None:
    w = _Weights(shape.seed, "clip")
    writer = _new_writer(path, "clip", shape, "mmproj")

    _add_clip_header(writer, shape, "mlp", 1e-5, llava=True)
    writer.add_key_value(
        "clip.vision.image_mean",
        [float(x) for x in _CLIP_MEAN],
        gguf.GGUFValueType.ARRAY,
        sub_type=gguf.GGUFValueType.FLOAT32,
    )
    writer.add_key_value(
        "clip.vision.image_std",
        [float(x) for x in _CLIP_STD],
        gguf.GGUFValueType.ARRAY,
        sub_type=gguf.GGUFValueType.FLOAT32,
    )
    writer.add_bool("clip.use_gelu", False)  # LLaVA-1.5's CLIP uses quick GELU

    h, ff, p = shape.v_embd, shape.v_ff, shape.patch_size
    n_pos = shape.n_image_tokens + 1  # + class embedding
    writer.add_tensor("v.patch_embd.weight", _store(w.normal("patch_embd", (h, 3, p, p), scale=1.0 / p)))
    writer.add_tensor("v.class_embd", w.normal("class_embd", (h,), scale=0.1))
    writer.add_tensor("v.position_embd.weight", _store(w.normal("position_embd", (n_pos, h), scale=0.1)))
    writer.add_tensor("v.pre_ln.weight", w.norm("pre_ln.weight", h))
    writer.add_tensor("v.pre_ln.bias", w.bias("pre_ln.bias", h))
    _add_vit_blocks(writer, w, shape.v_layer, h, ff)
    # No post-LN: LLaVA-1.5 takes the second-to-last layer, before it.
    d = shape.n_embd
    writer.add_tensor("mm.0.weight", _store(w.normal("mm.0", (d, h))))
    writer.add_tensor("mm.0.bias", w.bias("mm.0.bias", d))
    writer.add_tensor("mm.2.weight", _store(w.normal("mm.2", (d, d))))
    writer.add_tensor("mm.2.bias", w.bias("mm.2.bias", d))
    _finish(writer)


# --------------------------------------------------------------------------

# "tiny" and "bench" (LLaVA), "gemma3-tiny", "qwen2.5vl-tiny"
_SHAPES = {(s.name if s.family == "llava" else f"{s.family}-{s.name}"): s for s in (TINY, BENCH, BENCH_60M, LLAVA_7B, GEMMA3_TINY, QWEN25VL_TINY)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bot.engine.tiny",
        description="Write (if missing) a tiny random LLaVA-1.5-, Gemma-3- or Qwen2.5-VL-shaped model pair and print its paths.",
    )
    parser.add_argument("--shape", choices=sorted(_SHAPES), default=TINY.name)
    parser.add_argument("--dir", type=Path, default=None, help=f"cache folder (default {default_cache_dir()})")
    args = parser.parse_args(argv)
    text_path, mmproj_path = ensure_model_pair(_SHAPES[args.shape], args.dir)
    print(text_path)
    print(mmproj_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
