"""Parallel slots: several conversations decoded together in one llama context.

The reference is the single-slot engine (``parallel=1``): at temperature 0 a
batched answer has the same text, token count and finish reason.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from bot.engine import native
from bot.engine.base import Answer, EngineError, RequestError, VisionRequest
from bot.engine.batched import OutputText, kv_cache_bytes, model_kv_shape
from bot.engine.llama_cpp import LlamaCppEngine
from tests.helpers import data_uri, picture

COLOURS = [(200, 60, 40), (10, 200, 30), (30, 30, 220), (240, 240, 0), (0, 0, 0), (255, 255, 255), (120, 0, 120), (0, 120, 120)]


@pytest.fixture(scope="module")
def single(tiny_pair) -> LlamaCppEngine:
    engine = LlamaCppEngine(*tiny_pair, n_ctx=2048, n_gpu_layers=0, warmup=False)
    engine.load()
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def batched(tiny_pair) -> LlamaCppEngine:
    engine = LlamaCppEngine(*tiny_pair, n_ctx=2048, n_gpu_layers=0, parallel=4)
    engine.load()
    yield engine
    engine.close()


def ask(i: int, question: str | None = None, max_tokens: int = 24, **kw) -> VisionRequest:
    image = data_uri(picture(colour=COLOURS[i % len(COLOURS)]))
    return VisionRequest(
        images=(image,), question=question or f"What is in picture {i}?", max_tokens=max_tokens, temperature=0.0, **kw
    )


def at_once(engine: LlamaCppEngine, calls: list[Callable[[], Answer]]) -> list[Answer | BaseException]:
    """Run ``calls`` from as many threads, released together."""
    results: list[Answer | BaseException | None] = [None] * len(calls)
    gate = threading.Barrier(len(calls))

    def run(i: int) -> None:
        gate.wait()
        try:
            results[i] = calls[i]()
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results  # type: ignore[return-value]


def fresh(engine: LlamaCppEngine, request: VisionRequest) -> Answer:
    """The single engine's answer from an empty KV cache."""
    engine.forget()
    return engine.generate(request)


def test_slots_and_the_single_path(single: LlamaCppEngine, batched: LlamaCppEngine) -> None:
    assert single.slots == 1 and single.decoder is None
    assert batched.slots == 4 and batched.decoder is not None
    assert batched.warmup_answer is not None and batched.warmup_answer.text


def test_four_questions_at_once_answer_as_one_at_a_time(single: LlamaCppEngine, batched: LlamaCppEngine) -> None:
    requests = [ask(i) for i in range(4)]
    answers = at_once(batched, [lambda r=r: batched.generate(r) for r in requests])
    assert batched.decoder is not None and batched.decoder.busiest >= 2  # they really were decoded together
    for request, answer in zip(requests, answers):
        assert isinstance(answer, Answer), answer
        expected = fresh(single, request)
        assert answer.text == expected.text
        assert answer.completion_tokens == expected.completion_tokens == answer.timings.completion_tokens
        assert answer.finish_reason == expected.finish_reason
        assert answer.prompt_tokens == expected.prompt_tokens == answer.timings.prompt_tokens
        t = answer.timings
        assert t.image_encode_s > 0 and t.prompt_eval_s > 0 and t.generation_s > 0
        assert 0 < t.first_token_s <= t.total_s
        assert t.total_s >= t.image_encode_s + t.prompt_eval_s + t.generation_s - 1e-6


def test_more_jobs_than_slots_all_finish(single: LlamaCppEngine, batched: LlamaCppEngine) -> None:
    requests = [ask(i, f"Describe picture {i}.", max_tokens=12) for i in range(8)]
    answers = at_once(batched, [lambda r=r: batched.generate(r) for r in requests])
    for request, answer in zip(requests, answers):
        assert isinstance(answer, Answer), answer
        assert answer.text == fresh(single, request).text


def test_cancel_and_timeout_end_only_their_own_answers(single: LlamaCppEngine, batched: LlamaCppEngine) -> None:
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) >= 3

    normal = [ask(0, max_tokens=40), ask(1, max_tokens=40)]
    answers = at_once(
        batched,
        [
            lambda: batched.generate(normal[0]),
            lambda: batched.generate(ask(2, max_tokens=2000), should_stop=stop),
            lambda: batched.generate(ask(3, max_tokens=2000, time_limit_s=0.05)),
            lambda: batched.generate(normal[1]),
        ],
    )
    cancelled, timed_out = answers[1], answers[2]
    assert cancelled.finish_reason == "cancelled" and cancelled.completion_tokens == 2
    assert timed_out.finish_reason == "timeout" and timed_out.completion_tokens < 2000
    for request, answer in zip(normal, (answers[0], answers[3])):
        expected = fresh(single, request)
        assert (answer.text, answer.finish_reason) == (expected.text, expected.finish_reason)


def test_a_bad_image_fails_only_its_job(single: LlamaCppEngine, batched: LlamaCppEngine) -> None:
    bad = VisionRequest(images=("data:image/jpeg;base64,AAAA",), question="q", max_tokens=4)
    good = [ask(i) for i in range(3)]
    answers = at_once(
        batched,
        [
            lambda: batched.generate(good[0]),
            lambda: batched.generate(bad),
            lambda: batched.generate(good[1]),
            lambda: batched.generate(good[2]),
        ],
    )
    assert isinstance(answers[1], RequestError) and "could not decode" in str(answers[1])
    for request, answer in zip(good, (answers[0], answers[2], answers[3])):
        assert isinstance(answer, Answer), answer
        assert answer.text == fresh(single, request).text


def test_a_follow_up_reuses_its_slot(single: LlamaCppEngine, batched: LlamaCppEngine) -> None:
    first = ask(5, "What is in this image?")
    answer = batched.generate(first)
    # other conversations come and go in between
    at_once(batched, [lambda i=i: batched.generate(ask(i, max_tokens=4)) for i in range(3)])
    follow = ask(5, "And what colour is it?", history=((first.question, answer.text),))
    cached = batched.generate(follow)
    assert cached.timings.image_encode_s == 0 and cached.timings.cached_tokens > 0
    expected = fresh(single, follow)
    assert cached.text == expected.text and cached.completion_tokens == expected.completion_tokens


def test_a_question_too_long_for_one_slot_is_a_request_error(batched: LlamaCppEngine) -> None:
    with pytest.raises(RequestError, match=r"need \d+ tokens, more than the model's context of 2048"):
        batched.generate(ask(0, "why " * 2100))
    assert batched.generate(ask(0, max_tokens=4)).text


def test_streamed_text_is_the_answer(batched: LlamaCppEngine) -> None:
    streams: list[list[str]] = [[] for _ in range(3)]
    threads: list[set[int]] = [set() for _ in range(3)]
    callers: list[int] = [0, 0, 0]

    def call(i: int) -> Answer:
        callers[i] = threading.get_ident()

        def on_text(text: str) -> None:
            streams[i].append(text)
            threads[i].add(threading.get_ident())

        return batched.generate(ask(i, max_tokens=30), on_text=on_text)

    answers = at_once(batched, [lambda i=i: call(i) for i in range(3)])
    for i, answer in enumerate(answers):
        assert "".join(streams[i]).strip() == answer.text
        assert threads[i] == {callers[i]}  # on_text runs in the caller's thread


def test_close_fails_waiting_callers(tiny_pair) -> None:
    engine = LlamaCppEngine(*tiny_pair, n_ctx=2048, n_gpu_layers=0, parallel=2, warmup=False)
    engine.load()
    started = threading.Event()
    result: list[BaseException | Answer] = []

    def run() -> None:
        try:
            result.append(engine.generate(ask(0, max_tokens=1800), on_text=lambda _t: started.set()))
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    assert started.wait(30)
    engine.close()
    thread.join(10)
    assert len(result) == 1 and isinstance(result[0], EngineError)
    with pytest.raises(EngineError, match="not loaded"):
        engine.generate(ask(0))


def test_kv_memory_and_the_line_when_the_context_cannot_be_made(tiny_pair, batched, monkeypatch) -> None:
    assert kv_cache_bytes(32, 4096, 1, 1024, 1024) == 32 * 4096 * 2048 * 2  # 7B-like GQA: 512 MiB
    n_layer, k, v = model_kv_shape(batched.llama)
    assert batched.kv_memory_bytes() == 4 * kv_cache_bytes(n_layer, 2048, 1, k, v)
    # the batched context only (the Llama's own is made by llama-cpp-python)
    monkeypatch.setattr(native.LIB, "llama_init_from_model", lambda *a: None, raising=False)
    engine = LlamaCppEngine(*tiny_pair, n_ctx=4096, n_gpu_layers=0, parallel=8, warmup=False)
    with pytest.raises(
        EngineError, match=r"8 slots x 4096 tokens need 32768 KV cells \(about \d+ MB.*lower model.parallel or model.n_ctx"
    ):
        engine.load()
    assert not engine.loaded


def test_output_holds_back_and_cuts_stop_strings() -> None:
    seen: list[str] = []
    out = OutputText(("</s>",), 100, seen.append)
    assert out.add(b"Hello") is None
    assert out.add(b" </") is None
    assert "".join(seen) == "Hello "  # "</" may start the stop string: held back
    assert out.add(b"s> tail") == "stop"
    assert out.finish() == "Hello " and "".join(seen) == "Hello "
    # a character split over two tokens: as in create_completion, the length check waits for it
    out = OutputText((), 2, seen.append)
    assert out.add(b"ab") is None and out.add(b"\xc3") is None
    assert out.add(b"\xa9") == "length" and out.finish() == "ab\u00e9"


def test_qwen_mrope_with_two_slots_answers_as_one(private_cache) -> None:
    from bot.engine.tiny import FAMILY_SHAPES, ensure_model_pair

    pair = ensure_model_pair(FAMILY_SHAPES["qwen2.5vl"], private_cache)
    requests = [
        VisionRequest(
            images=(data_uri(picture((96, 64), (200, 60, 40))),), question="What is it?", max_tokens=60, temperature=0.0
        ),
        VisionRequest(
            images=(data_uri(picture((96, 64), (20, 160, 40))), data_uri(picture((64, 96), (0, 0, 200)))),
            question="Compare them.",
            max_tokens=60,
            temperature=0.0,
        ),
    ]
    one = LlamaCppEngine(*pair, n_ctx=2048, n_gpu_layers=0, warmup=False)
    two = LlamaCppEngine(*pair, n_ctx=2048, n_gpu_layers=0, warmup=False, parallel=2)
    one.load()
    two.load()
    try:
        expected = [fresh(one, r) for r in requests]
        answers = at_once(two, [lambda r=r: two.generate(r) for r in requests])
        for want, got in zip(expected, answers):
            assert isinstance(got, Answer), got
            assert (got.text, got.completion_tokens, got.finish_reason) == (want.text, want.completion_tokens, want.finish_reason)
        assert time.perf_counter() > 0
    finally:
        two.close()
        one.close()


def test_measure_parallel_reports_both_runs(tiny_pair) -> None:
    from bot.bench.parallel import measure_parallel

    result = measure_parallel(tiny_pair, slots=2, questions=3, max_tokens=4)
    assert set(result["runs"]) == {1, 2}
    for run in result["runs"].values():
        assert run["seconds"] > 0 and run["completion_tokens"] >= 3 and run["tokens_per_s"] > 0
        assert run["single_latency_s"] > 0
    assert result["runs"][1]["completion_tokens"] == result["runs"][2]["completion_tokens"]
    assert result["speedup"] > 0
