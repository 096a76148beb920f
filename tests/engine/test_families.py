"""The engine on the other built-in families: Gemma 3 and Qwen2.5-VL shaped tiny pairs.

Each pair carries its own chat template and end-of-turn token; Qwen2.5-VL
uses M-RoPE positions and dynamic resolution.  The reference for positions
and the prefix cache is llama.cpp's own ``mtmd_helper_eval_chunks``.
"""

from __future__ import annotations

import ctypes

import pytest

from bot.engine import native
from bot.engine.base import RequestError, TextSink, VisionRequest
from bot.engine.llama_cpp import LlamaCppEngine, Stopper
from bot.engine.native import LIB, MTMD
from tests.helpers import data_uri, picture

FAMILIES = ("gemma3", "qwen2.5vl")
END_OF_TURN = {"gemma3": "<end_of_turn>", "qwen2.5vl": "<|im_end|>"}


@pytest.fixture(scope="module", params=FAMILIES)
def family_engine(request: pytest.FixtureRequest, private_cache) -> LlamaCppEngine:
    from bot.engine.tiny import FAMILY_SHAPES, ensure_model_pair

    engine = LlamaCppEngine(*ensure_model_pair(FAMILY_SHAPES[request.param], private_cache), n_ctx=4096, n_gpu_layers=0)
    engine.family = request.param  # type: ignore[attr-defined]
    engine.load()
    yield engine
    engine.close()


def ask(*colours: tuple[int, int, int], question: str = "What is in this image?", **kw) -> VisionRequest:
    images = tuple(data_uri(picture((96, 64), c)) for c in colours or ((200, 60, 40),))
    return VisionRequest(images=images, question=question, max_tokens=kw.pop("max_tokens", 200), temperature=0.0, **kw)


def test_auto_uses_the_template_in_the_model_file(family_engine: LlamaCppEngine) -> None:
    assert family_engine.template is not None
    assert family_engine.template.source == "model file"
    assert family_engine.info.chat_format == "gguf"
    assert "tokenizer.chat_template" in family_engine.info.template


def test_the_prompt_is_the_families_own_format(family_engine: LlamaCppEngine) -> None:
    text, add_bos = family_engine.prompts.render(ask())
    if family_engine.family == "gemma3":  # type: ignore[attr-defined]
        assert text.startswith(b"<bos><start_of_turn>user\n") and text.endswith(b"<start_of_turn>model\n")
        assert not add_bos  # the template writes <bos> itself: not a second one
    else:
        assert b"<|im_start|>user\n" in text and text.endswith(b"<|im_start|>assistant\n")
    assert text.count(family_engine.prompts.vision.marker.encode()) == 1


def test_the_end_of_turn_token_ends_the_answer_and_never_shows(family_engine: LlamaCppEngine) -> None:
    stop = END_OF_TURN[family_engine.family]  # type: ignore[attr-defined]
    for question in ("What is in this image?", "Describe this image.", "Is there a cat?"):
        answer = family_engine.generate(ask(question=question))
        assert answer.text and stop not in answer.text
        assert answer.finish_reason == "stop" and answer.completion_tokens < 200


def test_several_images_in_one_question(family_engine: LlamaCppEngine) -> None:
    one = family_engine.generate(ask((200, 60, 40), max_tokens=8))
    two = family_engine.generate(ask((200, 60, 40), (20, 160, 40), max_tokens=8))
    assert two.prompt_tokens > one.prompt_tokens
    assert two.text


def reference_answer(engine: LlamaCppEngine, request: VisionRequest) -> str:
    """The answer after llama.cpp's own ``mtmd_helper_eval_chunks`` evaluated the
    whole prompt from an empty cache (positions as llama.cpp computes them)."""
    llama = engine.llama
    engine.forget()  # an empty KV cache, nothing our cache knows about
    with engine.prompts.build(request) as prompt:
        n_past = LIB.llama_pos(0)
        rc = MTMD.mtmd_helper_eval_chunks(
            engine.prompts.vision.ctx, native.context_pointer(llama), prompt.chunks, 0, 0, llama.n_batch, True, ctypes.byref(n_past)
        )
        assert rc == 0
    # the helper's decode left fresh logits for the last token
    native.set_evaluated(llama, n_past.value, fresh_logits=True)
    completion = engine.complete(request, request.max_tokens, Stopper(None, None), TextSink(None))
    engine.forget()
    return completion.text.strip()


def test_a_cached_follow_up_answers_as_a_fresh_evaluation_by_llama_cpp(family_engine: LlamaCppEngine) -> None:
    first = ask(question="What is in this image?")
    answer = family_engine.generate(first)
    follow = ask(question="And what colour is it?", history=((first.question, answer.text),))
    cached = family_engine.generate(follow)
    assert cached.timings.image_encode_s == 0 and cached.timings.cached_tokens > 0  # the image came from the cache
    assert cached.text == reference_answer(family_engine, follow)
    # ...and a fresh evaluation by our own loop agrees too.
    family_engine.forget()
    assert family_engine.generate(follow).text == cached.text


def test_text_after_an_image_continues_from_mtmds_positions(family_engine: LlamaCppEngine) -> None:
    """Two images then text: our evaluation gives llama.cpp's answer (M-RoPE images
    take max(rows, columns) positions on Qwen, all their tokens on Gemma)."""
    request = ask((200, 60, 40), (20, 160, 40), question="Compare them.", max_tokens=24)
    family_engine.forget()
    ours = family_engine.generate(request)
    assert ours.text == reference_answer(family_engine, request)


def test_a_question_that_does_not_fit_gets_the_context_line(family_engine: LlamaCppEngine) -> None:
    with pytest.raises(RequestError, match="more than the model's context"):
        family_engine.generate(ask(question="why " * 5000))
    assert family_engine.generate(ask(max_tokens=4)).text  # and the engine goes on


def test_qwen_images_are_capped_by_the_token_budget(private_cache) -> None:
    from bot.engine.tiny import FAMILY_SHAPES, ensure_model_pair

    pair = ensure_model_pair(FAMILY_SHAPES["qwen2.5vl"], private_cache)
    big = data_uri(picture((1024, 768)))
    counts = {}
    for budget in (None, 64):
        engine = LlamaCppEngine(*pair, n_ctx=4096, n_gpu_layers=0, warmup=False, image_max_tokens=budget)
        engine.load()
        try:
            assert engine.projector.dynamic
            with engine.prompts.build(VisionRequest(images=(big,), question="?", max_tokens=4)) as prompt:
                counts[budget] = prompt.n_prompt
        finally:
            engine.close()
    assert counts[64] < counts[None] <= 1024 + 64  # default budget 1024 image tokens, plus the text
    assert counts[64] <= 64 + 64
