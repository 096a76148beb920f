"""The tiny Gemma 3 and Qwen2.5-VL pairs: deterministic, loadable by the real
llama.cpp and libmtmd, with their families' chat templates and special tokens,
and answers that end on their own end-of-turn token.

Only the libraries are used here (no engine class): mtmd tokenizes and
evaluates the prompt, llama-cpp-python generates from it.
"""

from __future__ import annotations

import ctypes
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from jinja2 import Environment
from jinja2.sandbox import ImmutableSandboxedEnvironment

from bot.engine import native
from bot.engine.tiny import (
    BENCH,
    FAMILY_SHAPES,
    GEMMA3_TINY,
    QWEN25VL_TINY,
    TINY,
    ModelShape,
    ensure_model_pair,
    main,
    write_model_pair,
)
from bot.engine.tiny.families import GEMMA3_CHAT_TEMPLATE, QWEN25VL_CHAT_TEMPLATE
from tests.helpers import jpeg_bytes, picture

FAMILIES = ("gemma3", "qwen2.5vl")
TEMPLATES = {"gemma3": GEMMA3_CHAT_TEMPLATE, "qwen2.5vl": QWEN25VL_CHAT_TEMPLATE}
END_OF_TURN = {"gemma3": "<end_of_turn>", "qwen2.5vl": "<|im_end|>"}
SPECIALS = {
    "gemma3": ("<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>"),
    "qwen2.5vl": ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"),
}
MAX_TOKENS = 200


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _field(reader: gguf.GGUFReader, key: str) -> gguf.ReaderField:
    field = reader.get_field(key)
    assert field is not None, f"missing key {key}"
    return field


# ---- files ----------------------------------------------------------------


def test_llava_file_names_did_not_move() -> None:
    # The family field is left out of the LLaVA digests: caches stay valid.
    assert TINY.family == BENCH.family == "llava"
    assert TINY.file_names() == ("llava-tiny-556fe997ea.gguf", "llava-tiny-556fe997ea-mmproj.gguf")
    assert BENCH.digest == "731278be5c"
    assert FAMILY_SHAPES == {"llava": TINY, "gemma3": GEMMA3_TINY, "qwen2.5vl": QWEN25VL_TINY}


@pytest.mark.parametrize("family", FAMILIES)
def test_pairs_are_written_deterministically(family: str, tmp_path: Path) -> None:
    shape = FAMILY_SHAPES[family]
    first = write_model_pair(shape, tmp_path / "a")
    second = write_model_pair(shape, tmp_path / "b")
    assert [p.name for p in first] == [f"{family}-tiny-{shape.digest}.gguf", f"{family}-tiny-{shape.digest}-mmproj.gguf"]
    assert [_sha256(p) for p in first] == [_sha256(p) for p in second]
    assert not list((tmp_path / "a").glob(".*.tmp"))
    assert shape.digest != TINY.digest


def test_the_command_line_knows_the_family_shapes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, shape in (("gemma3-tiny", GEMMA3_TINY), ("qwen2.5vl-tiny", QWEN25VL_TINY)):
        assert main(["--shape", name, "--dir", str(tmp_path)]) == 0
        assert capsys.readouterr().out.split() == [str(tmp_path / n) for n in shape.file_names()]


@pytest.mark.parametrize(
    "changes",
    [
        {"family": "mllama"},
        {"family": "gemma3", "image_size": 98},  # a 7×7 grid does not pool 4×4
        {"family": "qwen2.5vl", "image_size": 42},  # not whole 28 px merge squares
        {"family": "qwen2.5vl", "v_layer": 1},  # no room for windowed and full attention
        {"family": "qwen2.5vl", "n_embd": 72, "n_head": 4},  # 18-wide heads: no M-RoPE sections
        {"family": "gemma3", "vocab_extra_words": False},
    ],
)
def test_impossible_family_shapes_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ModelShape(name="x", **changes)


def test_image_token_counts() -> None:
    assert GEMMA3_TINY.n_image_tokens == 4  # 112 px, 8×8 patches pooled 4×4
    assert QWEN25VL_TINY.n_image_tokens == 16  # a 112 px square: 4×4 merged 28 px squares


@pytest.mark.parametrize("family", FAMILIES)
def test_metadata_has_the_types_llama_cpp_asserts(family: str, private_cache: Path) -> None:
    text_path, mmproj = ensure_model_pair(FAMILY_SHAPES[family], private_cache)
    T = gguf.GGUFValueType
    clip = gguf.GGUFReader(mmproj)
    expected = {
        "clip.projector_type": T.STRING,
        "clip.has_vision_encoder": T.BOOL,
        "clip.vision.image_size": T.UINT32,
        "clip.vision.patch_size": T.UINT32,
        "clip.vision.embedding_length": T.UINT32,
        "clip.vision.feed_forward_length": T.UINT32,
        "clip.vision.block_count": T.UINT32,
        "clip.vision.projection_dim": T.UINT32,
        "clip.vision.attention.head_count": T.UINT32,
        "clip.vision.attention.layer_norm_epsilon": T.FLOAT32,
    }
    if family == "gemma3":
        expected |= {"clip.use_gelu": T.BOOL, "clip.vision.projector.scale_factor": T.UINT32}
    else:
        expected |= {"clip.use_silu": T.BOOL, "clip.vision.n_wa_pattern": T.UINT32, "clip.vision.spatial_merge_size": T.UINT32}
    for key, vtype in expected.items():
        assert _field(clip, key).types == [vtype], key
    for key in ("clip.vision.image_mean", "clip.vision.image_std"):
        assert _field(clip, key).types == [T.ARRAY, T.FLOAT32], key
    assert _field(clip, "clip.projector_type").contents() == {"gemma3": "gemma3", "qwen2.5vl": "qwen2.5vl_merger"}[family]

    text = gguf.GGUFReader(text_path)
    arch = {"gemma3": "gemma3", "qwen2.5vl": "qwen2vl"}[family]
    assert _field(text, "general.architecture").contents() == arch
    assert _field(text, "tokenizer.ggml.model").contents() == "llama"
    assert _field(text, "tokenizer.chat_template").contents() == TEMPLATES[family]
    if family == "qwen2.5vl":
        sections = _field(text, "qwen2vl.rope.dimension_sections")
        assert sections.types == [T.ARRAY, T.INT32]
        assert sections.contents() == [4, 6, 6, 0]  # half of the 32-wide heads
        assert _field(text, "qwen2vl.rope.dimension_count").contents() == 32


# ---- chat templates -------------------------------------------------------

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "<__media__>\nWhat is in this image?"},
    {"role": "assistant", "content": "A cat."},
    {"role": "user", "content": "And else?"},
]

RENDERED = {
    "gemma3": (
        "<bos><start_of_turn>user\nBe brief.\n\n<__media__>\nWhat is in this image?<end_of_turn>\n"
        "<start_of_turn>model\nA cat.<end_of_turn>\n"
        "<start_of_turn>user\nAnd else?<end_of_turn>\n"
        "<start_of_turn>model\n"
    ),
    "qwen2.5vl": (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\n<__media__>\nWhat is in this image?<|im_end|>\n"
        "<|im_start|>assistant\nA cat.<|im_end|>\n"
        "<|im_start|>user\nAnd else?<|im_end|>\n"
        "<|im_start|>assistant\n"
    ),
}


def _render(family: str, messages: list[dict[str, Any]], strict: bool = True, **kw: Any) -> str:
    # llama-cpp-python renders with trim_blocks/lstrip_blocks; the templates
    # must not depend on it.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True) if strict else Environment()
    return env.from_string(TEMPLATES[family]).render(messages=messages, **{"bos_token": "<bos>", "eos_token": "<eos>", **kw})


@pytest.mark.parametrize("family", FAMILIES)
def test_templates_render_the_families_prompt_format(family: str) -> None:
    assert _render(family, CONVERSATION, add_generation_prompt=True) == RENDERED[family]
    assert _render(family, CONVERSATION, strict=False, add_generation_prompt=True) == RENDERED[family]
    closed = RENDERED[family].removesuffix({"gemma3": "<start_of_turn>model\n", "qwen2.5vl": "<|im_start|>assistant\n"}[family])
    assert _render(family, CONVERSATION, add_generation_prompt=False) == closed


def test_gemma3_template_without_a_system_message_and_with_list_content() -> None:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": " Describe this image. "}]}]
    assert _render("gemma3", messages, add_generation_prompt=True) == (
        "<bos><start_of_turn>user\n<start_of_image>Describe this image.<end_of_turn>\n<start_of_turn>model\n"
    )


def test_qwen_template_has_a_default_system_message_and_list_content() -> None:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this image."}]}]
    assert _render("qwen2.5vl", messages, add_generation_prompt=True) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Describe this image.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


# ---- the real stack -------------------------------------------------------


@dataclass
class Loaded:
    family: str
    llama: Any
    mtmd: Any
    ctx: Any
    eot: int

    def render(self, messages: list[dict[str, Any]]) -> str:
        bos = self.llama.metadata.get("tokenizer.ggml.bos_token_id")
        bos_text = native.token_text(self.llama, int(bos)) if bos is not None else ""
        return _render(self.family, messages, bos_token=bos_text, add_generation_prompt=True)

    def evaluate(self, prompt: str, images: list[bytes]) -> tuple[int, list[tuple[int, int]]]:
        """Tokenize and evaluate ``prompt`` with its images from an empty KV cache.

        Returns the next position and each image chunk's (tokens, positions)."""
        import llama_cpp

        mtmd, llama = self.mtmd, self.llama
        llama.reset()
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llama.ctx), True)
        buffers = [(ctypes.c_ubyte * len(data)).from_buffer_copy(data) for data in images]
        bitmaps = [mtmd.mtmd_helper_bitmap_init_from_buf(self.ctx, buf, len(buf), False) for buf in buffers]
        chunks = mtmd.mtmd_input_chunks_init()
        try:
            text = mtmd.mtmd_input_text()
            encoded = prompt.encode()
            text.text, text.text_len = encoded, len(encoded)
            text.add_special = False  # the template wrote <bos> where the family has one
            text.parse_special = True
            array = (mtmd.mtmd_bitmap_p_ctypes * max(1, len(bitmaps)))(*bitmaps)
            assert mtmd.mtmd_tokenize(self.ctx, chunks, ctypes.byref(text), array, len(bitmaps)) == 0
            image_chunks, last_text = [], None
            for i in range(mtmd.mtmd_input_chunks_size(chunks)):
                chunk = mtmd.mtmd_input_chunks_get(chunks, i)
                if mtmd.mtmd_input_chunk_get_type(chunk) == mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                    image_chunks.append((mtmd.mtmd_input_chunk_get_n_tokens(chunk), mtmd.mtmd_input_chunk_get_n_pos(chunk)))
                else:
                    n = ctypes.c_size_t(0)
                    tokens = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
                    last_text = int(tokens[n.value - 1])
            new_n_past = llama_cpp.llama_pos(0)
            rc = mtmd.mtmd_helper_eval_chunks(self.ctx, llama.ctx, chunks, 0, 0, llama.n_batch, True, ctypes.byref(new_n_past))
            assert rc == 0
        finally:
            mtmd.mtmd_input_chunks_free(chunks)
            for bitmap in bitmaps:
                mtmd.mtmd_bitmap_free(bitmap)
        # Positions, not tokens: under M-RoPE an image advances them by less than its token count.
        llama.n_tokens = new_n_past.value
        assert last_text is not None
        llama.input_ids[llama.n_tokens - 1] = last_text
        return new_n_past.value, image_chunks

    def greedy(self, max_tokens: int = MAX_TOKENS) -> list[int]:
        """Greedy tokens after the evaluated prompt, the end-of-generation one included."""
        import llama_cpp

        vocab = native.vocab_pointer(self.llama)
        out: list[int] = []
        while len(out) < max_tokens:
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.llama.ctx, -1), shape=(self.llama.n_vocab(),))
            token = int(np.argmax(logits))
            out.append(token)
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                break
            self.llama.eval([token])
        return out


@pytest.fixture(scope="module", params=FAMILIES)
def loaded(request: pytest.FixtureRequest, private_cache: Path) -> Iterator[Loaded]:
    import llama_cpp
    import llama_cpp.mtmd_cpp as mtmd

    family = request.param
    text_path, mmproj = ensure_model_pair(FAMILY_SHAPES[family], private_cache)
    llama = llama_cpp.Llama(str(text_path), n_ctx=4096, n_gpu_layers=0, verbose=False)
    params = mtmd.mtmd_context_params_default()
    params.use_gpu = False
    params.print_timings = False
    params.n_threads = llama.n_threads_batch
    ctx = mtmd.mtmd_init_from_file(str(mmproj).encode(), llama.model, params)
    assert ctx, f"libmtmd could not load {mmproj.name}"
    eot = int(llama.metadata["tokenizer.ggml.eot_token_id"])
    try:
        yield Loaded(family, llama, mtmd, ctx, eot)
    finally:
        mtmd.mtmd_free(ctx)
        llama.close()


def _question(marker: str, question: str = "What is in this image?", images: int = 1) -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"{marker}\n" * images + question}]


def test_the_gguf_template_is_what_llama_cpp_python_reads(loaded: Loaded) -> None:
    assert loaded.llama.metadata["tokenizer.chat_template"] == TEMPLATES[loaded.family]


def test_special_tokens_are_single_control_tokens_and_end_of_turn_ends_generation(loaded: Loaded) -> None:
    import llama_cpp

    vocab = native.vocab_pointer(loaded.llama)
    ids = {}
    for text in SPECIALS[loaded.family]:
        tokens = loaded.llama.tokenize(text.encode(), add_bos=False, special=True)
        assert len(tokens) == 1, text
        ids[text] = tokens[0]
        assert llama_cpp.llama_vocab_get_attr(vocab, tokens[0]) & llama_cpp.LLAMA_TOKEN_ATTR_CONTROL, text
    eot_text = END_OF_TURN[loaded.family]
    assert ids[eot_text] == loaded.eot
    eog = {text for text, token in ids.items() if llama_cpp.llama_vocab_is_eog(vocab, token)}
    assert eog == {eot_text}
    # Detokenized as plain text, the end-of-turn token is nothing.
    assert loaded.llama.detokenize([loaded.eot]) == b""
    assert loaded.llama.detokenize([loaded.eot], special=True) == eot_text.encode()
    if loaded.family == "gemma3":
        assert llama_cpp.llama_vocab_get_add_bos(vocab)
        assert native.token_text(loaded.llama, loaded.llama.token_bos()) == "<bos>"
        assert llama_cpp.llama_vocab_is_eog(vocab, loaded.llama.token_eos())  # <eos>
    else:
        assert not llama_cpp.llama_vocab_get_add_bos(vocab)
        assert loaded.llama.token_eos() == loaded.eot
        assert llama_cpp.llama_vocab_is_eog(vocab, ids.get("<|endoftext|>", loaded.llama.token_bos()))


def test_mtmd_loads_the_projector(loaded: Loaded) -> None:
    mtmd = loaded.mtmd
    assert mtmd.mtmd_support_vision(loaded.ctx)
    assert mtmd.mtmd_decode_use_mrope(loaded.ctx) is (loaded.family == "qwen2.5vl")


def test_image_tokens_and_positions(loaded: Loaded) -> None:
    marker = loaded.mtmd.mtmd_default_marker().decode()
    prompt = loaded.render(_question(marker))
    n_past, images = loaded.evaluate(prompt, [jpeg_bytes(picture((448, 448)))])
    if loaded.family == "gemma3":
        assert images == [(4, 4)]  # whatever the picture: 112 px, 8×8 patches pooled 4×4
        assert prompt.count("<start_of_image>") == 0  # mtmd adds the brackets itself
    else:
        assert images == [(256, 16)]  # 16×16 merged squares, positions advance by 16
    assert n_past > images[0][1]


@pytest.mark.parametrize(
    "question, images",
    [("What is in this image?", 1), ("Describe this image.", 1), ("Compare the two pictures.", 2)],
)
def test_greedy_answers_stop_on_the_end_of_turn_token(loaded: Loaded, question: str, images: int) -> None:
    marker = loaded.mtmd.mtmd_default_marker().decode()
    pictures = [jpeg_bytes(picture((96 + 64 * i, 64), (200, 60 + 90 * i, 40))) for i in range(images)]
    loaded.evaluate(loaded.render(_question(marker, question, images)), pictures)
    tokens = loaded.greedy()
    assert tokens[-1] == loaded.eot and len(tokens) < MAX_TOKENS
    assert 3 <= len(tokens) - 1 <= 40  # words before the end of the turn
    text = loaded.llama.detokenize(tokens[:-1]).decode()
    assert text.strip() and END_OF_TURN[loaded.family] not in text


def test_a_follow_up_answer_stops_too(loaded: Loaded) -> None:
    marker = loaded.mtmd.mtmd_default_marker().decode()
    messages = _question(marker)
    image = [jpeg_bytes(picture())]
    loaded.evaluate(loaded.render(messages), image)
    first = loaded.llama.detokenize(loaded.greedy()[:-1]).decode().strip()
    messages += [{"role": "assistant", "content": first}, {"role": "user", "content": "And what else?"}]
    loaded.evaluate(loaded.render(messages), image)
    tokens = loaded.greedy()
    assert tokens[-1] == loaded.eot and 3 <= len(tokens) - 1 <= 40


def test_create_completion_stops_on_the_end_of_turn_token(loaded: Loaded) -> None:
    marker = loaded.mtmd.mtmd_default_marker().decode()
    loaded.evaluate(loaded.render(_question(marker)), [jpeg_bytes(picture())])
    expected = loaded.greedy()
    loaded.evaluate(loaded.render(_question(marker)), [jpeg_bytes(picture())])
    llama = loaded.llama
    result = llama.create_completion(prompt=llama.input_ids[: llama.n_tokens].tolist(), max_tokens=MAX_TOKENS, temperature=0)
    choice = result["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert result["usage"]["completion_tokens"] == len(expected) - 1 < MAX_TOKENS
    assert choice["text"] == llama.detokenize(expected[:-1]).decode()
    assert END_OF_TURN[loaded.family] not in choice["text"]


def test_answers_depend_on_the_image(loaded: Loaded) -> None:
    marker = loaded.mtmd.mtmd_default_marker().decode()
    prompt = loaded.render(_question(marker))
    answers = set()
    for colour in ((200, 60, 40), (20, 200, 40), (240, 240, 240), (0, 0, 0), (30, 30, 220), (250, 200, 0)):
        loaded.evaluate(prompt, [jpeg_bytes(picture((96, 64), colour))])
        answers.add(tuple(loaded.greedy()))
    assert len(answers) > 1
