"""What the tiny model writers share (:mod:`bot.engine.tiny.llava`, :mod:`bot.engine.tiny.families`).

Weights use ggml's dimension order: numpy shape ``(out, in)`` for a weight
applied as ``W @ x``.  Everything is F32 except the large matrices of bigger
shapes, which are F16 to halve the file size (:func:`store`).  Every tensor
is drawn from its own seeded stream (:class:`Weights`), so the same shape
always produces the same bytes.

The vocabularies are small byte-level SentencePiece ("llama") ones: special
tokens, the 256 byte tokens and, optionally, a few dozen normal tokens
(letters, common words and their prefixes, so the SPM merge can actually
reach the words): :func:`build_vocab`.

Anything here changes the bytes written: bump
:data:`bot.engine.tiny.shapes.FORMAT_VERSION` (and
``FAMILIES_FORMAT_VERSION``) with it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from bot.engine.tiny.shapes import FAMILY_TITLES, ModelShape

# OpenAI CLIP normalisation, as in the real LLaVA-1.5 mmproj.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Matrices with at least this many elements are stored as F16.
F16_MIN_ELEMENTS = 1 << 16
# Matrices with at least this many elements (only LLaVA-7B-sized shapes have
# them) are cut from one pool of random numbers instead of drawn afresh.
POOL_MIN_ELEMENTS = 1 << 24

# fmt: off
WORDS = (
    "the", "a", "an", "is", "of", "and", "in", "on", "with", "this", "that",
    "it", "there", "image", "picture", "photo", "shows", "cat", "dog", "man",
    "woman", "car", "tree", "sky", "red", "blue", "green", "white", "black",
    "small", "large", "sitting", "standing", "table",
)
# fmt: on


class Weights:
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
        if size >= POOL_MIN_ELEMENTS:
            return self._pooled(name, size).reshape(shape) * np.float32(scale)
        return (self._rng(name).standard_normal(shape) * scale).astype(np.float32)

    def _pooled(self, name: str, size: int) -> np.ndarray:
        """``size`` standard normals cut from one shared pool at a random offset.

        Drawing billions of fresh normals for a 7B-shaped model would take
        minutes; every shape smaller than that never gets here, so its bytes
        are what they always were.
        """
        if self._pool is None:
            self._pool = self._rng("pool").standard_normal(POOL_MIN_ELEMENTS, dtype=np.float32)
        start = int(self._rng(name).integers(POOL_MIN_ELEMENTS))
        return np.resize(np.roll(self._pool, -start), size)

    def norm(self, name: str, width: int) -> np.ndarray:
        """Layer-norm gains close to one."""
        return (1.0 + 0.1 * self._rng(name).standard_normal(width)).astype(np.float32)

    def bias(self, name: str, width: int) -> np.ndarray:
        return (0.02 * self._rng(name).standard_normal(width)).astype(np.float32)

    def permutation(self, name: str, n: int) -> np.ndarray:
        """A random order of ``range(n)``."""
        return self._rng(name).permutation(n)


def store(array: np.ndarray) -> np.ndarray:
    """Large matrices as F16, everything else (vectors, norms) as F32."""
    if array.ndim >= 2 and array.size >= F16_MIN_ELEMENTS:
        return array.astype(np.float16)
    return array


def new_writer(path: Path, arch: str, shape: ModelShape, what: str) -> gguf.GGUFWriter:
    writer = gguf.GGUFWriter(path, arch)
    writer.add_name(f"llava-bot {shape.name} {what} (random weights)")
    writer.add_description(
        f"Random tiny {FAMILY_TITLES[shape.family]}-shaped test model written by bot.engine.tiny; "
        f"shape {shape.name} {shape.digest}"
    )
    return writer


def finish(writer: gguf.GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()



# ---- vocab --------------------------------------------------------------


@dataclass(frozen=True)
class Vocab:
    tokens: list[str]
    scores: list[float]
    types: list[int]

    def __len__(self) -> int:
        return len(self.tokens)


def word_pieces() -> Iterator[str]:
    """Normal tokens: "▁", lower-case letters, then each word with its prefixes.

    SentencePiece merges adjacent pieces only into pieces that exist, so a
    word is reachable from its letters only if every prefix is a token too.
    """
    yield "\u2581"
    yield from "abcdefghijklmnopqrstuvwxyz"
    for word in WORDS:
        piece = "\u2581" + word
        for end in range(2, len(piece) + 1):
            yield piece[:end]


LLAMA_HEAD = (("<unk>", gguf.TokenType.UNKNOWN), ("<s>", gguf.TokenType.CONTROL), ("</s>", gguf.TokenType.CONTROL))


def build_vocab(
    with_words: bool,
    head: Sequence[tuple[str, gguf.TokenType]] = LLAMA_HEAD,
    controls: Sequence[str] = (),
) -> Vocab:
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
        for piece in word_pieces():
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
    return Vocab(tokens, scores, [int(t) for t in types])


def pad_vocab(vocab: Vocab, size: int) -> Vocab:
    """``vocab`` with UNUSED tokens appended up to ``size`` tokens."""
    extra = max(0, size - len(vocab))
    return Vocab(
        vocab.tokens + [f"<unused{i}>" for i in range(extra)],
        vocab.scores + [0.0] * extra,
        vocab.types + [int(gguf.TokenType.UNUSED)] * extra,
    )


def output_row_gains(vocab: Vocab) -> np.ndarray:
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



# ---- CLIP mmproj --------------------------------------------------------


def vit_parts(h: int, ff: int) -> tuple[tuple[str, int, int], ...]:
    """(name, out width, in width) of a ViT block's matrices."""
    return (
        ("attn_q", h, h),
        ("attn_k", h, h),
        ("attn_v", h, h),
        ("attn_out", h, h),
        ("ffn_up", ff, h),
        ("ffn_down", h, ff),
    )


def add_vit_blocks(writer: gguf.GGUFWriter, w: Weights, n_layer: int, h: int, ff: int) -> None:
    """CLIP/SigLIP ViT blocks: biased matrices, then the two layer norms with bias."""
    for i in range(n_layer):
        blk = f"v.blk.{i}"
        for part, out_w, in_w in vit_parts(h, ff):
            writer.add_tensor(f"{blk}.{part}.weight", store(w.normal(f"{blk}.{part}", (out_w, in_w))))
            writer.add_tensor(f"{blk}.{part}.bias", w.bias(f"{blk}.{part}.bias", out_w))
        for part in ("ln1", "ln2"):
            writer.add_tensor(f"{blk}.{part}.weight", w.norm(f"{blk}.{part}", h))
            writer.add_tensor(f"{blk}.{part}.bias", w.bias(f"{blk}.{part}.bias", h))


def add_clip_header(writer: gguf.GGUFWriter, shape: ModelShape, projector: str, eps: float, *, llava: bool = False) -> None:
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



def add_mean_std(writer: gguf.GGUFWriter, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
    """The encoder's input normalisation: ARRAY of FLOAT32 (libmtmd asserts the type)."""
    for key, values in (("clip.vision.image_mean", mean), ("clip.vision.image_std", std)):
        writer.add_key_value(key, [float(x) for x in values], gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.FLOAT32)
