"""Two real llama-cpp-python servers (python -m llama_cpp.server) with the tiny
pair, used as engines through one queue and through the whole bot: both
answer, and killing one loses no job."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from bot.config import load_settings
from bot.engine.openai import OpenAIEngine
from bot.runtime import Runtime
from tests.helpers import jpeg_bytes, picture

pytest.importorskip("uvicorn", reason="needs llama-cpp-python[server] (in the test extra)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(pair, port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(pair[0]), "--clip_model_path", str(pair[1]), "--chat_format", "llava-1-5",
            "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_gpu_layers", "0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ},
    )


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on {port} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"server on {port} did not start")


@pytest.fixture
def servers(tiny_pair):
    ports = [free_port(), free_port()]
    procs = [start_server(tiny_pair, port) for port in ports]
    try:
        for port, proc in zip(ports, procs):
            wait_ready(port, proc)
        yield list(zip(ports, procs))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def count_calls(engine) -> list[int]:
    calls = [0]
    original = engine.generate

    def generate(request, **kw):
        answer = original(request, **kw)
        calls[0] += 1
        return answer

    engine.generate = generate
    return calls


def remote_settings(ports):
    return load_settings(
        overrides={
            "engines": [{"kind": "openai", "url": f"http://127.0.0.1:{p}/v1", "name": f"server-{p}"} for p in ports],
            "generation": {"max_tokens": 8},
            "queue": {"max_size": 100, "per_user": 100, "per_user_per_minute": 0},
        }
    )


@pytest.mark.slow
async def test_one_engine_answers_with_timings(servers) -> None:
    (port, _), _ = servers
    engine = OpenAIEngine(f"http://127.0.0.1:{port}/v1")
    from bot.images import prepare_image

    prepared = prepare_image(jpeg_bytes())
    from bot.engine.base import VisionRequest

    answer = await asyncio.to_thread(
        engine.generate, VisionRequest(images=(prepared.data_uri,), question="What is it?", max_tokens=8, temperature=0)
    )
    assert answer.text
    assert 1 <= answer.completion_tokens <= 8 + 4
    assert answer.timings.total_s > 0 and answer.timings.first_token_s > 0
    assert engine.probe() is True


@pytest.mark.slow
async def test_questions_are_answered_through_both_and_a_killed_server_loses_no_job(servers, tiny_pair) -> None:
    ports = [port for port, _ in servers]
    runtime = Runtime(remote_settings(ports))
    runtime.queue.retry_s = 0.2
    await runtime.start()
    calls = [count_calls(engine) for engine in runtime.engines]
    try:
        prepared = [await runtime.prepare(jpeg_bytes(picture(colour=(i * 20, 100, 50)))) for i in range(12)]
        handles = [runtime.submit(runtime.request([p], f"question {i}"), user_id=i) for i, p in enumerate(prepared)]
        first = [await h.result() for h in handles]
        assert all(a.text for a in first)
        assert all(c[0] > 0 for c in calls), f"both servers should have answered: {calls}"

        # kill the first server while a backlog is waiting
        handles = [runtime.submit(runtime.request([p], f"again {i}"), user_id=i) for i, p in enumerate(prepared)]
        servers[0][1].kill()
        answers = [await h.result() for h in handles]
        assert len(answers) == len(handles) and all(a.text for a in answers)  # none lost
        assert runtime.queue.stats().failed == 0
        assert f"server-{ports[0]}" in runtime.queue.down
    finally:
        await runtime.close()


@pytest.mark.slow
async def test_a_question_the_server_fails_on_fails_that_job_only(servers) -> None:
    """llama-cpp-python's server swallows the error of an undecodable image into an empty 200 stream."""
    port = servers[1][0]
    engine = OpenAIEngine(f"http://127.0.0.1:{port}/v1")
    from bot.engine.base import EndpointDown, EngineError, VisionRequest

    with pytest.raises(EngineError, match="the model server failed on this question") as info:
        await asyncio.to_thread(
            engine.generate, VisionRequest(images=("data:image/jpeg;base64,AAAA",), question="q", max_tokens=4)
        )
    assert not isinstance(info.value, EndpointDown)  # the server is up: no failover
    assert engine.probe()


async def test_an_unreachable_server_is_an_endpoint_down() -> None:
    from bot.engine.base import EndpointDown, VisionRequest

    engine = OpenAIEngine(f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(EndpointDown):
        await asyncio.to_thread(engine.generate, VisionRequest(images=(), question="q", max_tokens=4))
    assert engine.probe() is False


@pytest.mark.slow
async def test_through_the_bot_a_killed_server_loses_no_question(servers, fake, llava) -> None:
    from bot.testing.fake_discord import BOT_ID, GENERAL_ID
    from tests.e2e.helpers import FOOTER, ref

    ports = [port for port, _ in servers]
    bot, runtime = await llava(
        engines=[{"kind": "openai", "url": f"http://127.0.0.1:{p}/v1", "name": f"server-{p}"} for p in ports],
        queue={"per_user_per_minute": 0},
    )
    runtime.queue.retry_s = 0.2
    calls = [count_calls(engine) for engine in runtime.engines]
    users = list(range(500, 510))
    for user in users:
        fake.add_user(user, f"user{user}")
    asked = []
    for n, user in enumerate(users):
        att = fake.add_attachment(f"{n}.jpg", jpeg_bytes(picture(colour=(n * 25, 80, 160))))
        asked.append(await fake.user_message(user, GENERAL_ID, f"<@{BOT_ID}> what is it?", attachments=[att], mentions_bot=True))
        if n == 4:
            servers[0][1].kill()  # one server dies with questions in flight
    for msg in asked:
        first = await fake.wait_for_sent(lambda s, m=msg: ref(s) == m["id"], timeout=30)
        final = await fake.wait_for_sent(lambda s, f=first: s["id"] == f["id"] and "⏱" in s["content"], timeout=30)
        assert FOOTER.search(final["content"])
    assert sum(c[0] for c in calls) == len(users)
    assert calls[1][0] >= 5  # the survivor took over
