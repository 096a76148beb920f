"""Where each part of a prompt sits in the context, and what the KV cache already holds.

Position bookkeeping (:func:`layout`): mtmd cuts a prompt into chunks of
text tokens and images.  A text token takes one position and one KV cell.
An image takes ``n_tokens`` cells but ``n_pos`` positions: the same number on
most models, ``max(rows, columns)`` of its patch grid on M-RoPE models
(Qwen2-VL, Qwen2.5-VL), whose images carry 2-D positions inside that span.
Text after an image continues at the image's end position, as in llama.cpp's
``mtmd_helper_eval_chunks``.

The prefix cache (:class:`PrefixCache`): the pieces of the last prompt (and
the answer generated after it) stay in the KV cache.  The next prompt reuses
its leading pieces that are the same: the same text tokens, the same image by
content hash.  A follow-up about the same image so skips CLIP and the image's
evaluation, and a batch of questions with the same system text skips that.
:func:`keep_for` and :func:`remaining` say what to keep and what is left to
evaluate; the single path (:mod:`bot.engine.llama_cpp`) and each slot of the
batched one (:mod:`bot.engine.batched`) use them alike.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from typing import Any

from bot.engine.base import EngineError

TEXT, IMAGE = "text", "image"


@dataclass(frozen=True, slots=True)
class Piece:
    """One chunk of a prompt at its place in the context."""

    kind: str  # TEXT or IMAGE
    key: Any  # the text's token ids (a tuple), or the image's content id (bytes)
    start: int  # its first position
    end: int  # the position after it
    n_tokens: int  # the KV cells it fills
    #: the mtmd chunk an image is evaluated from (valid while its chunk list lives)
    chunk: Any = field(default=None, compare=False, repr=False)

    def after(self, n: int) -> Piece:
        """A text piece without its first ``n`` tokens."""
        return Piece(TEXT, self.key[n:], self.start + n, self.end, self.n_tokens - n)


def layout(mtmd: Any, chunks: Any) -> list[Piece]:
    """The pieces of an mtmd chunk list, each at its positions."""
    pieces: list[Piece] = []
    pos = 0
    for i in range(mtmd.mtmd_input_chunks_size(chunks)):
        chunk = mtmd.mtmd_input_chunks_get(chunks, i)
        kind = mtmd.mtmd_input_chunk_get_type(chunk)
        if kind == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
            n = ctypes.c_size_t()
            ptr = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
            tokens = tuple(int(ptr[j]) for j in range(n.value))
            pieces.append(Piece(TEXT, tokens, pos, pos + len(tokens), len(tokens)))
        elif kind == mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE:
            n_pos = int(mtmd.mtmd_input_chunk_get_n_pos(chunk))
            n_tokens = int(mtmd.mtmd_input_chunk_get_n_tokens(chunk))
            image_id = mtmd.mtmd_input_chunk_get_id(chunk) or b""
            pieces.append(Piece(IMAGE, image_id, pos, pos + n_pos, n_tokens, chunk))
        else:
            raise ValueError("only images and text are supported")
        pos = pieces[-1].end
    return pieces


class PrefixCache:
    """The pieces the KV cache holds, in order from position 0."""

    def __init__(self) -> None:
        self.pieces: list[Piece] = []

    def clear(self) -> None:
        self.pieces = []

    def reusable(self, pieces: list[Piece]) -> int:
        """How many leading positions of ``pieces`` the KV cache already holds.

        Images count whole or not at all; text up to its first different token.
        """
        keep = 0
        for old, new in zip(self.pieces, pieces):
            if old.kind != new.kind or old.start != new.start:
                break
            if new.kind == IMAGE:
                if old.key != new.key:
                    break
                keep = new.end
                continue
            same = _common_prefix(old.key, new.key)
            keep = new.start + same
            if same < len(new.key) or len(old.key) != len(new.key):
                break
        return keep

    def store(self, pieces: list[Piece]) -> None:
        """``pieces`` are now evaluated into the KV cache."""
        self.pieces = [Piece(p.kind, p.key, p.start, p.end, p.n_tokens) for p in pieces]  # no chunk handles

    def extend(self, generated: tuple[int, ...]) -> None:
        """The answer's tokens now follow the last (text) piece in the KV cache."""
        if not self.pieces or self.pieces[-1].kind != TEXT:
            return
        last = self.pieces[-1]
        n = len(generated)
        self.pieces[-1] = Piece(TEXT, last.key + generated, last.start, last.end + n, last.n_tokens + n)


def keep_for(pieces: list[Piece], reusable: int) -> int:
    """The positions to keep in the KV cache before evaluating ``pieces``, of the
    ``reusable`` ones: when the whole prompt is cached, its last token is evaluated
    again so that the model has fresh logits to sample from."""
    end = pieces[-1].end
    if reusable < end:
        return reusable
    if pieces[-1].kind != TEXT:
        raise EngineError("a prompt must end with text")
    return end - 1


def remaining(pieces: list[Piece], keep: int) -> list[Piece]:
    """What is left to evaluate of ``pieces`` when the first ``keep`` positions are
    kept: the images after it whole, the text from its first token not kept."""
    left: list[Piece] = []
    for piece in pieces:
        if piece.end <= keep:
            continue
        if piece.kind == TEXT:
            left.append(piece.after(max(0, keep - piece.start)))
        else:
            left.append(piece)
    return left


def cached_tokens(pieces: list[Piece], keep: int) -> int:
    """The KV cells of ``pieces`` that lie before position ``keep``."""
    total = 0
    for piece in pieces:
        if piece.end <= keep:
            total += piece.n_tokens
        elif piece.start < keep:  # text only: images are kept whole or not at all
            total += keep - piece.start
    return total


def _common_prefix(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
