"""The LLaVA-1.5-shaped pair: a ``llama`` text model and a CLIP ``mlp`` mmproj.

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

The text model has its own small byte-level SentencePiece ("llama") vocab:
``<unk>``, ``<s>``, ``</s>``, the 256 byte tokens and, optionally, a few
dozen normal tokens (letters, common words and their prefixes, so the SPM
merge can actually reach the words).  The output head is shaped so that
greedy decoding never picks a control token or a byte that is not
printable ASCII: answers are valid UTF-8 and always run to ``max_tokens``.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

from bot.engine.tiny.common import (
    CLIP_MEAN,
    CLIP_STD,
    Weights,
    add_clip_header,
    add_mean_std,
    add_vit_blocks,
    build_vocab,
    finish,
    new_writer,
    output_row_gains,
    pad_vocab,
    store,
)
from bot.engine.tiny.shapes import ModelShape

# ---- text model ---------------------------------------------------------


def write_llava_text(shape: ModelShape, path: Path) -> None:
    vocab = pad_vocab(build_vocab(shape.vocab_extra_words), shape.vocab_size)
    head_dim = shape.n_embd // shape.n_head
    w = Weights(shape.seed, "text")
    writer = new_writer(path, "llama", shape, "text model")

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
    writer.add_tensor("token_embd.weight", store(w.normal("token_embd", (nv, d), scale=1.0)))
    for i in range(shape.n_layer):
        blk = f"blk.{i}"
        writer.add_tensor(f"{blk}.attn_norm.weight", w.norm(f"{blk}.attn_norm", d))
        for part in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"{blk}.{part}.weight", store(w.normal(f"{blk}.{part}", (d, d))))
        writer.add_tensor(f"{blk}.ffn_norm.weight", w.norm(f"{blk}.ffn_norm", d))
        writer.add_tensor(f"{blk}.ffn_gate.weight", store(w.normal(f"{blk}.ffn_gate", (ff, d))))
        writer.add_tensor(f"{blk}.ffn_up.weight", store(w.normal(f"{blk}.ffn_up", (ff, d))))
        writer.add_tensor(f"{blk}.ffn_down.weight", store(w.normal(f"{blk}.ffn_down", (d, ff))))
    writer.add_tensor("output_norm.weight", w.norm("output_norm", d))
    head = w.normal("output", (nv, d), scale=4.0 / np.sqrt(d)) * output_row_gains(vocab)[:, None]
    writer.add_tensor("output.weight", store(head))
    finish(writer)



def write_llava_mmproj(shape: ModelShape, path: Path) -> None:
    w = Weights(shape.seed, "clip")
    writer = new_writer(path, "clip", shape, "mmproj")

    add_clip_header(writer, shape, "mlp", 1e-5, llava=True)
    add_mean_std(writer, CLIP_MEAN, CLIP_STD)
    writer.add_bool("clip.use_gelu", False)  # LLaVA-1.5's CLIP uses quick GELU

    h, ff, p = shape.v_embd, shape.v_ff, shape.patch_size
    n_pos = shape.n_image_tokens + 1  # + class embedding
    writer.add_tensor("v.patch_embd.weight", store(w.normal("patch_embd", (h, 3, p, p), scale=1.0 / p)))
    writer.add_tensor("v.class_embd", w.normal("class_embd", (h,), scale=0.1))
    writer.add_tensor("v.position_embd.weight", store(w.normal("position_embd", (n_pos, h), scale=0.1)))
    writer.add_tensor("v.pre_ln.weight", w.norm("pre_ln.weight", h))
    writer.add_tensor("v.pre_ln.bias", w.bias("pre_ln.bias", h))
    add_vit_blocks(writer, w, shape.v_layer, h, ff)
    # No post-LN: LLaVA-1.5 takes the second-to-last layer, before it.
    d = shape.n_embd
    writer.add_tensor("mm.0.weight", store(w.normal("mm.0", (d, h))))
    writer.add_tensor("mm.0.bias", w.bias("mm.0.bias", d))
    writer.add_tensor("mm.2.weight", store(w.normal("mm.2", (d, d))))
    writer.add_tensor("mm.2.bias", w.bias("mm.2.bias", d))
    finish(writer)

