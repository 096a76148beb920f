"""Tiny, random Gemma-3- and Qwen2.5-VL-shaped GGUF pairs (see :mod:`bot.engine.tiny`).

:func:`bot.engine.tiny.ensure_model_pair` writes these for shapes of family
``"gemma3"`` or ``"qwen2.5vl"`` (``GEMMA3_TINY``, ``QWEN25VL_TINY``), with
the LLaVA writer's helpers: per-tensor seeded weights, the same bytes every
time, every metadata key written with an explicit type (libmtmd's typed
getters abort the process on a mismatch).  What llama.cpp 0.3.36
(``src/models/gemma3.cpp``, ``qwen2vl.cpp``, ``tools/mtmd/clip.cpp``,
``mtmd.cpp``) requires of them:

Gemma 3
  Text model, arch ``gemma3``: per block ``attn_norm``, ``attn_q/k/v``,
  ``attn_q_norm``/``attn_k_norm`` (one head wide), ``attn_output``,
  ``post_attention_norm``, ``ffn_norm``, ``ffn_gate/up/down`` (GELU),
  ``post_ffw_norm``; llama.cpp scales token embeddings (not image ones) by
  sqrt(n_embd).  No sliding window is written (real Gemma 3 has one on five
  layers of six), so the KV cache is a plain one.  Vocab: ``<pad>`` 0,
  ``<eos>`` 1, ``<bos>`` 2 (``add_bos`` true), ``<unk>`` 3, bytes 4-259, the
  word pieces, then the control tokens ``<start_of_turn>`` 394,
  ``<end_of_turn>`` 395 (also written as ``eot_token_id``),
  ``<start_of_image>`` 396, ``<end_of_image>`` 397.  End of generation
  (``llama_vocab_is_eog``): ``<eos>`` and ``<end_of_turn>``, both also found
  by llama.cpp from their text.

  Projector ``gemma3`` (SigLIP): patch conv with bias, one learned position
  embedding per patch (no class token), LayerNorm blocks with biases, GELU
  MLP, ``v.post_ln``; then the patch grid, which must be square, is average
  pooled 4×4 (``clip.vision.projector.scale_factor``, libmtmd's default,
  written anyway), RMS-normed times ``mm.soft_emb_norm`` and projected by
  ``mm.input_projection`` (ggml ``ne = [n_embd, v_embd]``: libmtmd
  multiplies by its transpose).  Every picture is resized to the fixed
  ``image_size``: 112 px, 8×8 patches, 4 image tokens whatever the picture.
  mtmd brackets them with ``<start_of_image>`` ... ``<end_of_image>`` (as
  text, parsed for specials: they must be tokens) and decodes them with
  non-causal attention.

Qwen2.5-VL
  Text model, arch ``qwen2vl`` (M-RoPE, ``mtmd_decode_use_mrope`` true):
  ``qwen2vl.rope.dimension_sections`` (4 INT32: temporal/height/width
  pairs, summing to half the head size; 16/24/24/0 at 128-wide heads,
  4/6/6/0 here), a head size equal to ``rope.dimension_count``, q/k/v
  biases, SiLU feed-forward.  An image chunk takes one embedding per token
  but advances the position only by max(grid width, grid height)
  (``mtmd_input_chunk_get_n_pos``), so after a prompt with an image the
  next position is lower than the number of tokens evaluated.  Vocab:
  ``<unk>`` 0, ``<|endoftext|>`` 1 (bos and pad, but ``add_bos`` false, as
  in real Qwen files), bytes 2-257, the word pieces, then ``<|im_start|>``
  392, ``<|im_end|>`` 393 (eos and eot), ``<|vision_start|>`` 394,
  ``<|vision_end|>`` 395, ``<|image_pad|>`` 396.  End of generation:
  ``<|endoftext|>`` and ``<|im_end|>``.

  Projector ``qwen2.5vl_merger``: two patch kernels (``v.patch_embd.weight``
  and ``.weight.1``, the two frames of Qwen's 3D conv), no patch bias, class
  or position embedding (2D rotary positions inside), RMS-normed blocks
  (``ln1``/``ln2`` weights only) with q/k/v/out biases and a SiLU-gated MLP
  (``clip.use_silu``), ``v.post_ln``; the merger concatenates each 2×2
  patches (4·v_embd) into ``mm.0`` -> GELU -> ``mm.2`` (n_embd wide).
  ``clip.vision.n_wa_pattern`` (UINT32) is required: full attention every
  n-th block, 112 px windows in the others (here 2: block 0 windowed, block
  1 full).  The vision head size must be a multiple of 4.  Pictures keep
  their own size, rounded to 28 px and held within [8, 4096] tokens:
  64×64 -> 9 image tokens (a 3×3 grid, 3 positions), 448×448 -> 256 (16×16),
  640×480 -> 391, 1024×768 -> 999 (37×27; 0.36 s to encode on 2 cores, 240
  MB peak), 1920×1080 -> 2,691 (2.1 s, 1 GB: attention and the window mask
  grow with the square of the patch count).  ``mtmd_context_params
  .image_max_tokens`` lowers the ceiling: at 256, 1024×768 -> 234 (18×13),
  1920×1080 -> 252.  mtmd brackets the tokens with ``<|vision_start|>`` ...
  ``<|vision_end|>``; ``<|image_pad|>`` is only what the chat template
  writes for an image part of a list content.

Answers that stop
  Unlike the LLaVA pair, whose answers always run to ``max_tokens``, these
  text models end their turn by themselves after about a dozen words.  Two
  coordinates of the model width form a plane: each word piece's embedding
  points there at its own angle on a half circle (a seeded random order of
  the pieces), every other token's embedding one step before the start.
  Since the last token's embedding dominates the hidden state (Qwen's
  attention and feed-forward outputs are scaled down; Gemma's are set by
  its post-norm gains against its scaled embeddings), a head row pointing
  one step *behind* a word's angle scores that word highest right after the
  words one step before it: greedy decoding walks along the half circle,
  a step of about 1/12 of it per word (the random part of the head picks
  among the words near the preferred angle, and the context moves the
  angle a little), and the end-of-turn row, pointing at the arc's end,
  wins after the last words.  A step back costs more than the random part
  of the head can usually give (at 180 × (1 - cos(pi/12)) = 6 logits, about
  three of its standard deviations), so the walk does not loop.
  The head keeps LLaVA's rule otherwise: control tokens and bytes have no
  plane part and never beat the preferred words.  A prompt must end with
  a non-word token, as the chat templates' ``\\n`` does.

  Measured (the chat template; one or two pictures of 48-630 px; 16
  questions, with and without a system message, the image marker before
  or after the question; follow-ups): over 300 greedy answers per family
  every one stopped by itself after 10-20 tokens (mostly 11-15), none
  empty, none near 200; sampling at temperature 0.2, 0.8 and 1.2 gave
  9-17.  The words depend on the picture and the question (about 40
  different greedy answers in 60).  On 2 CPU cores, loading a pair takes
  about 0.04 s (Gemma 3) / 0.12 s (Qwen2.5-VL, its encoder warm-up
  included), a prompt with a 96-448 px picture 0.03-0.06 s (Qwen2.5-VL,
  1024×768: 0.5 s), 32 tokens about 0.01 s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from bot.engine.tiny.common import (
    CLIP_MEAN,
    CLIP_STD,
    Vocab,
    Weights,
    add_clip_header,
    add_mean_std,
    add_vit_blocks,
    build_vocab,
    finish,
    new_writer,
    output_row_gains,
    store,
    vit_parts,
)
from bot.engine.tiny.shapes import GEMMA3_POOL, QWEN_MERGE, ModelShape

__all__ = [
    "GEMMA3_CHAT_TEMPLATE",
    "QWEN25VL_CHAT_TEMPLATE",
    "WRITERS",
    "write_gemma3_mmproj",
    "write_gemma3_text",
    "write_qwen25vl_mmproj",
    "write_qwen25vl_text",
]

_CONTROL = gguf.TokenType.CONTROL
_UNKNOWN = gguf.TokenType.UNKNOWN

# ---- chat templates -----------------------------------------------------
#
# Every line opens and closes with a whitespace-stripping tag, so the
# template renders the same with or without trim_blocks/lstrip_blocks.

#: Gemma 3: ``<bos>``, turns ``<start_of_turn>{user|model}\n...<end_of_turn>\n``,
#: a system message folded into the first turn, ``<start_of_turn>model\n`` to answer.
GEMMA3_CHAT_TEMPLATE = "\n".join(
    (
        "{%- macro text(content) -%}",
        "{%- if content is string -%}{{- content | trim -}}",
        "{%- else -%}{%- for part in content -%}",
        "{%- if part['type'] == 'text' -%}{{- part['text'] | trim -}}",
        "{%- elif part['type'] in ['image', 'image_url'] -%}{{- '<start_of_image>' -}}",
        "{%- endif -%}{%- endfor -%}{%- endif -%}",
        "{%- endmacro -%}",
        "{{- bos_token -}}",
        "{%- if messages and messages[0]['role'] == 'system' -%}",
        "{%- set system = text(messages[0]['content']) + '\\n\\n' -%}{%- set turns = messages[1:] -%}",
        "{%- else -%}{%- set system = '' -%}{%- set turns = messages -%}{%- endif -%}",
        "{%- for message in turns -%}",
        "{{- '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role']) + '\\n' -}}",
        "{{- (system if loop.first else '') + text(message['content']) + '<end_of_turn>\\n' -}}",
        "{%- endfor -%}",
        "{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}",
    )
)

#: Qwen2.5-VL: ChatML, with "You are a helpful assistant." when no system message is given.
QWEN25VL_CHAT_TEMPLATE = "\n".join(
    (
        "{%- macro text(content) -%}",
        "{%- if content is string -%}{{- content -}}",
        "{%- else -%}{%- for part in content -%}",
        "{%- if part['type'] == 'text' -%}{{- part['text'] -}}",
        "{%- elif part['type'] in ['image', 'image_url'] -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}",
        "{%- endif -%}{%- endfor -%}{%- endif -%}",
        "{%- endmacro -%}",
        "{%- if not messages or messages[0]['role'] != 'system' -%}",
        "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' -}}",
        "{%- endif -%}",
        "{%- for message in messages -%}",
        "{{- '<|im_start|>' + message['role'] + '\\n' + text(message['content']) + '<|im_end|>\\n' -}}",
        "{%- endfor -%}",
        "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}",
    )
)

# ---- vocab --------------------------------------------------------------

_GEMMA3_HEAD = (("<pad>", _CONTROL), ("<eos>", _CONTROL), ("<bos>", _CONTROL), ("<unk>", _UNKNOWN))
_GEMMA3_CONTROLS = ("<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>")
_QWEN_HEAD = (("<unk>", _UNKNOWN), ("<|endoftext|>", _CONTROL))
_QWEN_CONTROLS = ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>")


@dataclass(frozen=True)
class _Stepping:
    """How the text model walks to its end-of-turn token (see the module docstring)."""

    steps: int  # words from the start of the arc to its end, at the preferred step
    step_logit: float  # the logit of a word right at the preferred next angle
    eot_logit: float  # the same for the end-of-turn token, placed one step past the arc
    word_plane: float  # a word's embedding in the plane (other coordinates: N(0, 1))
    start_plane: float  # the other tokens' embedding in the plane, one step before the arc
    noise: float  # random part of the head rows, times 1/sqrt(n_embd)
    branch: float  # attention and feed-forward outputs (Qwen: weight scale; Gemma: post-norm gain)


# Anything here, in the templates or in the writers below changes the bytes
# written: bump bot.engine.tiny.shapes.FAMILIES_FORMAT_VERSION with it.
_STEPPING = {
    "gemma3": _Stepping(steps=12, step_logit=180, eot_logit=200, word_plane=6, start_plane=3, noise=1, branch=2),
    "qwen2.5vl": _Stepping(steps=12, step_logit=180, eot_logit=200, word_plane=6, start_plane=3, noise=1, branch=0.3),
}
_ARC = np.pi  # word pieces sit on the half circle [0, pi) of the plane


def _add_tokenizer(writer: gguf.GGUFWriter, vocab: Vocab, template: str, ids: dict[str, int], add_bos: bool) -> None:
    writer.add_tokenizer_model("llama")
    writer.add_token_list(vocab.tokens)
    writer.add_token_scores(vocab.scores)
    writer.add_token_types(vocab.types)
    writer.add_unk_token_id(ids["unk"])
    writer.add_bos_token_id(ids["bos"])
    writer.add_eos_token_id(ids["eos"])
    writer.add_eot_token_id(ids["eot"])
    writer.add_pad_token_id(ids["pad"])
    writer.add_add_bos_token(add_bos)
    writer.add_add_eos_token(False)
    # Gemma's SentencePiece model adds no dummy prefix; Qwen's byte-level BPE neither.
    writer.add_add_space_prefix(False)
    writer.add_chat_template(template)


def _word_angles(w: Weights, vocab: Vocab) -> np.ndarray:
    """Each word piece's angle on the arc, in a seeded random order; NaN for other tokens."""
    words = np.flatnonzero(np.array(vocab.types) == int(gguf.TokenType.NORMAL))
    angles = np.full(len(vocab), np.nan)
    angles[words[w.permutation("word_angles", len(words))]] = _ARC * (np.arange(len(words)) + 0.5) / len(words)
    return angles


def _embeddings(shape: ModelShape, w: Weights, angles: np.ndarray) -> np.ndarray:
    """Random N(0, 1) token embeddings, but coordinates 0 and 1 (the plane) encode
    the word's angle, or the start angle for every other token."""
    cfg = _STEPPING[shape.family]
    step = _ARC / cfg.steps
    embd = w.normal("token_embd", (len(angles), shape.n_embd), scale=1.0)
    words = ~np.isnan(angles)
    embd[words, 0] = cfg.word_plane * np.cos(angles[words])
    embd[words, 1] = cfg.word_plane * np.sin(angles[words])
    embd[~words, 0] = cfg.start_plane * np.cos(-step)
    embd[~words, 1] = cfg.start_plane * np.sin(-step)
    return embd


def _output_head(shape: ModelShape, w: Weights, vocab: Vocab, angles: np.ndarray, gain: np.ndarray, eot: int) -> np.ndarray:
    """LLaVA's head (no control tokens, printable bytes, boosted words), weaker,
    plus the plane: after a word at angle t, the words near t + step score
    ``step_logit``, the end-of-turn token past the arc's end ``eot_logit``."""
    cfg = _STEPPING[shape.family]
    d = shape.n_embd
    step = _ARC / cfg.steps
    head = w.normal("output", (len(vocab), d), scale=cfg.noise / np.sqrt(d)) * output_row_gains(vocab)[:, None]
    # The hidden state reaches the head RMS-normalised and times the output norm's gains.
    rms = np.sqrt((d - 2 + cfg.word_plane**2) / d)
    unit = rms / cfg.word_plane / gain[:2]
    words = ~np.isnan(angles)
    head[:, :2] = 0.0
    head[words, 0] = cfg.step_logit * unit[0] * np.cos(angles[words] - step)
    head[words, 1] = cfg.step_logit * unit[1] * np.sin(angles[words] - step)
    head[eot] = 0.0
    head[eot, 0] = cfg.eot_logit * unit[0] * np.cos(_ARC)
    head[eot, 1] = cfg.eot_logit * unit[1] * np.sin(_ARC)
    return head


def _add_text_hparams(writer: gguf.GGUFWriter, shape: ModelShape, vocab: Vocab, rope_base: float) -> None:
    writer.add_context_length(shape.n_ctx_train)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layer)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head)
    writer.add_rope_dimension_count(shape.n_embd // shape.n_head)
    writer.add_rope_freq_base(rope_base)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_vocab_size(len(vocab))
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)


# ---- Gemma 3 ------------------------------------------------------------


def write_gemma3_text(shape: ModelShape, path: Path) -> None:
    vocab = build_vocab(shape.vocab_extra_words, _GEMMA3_HEAD, _GEMMA3_CONTROLS)
    tok = {t: i for i, t in enumerate(vocab.tokens)}
    head_dim = shape.n_embd // shape.n_head
    w = Weights(shape.seed, "gemma3-text")
    writer = new_writer(path, "gemma3", shape, "text model")
    _add_text_hparams(writer, shape, vocab, rope_base=1_000_000.0)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    ids = {"unk": tok["<unk>"], "bos": tok["<bos>"], "eos": tok["<eos>"], "eot": tok["<end_of_turn>"], "pad": tok["<pad>"]}
    _add_tokenizer(writer, vocab, GEMMA3_CHAT_TEMPLATE, ids, add_bos=True)

    d, ff = shape.n_embd, shape.n_ff
    # Gemma normalises each branch's output (post-attention/post-feed-forward
    # RMS norms): their gains set how much the branches weigh against the
    # token embedding, which Gemma scales by sqrt(n_embd).
    branch = _STEPPING["gemma3"].branch
    angles = _word_angles(w, vocab)
    writer.add_tensor("token_embd.weight", store(_embeddings(shape, w, angles)))
    for i in range(shape.n_layer):
        blk = f"blk.{i}"
        writer.add_tensor(f"{blk}.attn_norm.weight", w.norm(f"{blk}.attn_norm", d))
        for part in ("attn_q", "attn_k", "attn_v"):
            writer.add_tensor(f"{blk}.{part}.weight", store(w.normal(f"{blk}.{part}", (d, d))))
        writer.add_tensor(f"{blk}.attn_q_norm.weight", w.norm(f"{blk}.attn_q_norm", head_dim))
        writer.add_tensor(f"{blk}.attn_k_norm.weight", w.norm(f"{blk}.attn_k_norm", head_dim))
        writer.add_tensor(f"{blk}.attn_output.weight", store(w.normal(f"{blk}.attn_output", (d, d))))
        writer.add_tensor(f"{blk}.post_attention_norm.weight", branch * w.norm(f"{blk}.post_attention_norm", d))
        writer.add_tensor(f"{blk}.ffn_norm.weight", w.norm(f"{blk}.ffn_norm", d))
        writer.add_tensor(f"{blk}.ffn_gate.weight", store(w.normal(f"{blk}.ffn_gate", (ff, d))))
        writer.add_tensor(f"{blk}.ffn_up.weight", store(w.normal(f"{blk}.ffn_up", (ff, d))))
        writer.add_tensor(f"{blk}.ffn_down.weight", store(w.normal(f"{blk}.ffn_down", (d, ff))))
        writer.add_tensor(f"{blk}.post_ffw_norm.weight", branch * w.norm(f"{blk}.post_ffw_norm", d))
    gain = w.norm("output_norm", d)
    writer.add_tensor("output_norm.weight", gain)
    writer.add_tensor("output.weight", store(_output_head(shape, w, vocab, angles, gain, ids["eot"])))
    finish(writer)


def write_gemma3_mmproj(shape: ModelShape, path: Path) -> None:
    w = Weights(shape.seed, "gemma3-siglip")
    writer = new_writer(path, "clip", shape, "mmproj")

    add_clip_header(writer, shape, "gemma3", 1e-6)
    add_mean_std(writer, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    writer.add_bool("clip.use_gelu", True)
    # 4 is libmtmd's default pooling for gemma3; written anyway, explicitly.
    writer.add_uint32("clip.vision.projector.scale_factor", GEMMA3_POOL)

    h, ff, p = shape.v_embd, shape.v_ff, shape.patch_size
    n_patches = (shape.image_size // p) ** 2
    writer.add_tensor("v.patch_embd.weight", store(w.normal("patch_embd", (h, 3, p, p), scale=1.0 / p)))
    writer.add_tensor("v.patch_embd.bias", w.bias("patch_embd.bias", h))
    writer.add_tensor("v.position_embd.weight", store(w.normal("position_embd", (n_patches, h), scale=0.1)))
    add_vit_blocks(writer, w, shape.v_layer, h, ff)
    writer.add_tensor("v.post_ln.weight", w.norm("post_ln", h))
    writer.add_tensor("v.post_ln.bias", w.bias("post_ln.bias", h))
    # ggml ne = [n_embd, h]: libmtmd multiplies by its transpose.
    writer.add_tensor("mm.soft_emb_norm.weight", w.norm("soft_emb_norm", h))
    writer.add_tensor("mm.input_projection.weight", store(w.normal("input_projection", (h, shape.n_embd), scale=h**-0.5)))
    finish(writer)


# ---- Qwen2.5-VL ---------------------------------------------------------


def _rope_sections(head_dim: int) -> list[int]:
    """Qwen2.5-VL's M-RoPE split of the rotary pairs (16/24/24 of 64 at 128-wide heads)."""
    pairs = head_dim // 2
    hw = 3 * pairs // 8
    return [pairs - 2 * hw, hw, hw, 0]


def write_qwen25vl_text(shape: ModelShape, path: Path) -> None:
    vocab = build_vocab(shape.vocab_extra_words, _QWEN_HEAD, _QWEN_CONTROLS)
    tok = {t: i for i, t in enumerate(vocab.tokens)}
    w = Weights(shape.seed, "qwen2vl-text")
    writer = new_writer(path, "qwen2vl", shape, "text model")
    _add_text_hparams(writer, shape, vocab, rope_base=1_000_000.0)
    writer.add_key_value(
        "qwen2vl.rope.dimension_sections",
        _rope_sections(shape.n_embd // shape.n_head),
        gguf.GGUFValueType.ARRAY,
        sub_type=gguf.GGUFValueType.INT32,
    )
    end = tok["<|endoftext|>"]
    ids = {"unk": tok["<unk>"], "bos": end, "eos": tok["<|im_end|>"], "eot": tok["<|im_end|>"], "pad": end}
    _add_tokenizer(writer, vocab, QWEN25VL_CHAT_TEMPLATE, ids, add_bos=False)

    d, ff = shape.n_embd, shape.n_ff
    # The attention and feed-forward outputs are scaled down so that the last
    # token's embedding dominates the hidden state.
    branch = _STEPPING["qwen2.5vl"].branch
    angles = _word_angles(w, vocab)
    writer.add_tensor("token_embd.weight", store(_embeddings(shape, w, angles)))
    for i in range(shape.n_layer):
        blk = f"blk.{i}"
        writer.add_tensor(f"{blk}.attn_norm.weight", w.norm(f"{blk}.attn_norm", d))
        for part in ("attn_q", "attn_k", "attn_v"):
            writer.add_tensor(f"{blk}.{part}.weight", store(w.normal(f"{blk}.{part}", (d, d))))
            writer.add_tensor(f"{blk}.{part}.bias", w.bias(f"{blk}.{part}.bias", d))
        out = w.normal(f"{blk}.attn_output", (d, d), scale=branch / np.sqrt(d))
        writer.add_tensor(f"{blk}.attn_output.weight", store(out))
        writer.add_tensor(f"{blk}.ffn_norm.weight", w.norm(f"{blk}.ffn_norm", d))
        writer.add_tensor(f"{blk}.ffn_gate.weight", store(w.normal(f"{blk}.ffn_gate", (ff, d))))
        writer.add_tensor(f"{blk}.ffn_up.weight", store(w.normal(f"{blk}.ffn_up", (ff, d))))
        down = w.normal(f"{blk}.ffn_down", (d, ff), scale=branch / np.sqrt(ff))
        writer.add_tensor(f"{blk}.ffn_down.weight", store(down))
    gain = w.norm("output_norm", d)
    writer.add_tensor("output_norm.weight", gain)
    writer.add_tensor("output.weight", store(_output_head(shape, w, vocab, angles, gain, ids["eot"])))
    finish(writer)


def write_qwen25vl_mmproj(shape: ModelShape, path: Path) -> None:
    w = Weights(shape.seed, "qwen2.5vl-vit")
    writer = new_writer(path, "clip", shape, "mmproj")

    add_clip_header(writer, shape, "qwen2.5vl_merger", 1e-6)
    add_mean_std(writer, CLIP_MEAN, CLIP_STD)
    writer.add_bool("clip.use_silu", True)
    # Full attention every n_wa_pattern-th block, windows (112 px) in the others.
    writer.add_uint32("clip.vision.n_wa_pattern", min(shape.v_layer, 8))
    writer.add_uint32("clip.vision.spatial_merge_size", QWEN_MERGE)

    h, ff, p = shape.v_embd, shape.v_ff, shape.patch_size
    # Qwen's 3D patch conv over two frames, split into two 2D kernels.
    writer.add_tensor("v.patch_embd.weight", store(w.normal("patch_embd", (h, 3, p, p), scale=0.7 / p)))
    writer.add_tensor("v.patch_embd.weight.1", store(w.normal("patch_embd.1", (h, 3, p, p), scale=0.7 / p)))
    for i in range(shape.v_layer):
        blk = f"v.blk.{i}"
        for part, out_w, in_w in (*vit_parts(h, ff), ("ffn_gate", ff, h)):
            writer.add_tensor(f"{blk}.{part}.weight", store(w.normal(f"{blk}.{part}", (out_w, in_w))))
            writer.add_tensor(f"{blk}.{part}.bias", w.bias(f"{blk}.{part}.bias", out_w))
        for part in ("ln1", "ln2"):  # RMS norms: no bias
            writer.add_tensor(f"{blk}.{part}.weight", w.norm(f"{blk}.{part}", h))
    writer.add_tensor("v.post_ln.weight", w.norm("post_ln", h))
    merged = QWEN_MERGE * QWEN_MERGE * h
    writer.add_tensor("mm.0.weight", store(w.normal("mm.0", (merged, merged))))
    writer.add_tensor("mm.0.bias", w.bias("mm.0.bias", merged))
    writer.add_tensor("mm.2.weight", store(w.normal("mm.2", (shape.n_embd, merged))))
    writer.add_tensor("mm.2.bias", w.bias("mm.2.bias", shape.n_embd))
    finish(writer)


#: family -> (text model writer, mmproj writer), as bot.engine.tiny.files dispatches them
WRITERS = {
    "gemma3": (write_gemma3_text, write_gemma3_mmproj),
    "qwen2.5vl": (write_qwen25vl_text, write_qwen25vl_mmproj),
}
