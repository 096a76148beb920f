"""LlamaCppEngine on the real llama-cpp-python with the tiny generated pair."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bot.engine.base import EngineError, RequestError, VisionRequest
from bot.engine.llama_cpp import LlamaCppEngine
from tests.helpers import data_uri, picture


def ask(question: str = "What is in this image?", max_tokens: int = 16, **kw) -> VisionRequest:
    return VisionRequest(images=(data_uri(),), question=question, max_tokens=max_tokens, temperature=0.0, **kw)


def test_answer_has_text_usage_and_timings(tiny_engine: LlamaCppEngine) -> None:
    answer = tiny_engine.generate(ask(max_tokens=16))
    assert answer.text
    # byte tokens: a character may span several tokens (FACTS.md), so allow slack
    assert 1 <= answer.completion_tokens <= 16 + 4
    assert answer.finish_reason in ("length", "stop")
    t = answer.timings
    assert answer.prompt_tokens == t.prompt_tokens > 4  # 4 image positions plus the text
    assert t.image_encode_s > 0 and t.prompt_eval_s > 0 and t.generation_s > 0
    assert t.total_s >= t.image_encode_s + t.prompt_eval_s + t.generation_s
    assert 0 < t.first_token_s <= t.total_s
    assert t.tokens_per_s > 0


def test_backend_is_reported(tiny_engine: LlamaCppEngine) -> None:
    info = tiny_engine.info
    assert info.chat_format == "llava-1-5"
    # n_gpu_layers=0 here, so both run on the CPU whatever the build
    assert info.text_backend == "CPU"
    assert info.clip_backend == "CPU"
    assert info.model.endswith(".gguf")


def test_repeated_calls_are_deterministic_at_temperature_zero(tiny_engine: LlamaCppEngine) -> None:
    answers = [tiny_engine.generate(ask()).text for _ in range(3)]
    assert answers[0] and answers.count(answers[0]) == 3


def test_same_answer_as_llama_cpp_pythons_own_llava_handler(tiny_pair, tiny_engine: LlamaCppEngine) -> None:
    """Our libmtmd path must build the very prompt the stock Llava15ChatHandler builds."""
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Llava15ChatHandler

    text_path, mmproj = tiny_pair
    uri = data_uri(picture(colour=(10, 200, 30)))
    llm = Llama(
        model_path=str(text_path),
        chat_handler=Llava15ChatHandler(clip_model_path=str(mmproj), verbose=False),
        n_ctx=2048,
        n_gpu_layers=0,
        seed=0,
        verbose=False,
    )
    try:
        stock = llm.create_chat_completion(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": uri}},
                        {"type": "text", "text": "Describe this image."},
                    ],
                }
            ],
            max_tokens=24,
            temperature=0.0,
        )
    finally:
        llm.close()
    ours = tiny_engine.generate(VisionRequest(images=(uri,), question="Describe this image.", max_tokens=24, temperature=0.0))
    assert ours.text == stock["choices"][0]["message"]["content"].strip()
    assert ours.prompt_tokens == stock["usage"]["prompt_tokens"]
    assert ours.completion_tokens == stock["usage"]["completion_tokens"]


def test_history_turns_go_into_the_prompt(tiny_engine: LlamaCppEngine) -> None:
    first = tiny_engine.generate(ask())
    follow = tiny_engine.generate(ask("And the colours?", history=(("What is in this image?", first.text),)))
    assert follow.prompt_tokens > first.prompt_tokens + len(first.text) // 4


def test_prompt_longer_than_context_is_a_request_error(tiny_pair) -> None:
    engine = LlamaCppEngine(*tiny_pair, n_ctx=256, n_gpu_layers=0, warmup=False)
    engine.load()
    try:
        with pytest.raises(RequestError, match=r"need \d+ tokens, more than the model's context of 256"):
            engine.generate(ask("why " * 200))
        # the engine is still usable afterwards, and max_tokens shrinks to the room left
        answer = engine.generate(ask("Hi", max_tokens=1000))
        assert answer.prompt_tokens + answer.completion_tokens <= 256
        assert answer.completion_tokens >= 1
    finally:
        engine.close()


def test_only_data_uris_are_accepted(tiny_engine: LlamaCppEngine) -> None:
    with pytest.raises(EngineError, match="data: URIs"):
        tiny_engine.generate(VisionRequest(images=("http://127.0.0.1:9/x.jpg",), question="q", max_tokens=4))


def test_undecodable_image_is_a_request_error(tiny_engine: LlamaCppEngine) -> None:
    with pytest.raises(RequestError, match="could not decode"):
        tiny_engine.generate(VisionRequest(images=("data:image/jpeg;base64,AAAA",), question="q", max_tokens=4))
    assert tiny_engine.generate(ask()).text  # and it goes on


def test_stop_callback_ends_generation_between_tokens(tiny_engine: LlamaCppEngine) -> None:
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) >= 3

    answer = tiny_engine.generate(ask(max_tokens=64), should_stop=stop)
    assert answer.finish_reason == "cancelled"
    assert answer.completion_tokens < 64


def test_native_logs_go_to_python_logging_not_the_terminal(tiny_pair, tmp_path) -> None:
    """llama.cpp and mtmd print progress on every call; none of it may reach fd 2."""
    script = tmp_path / "run.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import logging, sys
            records = []
            class Keep(logging.Handler):
                def emit(self, record):
                    records.append(record.getMessage())
            logging.getLogger("llava_bot.llama_cpp").addHandler(Keep())
            logging.getLogger("llava_bot.llama_cpp").setLevel(logging.DEBUG)
            logging.getLogger("bot").addHandler(logging.NullHandler())  # the bot's own log lines (e.g. CPU weights) are not native output
            from bot.engine.llama_cpp import LlamaCppEngine
            from tests.helpers import data_uri
            from bot.engine.base import VisionRequest
            engine = LlamaCppEngine({str(tiny_pair[0])!r}, {str(tiny_pair[1])!r}, n_ctx=2048)
            engine.load()
            engine.generate(VisionRequest(images=(data_uri(),), question="hi", max_tokens=4))
            engine.close()
            print(sum("CLIP using" in r for r in records), sum("image decoded" in r for r in records))
            """
        )
    )
    root = Path(__file__).parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=root, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    clip_lines, encode_lines = map(int, done.stdout.split())
    assert clip_lines >= 1 and encode_lines >= 2  # warm-up + one question


def test_unknown_chat_format_is_refused(tiny_pair) -> None:
    with pytest.raises(ValueError, match="unknown chat format"):
        LlamaCppEngine(*tiny_pair, chat_format="gpt-9")


def test_not_a_model_file_is_an_engine_error(tmp_path, tiny_pair) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"GGUF" + b"\0" * 64)
    engine = LlamaCppEngine(bogus, tiny_pair[1], n_gpu_layers=0)
    with pytest.raises(EngineError, match="could not load the text model"):
        engine.load()


def test_debug_logging_captures_backend_lines(tiny_engine, caplog) -> None:
    fresh = VisionRequest(images=(data_uri(picture(colour=(1, 2, 3))),), question="q", max_tokens=2)
    with caplog.at_level(logging.DEBUG, logger="llava_bot.llama_cpp"):
        tiny_engine.generate(fresh)
    assert any("image decoded" in r.getMessage() for r in caplog.records)


# -- prefix cache: follow-ups about the same image --------------------------------------


def test_follow_up_reuses_the_image_and_answers_like_a_cold_engine(tiny_pair, tiny_engine) -> None:
    cold = LlamaCppEngine(*tiny_pair, n_ctx=2048, n_gpu_layers=0, prefix_cache=False, warmup=False)
    cold.load()
    try:
        uri = data_uri(picture(colour=(120, 30, 200)))
        first_req = VisionRequest(images=(uri,), question="What is this?", max_tokens=12, temperature=0.0)
        first = tiny_engine.generate(first_req)
        assert first.timings.image_encode_s > 0
        follow_req = VisionRequest(
            images=(uri,), question="And the colours?", max_tokens=12, temperature=0.0,
            history=(("What is this?", first.text),),
        )
        warm = tiny_engine.generate(follow_req)
        assert warm.timings.image_encode_s == 0  # the image was not encoded again
        assert warm.timings.cached_tokens > first.prompt_tokens // 2
        reference = cold.generate(follow_req)
        assert reference.timings.cached_tokens == 0 and reference.timings.image_encode_s > 0
        assert warm.text == reference.text
        assert warm.prompt_tokens == reference.prompt_tokens
        # the very same question again: everything cached, same answer
        again = tiny_engine.generate(follow_req)
        assert again.text == warm.text and again.timings.cached_tokens == warm.prompt_tokens - 1
        # another image: a miss, encoded afresh, and still right
        other = VisionRequest(images=(data_uri(picture(colour=(0, 255, 0))),), question="What is this?", max_tokens=12, temperature=0.0)
        assert tiny_engine.generate(other).text == cold.generate(other).text
    finally:
        cold.close()


def test_time_limit_stops_generation_with_a_partial_answer(tiny_engine) -> None:
    req = VisionRequest(images=(data_uri(),), question="Tell me everything.", max_tokens=1500, temperature=0.0, time_limit_s=1e-9)
    answer = tiny_engine.generate(req)
    assert answer.finish_reason == "timeout"
    assert answer.completion_tokens < 1500


def test_text_is_handed_out_as_it_is_generated(tiny_engine: LlamaCppEngine) -> None:
    pieces: list[tuple[str, float]] = []
    answer = tiny_engine.generate(ask(max_tokens=16), on_text=lambda t: pieces.append((t, time.perf_counter())))
    assert "".join(p for p, _ in pieces).strip() == answer.text  # the pieces are the answer
    assert len(pieces) > 1  # in pieces, not all at the end
    assert pieces[0][1] < pieces[-1][1]
    plain = tiny_engine.generate(ask(max_tokens=16))
    assert (plain.text, plain.completion_tokens) == (answer.text, answer.completion_tokens)  # streaming changes nothing
    assert plain.completion_tokens == 16 and plain.finish_reason == "length"  # the tiny model never stops early


def test_a_failing_text_callback_never_stops_the_answer(tiny_engine: LlamaCppEngine, caplog) -> None:
    calls = []

    def broken(text: str) -> None:
        calls.append(text)
        raise RuntimeError("the receiver broke")

    answer = tiny_engine.generate(ask(max_tokens=8), on_text=broken)
    assert answer.completion_tokens == 8 and len(calls) == 1  # called once, then left alone
    assert "a text callback failed" in caplog.text
