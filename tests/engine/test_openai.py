"""OpenAIEngine against the SlowEngine test server: answers, and every way a remote engine goes wrong.

The server runs on the test's event loop; the blocking engine runs in a thread.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import threading
import time
import urllib.request

import pytest

from bot.engine.base import EndpointDown, EngineError, RequestError, VisionRequest
from bot.engine.openai import OpenAIEngine
from tests.fakes.slow_engine import SlowEngine, not_http_server, word_text
from tests.helpers import data_uri

KEY = "sk-very-secret-key"


def ask(max_tokens: int = 8, **kw) -> VisionRequest:
    return VisionRequest(images=(data_uri(),), question="What is in this image?", max_tokens=max_tokens, **kw)


async def generate(engine: OpenAIEngine, request: VisionRequest | None = None, **kw):
    # a bound, so that an engine that never returns fails the test instead of hanging it
    # (closing the server then ends the stream the thread is still reading)
    return await asyncio.wait_for(asyncio.to_thread(engine.generate, request or ask(), **kw), 20)


async def test_an_answer_has_the_text_usage_timings_and_max_tokens_is_sent() -> None:
    async with SlowEngine(tokens=4, delay_s=0.01) as server:
        engine = OpenAIEngine(server.url, model="m", api_key=KEY)
        answer = await generate(engine, ask(max_tokens=8))
        assert answer.text == word_text(4)
        assert answer.finish_reason == "stop"
        assert (answer.prompt_tokens, answer.completion_tokens) == (16, 4)
        assert 0 < answer.timings.first_token_s <= answer.timings.total_s
        body = server.last_body
        assert body["max_tokens"] == 8 and body["stream"] is True and body["model"] == "m"
        parts = body["messages"][-1]["content"]
        assert parts[0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
        assert server.last_authorization == f"Bearer {KEY}"
        assert (server.requests, server.completed) == (1, 1)


async def test_max_tokens_cuts_the_answer() -> None:
    async with SlowEngine(tokens=8, delay_s=0.0) as server:
        answer = await generate(OpenAIEngine(server.url), ask(max_tokens=3))
        assert answer.text == word_text(3)
        assert answer.finish_reason == "length"
        assert answer.completion_tokens == 3


async def test_server_timings_are_used_when_reported() -> None:
    async with SlowEngine(tokens=3, delay_s=0.05, server_timings=True) as server:
        answer = await generate(OpenAIEngine(server.url))
        t = answer.timings
        assert t.prompt_eval_s > 0 and t.generation_s > 0.05
        assert t.prompt_eval_s + t.generation_s <= t.total_s + 0.05


@pytest.mark.parametrize(
    "lines",
    [
        [b"data: [1,2,3]\n\n"],
        [b"data: <html>not json</html>\n\n"],
        [b'data: {"choices": {"delta": "x"}}\n\n'],
        [b'data: {"choices": [1]}\n\n'],
        [b'data: {"choices": [{"delta": "text"}]}\n\n'],
        [b'data: {"choices": [{"delta": {"content": 5}}]}\n\n'],
        [b'data: {"choices": [], "usage": [1]}\n\n'],
        [b'data: "a string"\n\n', b"data: [DONE]\n\n"],
        [b"data: \xff\xfe{\n\n"],
    ],
    ids=[
        "array",
        "not-json",
        "choices-object",
        "choice-number",
        "delta-string",
        "content-number",
        "usage-list",
        "string",
        "bad-bytes",
    ],
)
async def test_garbage_is_an_endpoint_down(lines) -> None:
    async with SlowEngine(mode="garbage", garbage=lines) as server:
        with pytest.raises(EndpointDown, match="not an OpenAI stream"):
            await generate(OpenAIEngine(server.url))


async def test_default_garbage_and_garbage_models_mean_down() -> None:
    async with SlowEngine(mode="garbage") as server:
        engine = OpenAIEngine(server.url)
        with pytest.raises(EndpointDown, match="not an OpenAI stream"):
            await generate(engine)
        assert await asyncio.to_thread(engine.probe) is False  # /models answers [1,2,3]
        server.mode = "ok"
        assert await asyncio.to_thread(engine.probe) is True


async def test_endless_pings_end_at_the_time_limit() -> None:
    async with SlowEngine(mode="pings") as server:
        started = time.monotonic()
        answer = await generate(OpenAIEngine(server.url, timeout_s=30), ask(time_limit_s=0.5))
        elapsed = time.monotonic() - started
        assert answer.finish_reason == "timeout"
        assert answer.text == ""
        assert 0.4 < elapsed < 10


async def test_pings_after_some_text_end_at_the_time_limit_with_the_partial_text() -> None:
    async with SlowEngine(tokens=8, delay_s=0.01, pings_while_held=True) as server:
        server.hold()  # after "word1", only pings
        answer = await generate(OpenAIEngine(server.url, timeout_s=30), ask(time_limit_s=0.5))
        assert answer.finish_reason == "timeout"
        assert answer.text == "word1"
        assert server.completed == 0


async def test_a_slow_answer_ends_at_the_time_limit_with_the_partial_text() -> None:
    async with SlowEngine(tokens=200, delay_s=0.02) as server:
        answer = await generate(OpenAIEngine(server.url), ask(max_tokens=200, time_limit_s=0.4))
        assert answer.finish_reason == "timeout"
        assert answer.text.startswith("word1 word2")
        assert answer.text != word_text(200)


async def test_pings_without_a_time_limit_are_down_after_the_timeout() -> None:
    async with SlowEngine(mode="pings") as server:
        started = time.monotonic()
        with pytest.raises(EndpointDown, match="nothing but pings"):
            await generate(OpenAIEngine(server.url, timeout_s=0.5))
        assert time.monotonic() - started < 10


async def test_should_stop_cancels_with_the_partial_text() -> None:
    async with SlowEngine(tokens=200, delay_s=0.01) as server:
        calls = [0]

        def should_stop() -> bool:
            calls[0] += 1
            return calls[0] >= 7  # a few events in (each is a data line and an empty line)

        answer = await generate(OpenAIEngine(server.url), ask(max_tokens=200), should_stop=should_stop)
        assert answer.finish_reason == "cancelled"
        assert answer.text.startswith("word1")
        assert answer.text != word_text(200)
        await server.wait_for(lambda s: s.disconnected == 1)  # the engine hung up
        assert server.completed == 0


async def test_should_stop_is_polled_on_pings_too() -> None:
    async with SlowEngine(mode="pings") as server:
        stop = threading.Event()
        task = asyncio.create_task(generate(OpenAIEngine(server.url, timeout_s=30), should_stop=stop.is_set))
        await asyncio.sleep(0.3)
        assert not task.done()
        stop.set()
        answer = await asyncio.wait_for(task, 5)
        assert answer.finish_reason == "cancelled"


async def test_a_held_answer_waits_for_release() -> None:
    async with SlowEngine(tokens=3, delay_s=0.01) as server:
        server.hold()
        task = asyncio.create_task(generate(OpenAIEngine(server.url)))
        await server.wait_holding(1)
        assert server.requests == 1 and server.completed == 0 and not task.done()
        server.release()
        answer = await asyncio.wait_for(task, 5)
        assert answer.text == word_text(3)
        assert server.completed == 1


async def test_a_redirect_is_not_followed_and_the_key_goes_nowhere(caplog) -> None:
    async with SlowEngine(mode="redirect") as server:
        engine = OpenAIEngine(server.url, api_key=KEY)
        with caplog.at_level(logging.DEBUG, logger="bot.engine.openai"):
            with pytest.raises(EndpointDown, match=r"answered a redirect \(engines follow none\)"):
                await generate(engine)
            assert await asyncio.to_thread(engine.probe) is False
            await asyncio.to_thread(engine.load)  # never raises
        assert server.redirect_hits == 0
        assert server.redirect_authorizations == []
        assert "localhost" in caplog.text  # the log names where it pointed
        assert KEY not in caplog.text

        # the target is real: a client that follows redirects (stock urllib) gets there, key and all
        req = urllib.request.Request(server.url + "/models", headers={"Authorization": f"Bearer {KEY}"})
        await asyncio.to_thread(lambda: urllib.request.urlopen(req, timeout=5).close())
        assert server.redirect_hits == 1
        assert server.redirect_authorizations == [f"Bearer {KEY}"]


async def test_a_port_that_is_not_http_is_down_and_never_raises_anything_else() -> None:
    async with not_http_server() as url:
        engine = OpenAIEngine(url, timeout_s=5)
        assert await asyncio.to_thread(engine.probe) is False
        await asyncio.to_thread(engine.load)
        with pytest.raises(EndpointDown):
            await generate(engine)


async def test_http_500_fails_the_job_only_and_503_is_down() -> None:
    async with SlowEngine(mode="error500") as server:
        engine = OpenAIEngine(server.url)
        with pytest.raises(EngineError, match="failed on this question") as info:
            await generate(engine)
        assert not isinstance(info.value, EndpointDown)
        assert await asyncio.to_thread(engine.probe) is True
        server.mode = "down503"
        with pytest.raises(EndpointDown, match="HTTP 503"):
            await generate(engine)
        assert await asyncio.to_thread(engine.probe) is False


async def test_a_server_that_never_answers_is_down_after_the_timeout() -> None:
    async with SlowEngine(mode="hang") as server:
        engine = OpenAIEngine(server.url, timeout_s=0.5)
        started = time.monotonic()
        with pytest.raises(EndpointDown):
            await generate(engine, ask(time_limit_s=0.2))
        assert await asyncio.to_thread(engine.probe) is False
        await asyncio.to_thread(engine.load)
        assert time.monotonic() - started < 10


async def test_no_credentials_in_the_name_info_or_repr() -> None:
    async with SlowEngine(tokens=2, delay_s=0.0) as server:
        url = server.url.replace("http://", "http://user:secret@")
        engine = OpenAIEngine(url)
        shown = [engine.name, engine.url, repr(engine), repr(engine.info), *map(str, dataclasses.astuple(engine.info))]
        assert not any("secret" in s or "user:" in s for s in shown), shown
        assert engine.name == engine.info.name == engine.info.url == server.url
        assert engine.info.text_backend == engine.info.clip_backend == "remote"
        # the credentials still work, as HTTP basic auth to that host
        answer = await generate(engine)
        assert answer.text == word_text(2)
        assert server.last_authorization == "Basic " + base64.b64encode(b"user:secret").decode()
        # an API key wins over them
        await generate(OpenAIEngine(url, api_key=KEY))
        assert server.last_authorization == f"Bearer {KEY}"


async def test_a_given_name_is_kept() -> None:
    engine = OpenAIEngine("http://127.0.0.1:1/v1/", name="gpu-box")
    assert engine.info.name == "gpu-box"
    assert engine.info.url == "http://127.0.0.1:1/v1"


@pytest.mark.parametrize("url", ["ftp://127.0.0.1:1/v1", "file:///etc", "http://[::1/v1", "not a url"])
async def test_a_wrong_url_never_raises_at_start_and_fails_as_an_engine_error(url) -> None:
    engine = OpenAIEngine(url, timeout_s=1)
    assert await asyncio.to_thread(engine.probe) is False
    await asyncio.to_thread(engine.load)
    with pytest.raises(EngineError):
        await generate(engine)


async def test_a_4xx_is_a_request_error() -> None:
    async with SlowEngine() as server:
        engine = OpenAIEngine(server.url.replace("/v1", "/nope"))
        with pytest.raises(RequestError, match="HTTP 404"):
            await generate(engine)


async def test_text_is_handed_out_as_the_stream_arrives() -> None:
    async with SlowEngine(tokens=5, delay_s=0.05) as server:
        pieces: list[str] = []
        answer = await generate(OpenAIEngine(server.url), ask(max_tokens=8), on_text=pieces.append)
        assert pieces == ["word1", " word2", " word3", " word4", " word5"]
        assert "".join(pieces) == answer.text
