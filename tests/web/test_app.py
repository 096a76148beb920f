"""The playground's HTTP API against the real stack: Runtime, queue and llama.cpp
engine on the built-in tiny model (and the slow OpenAI-compatible server for pacing)."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncIterator

import pytest

from bot.reply import CONVERSATION_EXPIRED, WEB_BAD_MAX_TOKENS, WEB_NO_IMAGE, WEB_NOT_A_FORM, friendly
from tests.fakes.slow_engine import SlowEngine, word_text
from tests.helpers import jpeg_bytes
from tests.web.helpers import FOOTER, all_events, answer_part, form, iter_events

NOT_AN_IMAGE = "⚠️ That file is not an image."


def record_requests(runtime) -> list:
    """Every request the runtime queues, in order (the engine gets exactly these)."""
    seen: list = []
    submit = runtime.submit

    def recording(request, *args, **kwargs):
        seen.append(request)
        return submit(request, *args, **kwargs)

    runtime.submit = recording
    return seen


def gate_engine(runtime) -> threading.Semaphore:
    """Each answer waits for one ``release()`` of the returned semaphore."""
    gate = threading.Semaphore(0)
    engine = runtime.engine
    generate = engine.generate

    def held(request, **kwargs):
        if not gate.acquire(timeout=10):
            raise AssertionError("the test never released the engine")
        return generate(request, **kwargs)

    engine.generate = held
    return gate


async def wait_until(predicate, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("the expected state never came")
        await asyncio.sleep(0.01)


async def ask(client, **kwargs) -> list[tuple[str, dict]]:
    async with client.post("/api/ask", data=form(**kwargs)) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        return await all_events(resp)


def only(events: list[tuple[str, dict]], name: str) -> dict:
    found = [data for event, data in events if event == name]
    assert len(found) == 1, events
    return found[0]


# -- the page -------------------------------------------------------------------


async def test_the_page_and_its_files_come_from_this_server_only(playground) -> None:
    client, _ = await playground()
    texts = {}
    for path in ("/", "/static/app.css", "/static/app.js", "/static/icon.svg"):
        async with client.get(path) as resp:
            assert resp.status == 200, path
            assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
            texts[path] = await resp.text()
    page = texts["/"]
    assert '<script src="/static/app.js"' in page and 'href="/static/app.css"' in page
    for path, text in texts.items():
        # no script, style, font or image from another host (the SVG's xmlns is a name, not a fetch)
        assert not re.search(r"(src|href|url)\s*[=(]\s*[\"']?(https?:)?//", text), path
        assert "@import" not in text and "@font-face" not in text, path
    for label in ('for="image"', 'for="question"', 'for="max-tokens"'):
        assert label in page
    async with client.get("/static/..%2Fapp.py") as resp:
        assert resp.status == 404


async def test_info_tells_the_page_the_model_and_the_caps(playground) -> None:
    client, runtime = await playground(images={"max_bytes": 5_000_000})
    async with client.get("/api/info") as resp:
        info = await resp.json()
    assert info["model"] == runtime.engine.info.model
    assert (info["max_tokens"], info["max_tokens_limit"], info["max_bytes"]) == (16, 64, 5_000_000)


# -- answers --------------------------------------------------------------------


async def test_an_answer_streams_as_deltas_then_done_with_the_footer(playground) -> None:
    client, _ = await playground()
    events = await ask(client, image=jpeg_bytes(), max_tokens=12)
    names = [event for event, _ in events]
    assert names[-1] == "done" and names.count("done") == 1 and "error" not in names
    assert "queued" not in names  # the engine was free
    deltas = [data["text"] for event, data in events if event == "delta"]
    assert deltas and set(names[:-1]) == {"delta"}
    done = events[-1][1]
    assert "".join(deltas).strip() == answer_part(done["text"])
    assert FOOTER.match(done["footer"]), done["footer"]
    assert done["finish_reason"] in ("stop", "length")
    assert done["timings"]["completion_tokens"] >= 1 and "queue_wait_s" in done["timings"]
    assert re.fullmatch(r"[\w-]{16,}", done["conversation"])


async def test_deltas_arrive_at_the_engines_pace_before_the_answer_ends() -> None:
    """Over the OpenAI-compatible engine: one delta per token, each before the next is generated."""
    from aiohttp.test_utils import TestClient, TestServer

    from bot.config import load_settings
    from bot.runtime import Runtime
    from bot.web import create_app

    async with SlowEngine(tokens=5, delay_s=0.15) as server:
        settings = load_settings(overrides={"engines": [{"kind": "openai", "url": server.url}], "state": {"journal": False}})
        runtime = Runtime(settings)
        await runtime.start()
        client = TestClient(TestServer(create_app(runtime, settings.web)))
        await client.start_server()
        try:
            arrivals = []
            loop = asyncio.get_running_loop()
            async with client.post("/api/ask", data=form(image=jpeg_bytes())) as resp:
                async for event, data in iter_events(resp):
                    arrivals.append((loop.time(), event, data))
        finally:
            await client.close()
            await runtime.close()
    deltas = [(t, d["text"]) for t, e, d in arrivals if e == "delta"]
    assert "".join(text for _, text in deltas) == word_text(5)
    assert len(deltas) == 5  # each token as it came, not gathered at the end
    done_at, event, done = arrivals[-1]
    assert event == "done" and done["text"] == word_text(5)
    assert done_at - deltas[0][0] >= 0.4  # the first words were shown while the rest was generated


async def test_a_follow_up_sends_the_image_and_the_earlier_turn(playground) -> None:
    client, runtime = await playground()
    seen = record_requests(runtime)
    first = await ask(client, image=jpeg_bytes(), question="What is this?")
    first_done = only(first, "done")
    follow = await ask(client, question="And the colour?", conversation=first_done["conversation"])
    done = only(follow, "done")
    assert done["conversation"] == first_done["conversation"]
    assert len(seen) == 2
    assert seen[1].images == seen[0].images
    assert seen[1].history == ((seen[0].question, answer_part(first_done["text"])),)
    assert seen[1].question == "And the colour?"
    # a script may send a follow-up as a plain urlencoded form
    async with client.post("/api/ask", data={"question": "Anything else?", "conversation": done["conversation"]}) as resp:
        only(await all_events(resp), "done")
    assert [q for q, _ in seen[2].history] == ["What is this?", "And the colour?"]


async def test_a_new_image_starts_a_new_conversation(playground) -> None:
    client, runtime = await playground()
    seen = record_requests(runtime)
    first = only(await ask(client, image=jpeg_bytes()), "done")
    second = only(await ask(client, image=jpeg_bytes(), conversation=first["conversation"]), "done")
    assert second["conversation"] != first["conversation"] and seen[1].history == ()


async def test_max_tokens_is_clamped_by_the_settings(playground) -> None:
    client, runtime = await playground()
    seen = record_requests(runtime)
    only(await ask(client, image=jpeg_bytes(), max_tokens=100000), "done")
    only(await ask(client, image=jpeg_bytes()), "done")
    assert [r.max_tokens for r in seen] == [64, 16]


# -- refusals: one line each, and the client's place given back ----------------------


async def test_a_text_file_gets_the_same_line_as_in_discord(playground) -> None:
    client, _ = await playground(queue={"per_user": 1})
    for _ in range(2):  # the place is given back each time (per_user is 1)
        events = await ask(client, image=b"just some text, not a picture\n")
        assert events == [("error", {"message": NOT_AN_IMAGE})]
    only(await ask(client, image=jpeg_bytes()), "done")


@pytest.mark.parametrize(
    ("fields", "line"),
    [
        ({}, friendly(WEB_NO_IMAGE)),
        ({"conversation": "no-such-conversation"}, friendly(CONVERSATION_EXPIRED)),
        ({"image": b"x", "max_tokens": "lots"}, friendly(WEB_BAD_MAX_TOKENS)),
    ],
)
async def test_bad_forms_get_one_line(playground, fields: dict, line: str) -> None:
    client, _ = await playground()
    events = await ask(client, **fields)
    assert [event for event, _ in events] == ["error"] and events[0][1]["message"] == line


async def test_an_unknown_conversation_says_it_expired(playground) -> None:
    client, _ = await playground()
    events = await ask(client, conversation="expired-or-never-was", question="and?")
    assert events == [
        ("error", {"message": "⚠️ That conversation has expired; please send the image again.", "code": "conversation_expired"})
    ]


async def test_a_body_that_is_not_a_form_is_refused(playground) -> None:
    client, _ = await playground()
    async with client.post("/api/ask", json={"question": "hi"}) as resp:
        assert await all_events(resp) == [("error", {"message": friendly(WEB_NOT_A_FORM)})]


async def test_an_upload_declared_too_large_is_refused_unread(playground) -> None:
    client, _ = await playground(images={"max_bytes": 1024 * 1024})
    events = await ask(client, image=b"\xff\xd8" + bytes(3 * 1024 * 1024))
    assert [event for event, _ in events] == ["error"]
    assert re.fullmatch(r"⚠️ File is 3\.\d MB, the limit is 1 MB\.", events[0][1]["message"]), events


async def test_an_upload_growing_past_the_cap_is_cut_off_while_read(playground) -> None:
    """A chunked upload (no declared size): the error comes while the client is
    still sending, just past the cap and long before the end of the body."""
    mib, chunk, total = 1024 * 1024, 64 * 1024, 256  # a 16 MiB body against a 1 MiB cap
    client, _ = await playground(images={"max_bytes": mib})
    sent = [0]
    error_seen = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b'--XyZ\r\nContent-Disposition: form-data; name="image"; filename="big.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        for _ in range(total):
            if sent[0] > mib + 4 * chunk:  # past the cap: wait for the server's answer before sending more
                await asyncio.wait_for(error_seen.wait(), 10)
                return
            sent[0] += chunk
            yield bytes(chunk)

    headers = {"Content-Type": "multipart/form-data; boundary=XyZ"}
    async with client.post("/api/ask", data=body(), headers=headers) as resp:
        events = []
        async for event in iter_events(resp):
            events.append(event)
            error_seen.set()
    assert events == [("error", {"message": "⚠️ File is 1.1 MB, the limit is 1 MB."})]
    assert sent[0] <= mib + 5 * chunk  # the other 14 MiB were never sent, let alone read


async def test_the_per_client_limit_refuses_with_the_users_line(playground) -> None:
    client, runtime = await playground(queue={"per_user": 1})
    gate = gate_engine(runtime)
    async with client.post("/api/ask", data=form(image=jpeg_bytes())) as first:
        await wait_until(lambda: runtime.queue.stats().busy == 1)
        refused = await ask(client, image=jpeg_bytes())
        assert refused == [("error", {"message": "⚠️ You already have 1 question(s) waiting; please wait for an answer first."})]
        gate.release()
        only(await all_events(first), "done")
    gate.release()
    only(await ask(client, image=jpeg_bytes()), "done")  # the place came back


async def test_a_waiting_question_sees_its_place_in_line_change(playground) -> None:
    client, runtime = await playground(queue={"per_user": 3})
    gate = gate_engine(runtime)
    responses = []
    for waiting in (0, 1, 2):
        responses.append(await client.post("/api/ask", data=form(image=jpeg_bytes())))
        await wait_until(lambda w=waiting: runtime.queue.stats().depth == w and runtime.queue.stats().busy == 1)
    streams = [iter_events(resp) for resp in responses]
    assert await anext(streams[1]) == ("queued", {"position": 1})
    assert await anext(streams[2]) == ("queued", {"position": 2})
    gate.release()  # the first answer ends; the second takes the engine and waits at the gate
    assert await anext(streams[2]) == ("queued", {"position": 1})
    gate.release()
    gate.release()
    for stream in streams:
        rest = [event async for event in stream]
        assert rest[-1][0] == "done" and "error" not in [e for e, _ in rest]
    for resp in responses:
        resp.close()


async def test_a_client_that_leaves_while_waiting_drops_its_job(playground) -> None:
    client, runtime = await playground(queue={"per_user": 2})
    gate = gate_engine(runtime)
    async with client.post("/api/ask", data=form(image=jpeg_bytes())) as running:
        await wait_until(lambda: runtime.queue.stats().busy == 1)
        waiting = await client.post("/api/ask", data=form(image=jpeg_bytes()))
        assert await anext(iter_events(waiting)) == ("queued", {"position": 1})
        waiting.close()  # the page was closed
        await wait_until(lambda: runtime.queue.stats().cancelled == 1 and runtime.queue.stats().depth == 0)
        gate.release()
        only(await all_events(running), "done")
    assert runtime.queue.stats().served == 1
    gate.release()
    only(await ask(client, image=jpeg_bytes()), "done")  # both places came back (per_user 2)


# -- who may ask ------------------------------------------------------------------------


async def test_with_a_token_every_api_request_needs_it(playground, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAVA_BOT_WEB__TOKEN", "correct horse battery")
    client, _ = await playground()
    async with client.get("/") as resp:
        assert resp.status == 200  # the page itself asks for the token
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic correct horse battery"}):
        async with client.post("/api/ask", data=form(image=b"text"), headers=headers) as resp:
            assert resp.status == 401 and resp.headers["WWW-Authenticate"] == "Bearer"
            assert (await resp.json())["error"] == "⚠️ This playground needs its access token."
        async with client.get("/api/info", headers=headers) as resp:
            assert resp.status == 401
    good = {"Authorization": "Bearer correct horse battery"}
    async with client.post("/api/ask", data=form(image=b"text"), headers=good) as resp:
        assert await all_events(resp) == [("error", {"message": NOT_AN_IMAGE})]


async def test_requests_from_other_sites_and_other_host_names_are_refused(playground) -> None:
    client, _ = await playground()
    async with client.post("/api/ask", data=form(image=b"x"), headers={"Origin": "http://evil.example"}) as resp:
        assert resp.status == 403
    async with client.get("/", headers={"Host": "rebound.example:8765"}) as resp:
        assert resp.status == 421  # DNS rebinding: a loopback page answers only to loopback names
    origin = str(client.make_url("/")).rstrip("/")
    async with client.post("/api/ask", data=form(image=b"x"), headers={"Origin": origin}) as resp:
        assert await all_events(resp) == [("error", {"message": NOT_AN_IMAGE})]


async def test_a_public_address_needs_a_token(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from bot.cli import main
    from bot.config import ConfigError, WebSettings
    from bot.web import check_bind

    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_bind(WebSettings(host=host))
    check_bind(WebSettings(host="0.0.0.0", token="s3cret-enough"))
    with pytest.raises(ConfigError, match=r"^config error: web\.host is 0\.0\.0\.0, which other machines can reach: set a token"):
        check_bind(WebSettings(host="0.0.0.0"))
    monkeypatch.delenv("LLAVA_BOT_WEB__TOKEN", raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 2  # refused before the model loads
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["llava-bot: config error: web.host is 0.0.0.0, which other machines can reach: "
                   "set a token in the LLAVA_BOT_WEB__TOKEN environment variable, or bind 127.0.0.1"]


async def test_conversations_are_bounded_and_expire() -> None:
    from bot.images import prepare_image
    from bot.web.conversations import Conversations

    now = [0.0]
    table = Conversations(capacity=2, ttl_s=60, max_turns=2, clock=lambda: now[0])
    image = prepare_image(jpeg_bytes())
    a = table.record(None, image, "q1", "a1")
    b = table.record(None, image, "q2", "a2")
    assert table.get(a.id) is a  # a is now the most recently used
    c = table.record(None, image, "q3", "a3")
    assert table.get(b.id) is None and len(table) == 2  # b went first
    for turn in ("q4", "q5"):
        table.record(a, image, turn, "x")
    assert [q for q, _ in a.history()] == ["q4", "q5"]  # the last max_turns only
    now[0] = 61
    assert table.get(a.id) is None and table.get(c.id) is None and len(table) == 0


async def test_a_client_that_leaves_mid_answer_lets_it_finish(playground) -> None:
    client, runtime = await playground(queue={"per_user": 1})
    gate = gate_engine(runtime)
    resp = await client.post("/api/ask", data=form(image=jpeg_bytes()))
    await wait_until(lambda: runtime.queue.stats().busy == 1)
    resp.close()  # the page was closed while the answer was being generated
    gate.release()
    await wait_until(lambda: runtime.queue.stats().served == 1)
    gate.release()
    only(await ask(client, image=jpeg_bytes()), "done")  # and its place came back (per_user 1)
    assert runtime.queue.stats().cancelled == 0


async def test_a_client_that_leaves_during_the_upload_gives_its_place_back(playground) -> None:
    client, runtime = await playground(queue={"per_user": 1})
    stalled = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b'--XyZ\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n' + bytes(1000)
        stalled.set()
        await asyncio.sleep(30)  # never finishes: the client goes away first
        yield b""

    headers = {"Content-Type": "multipart/form-data; boundary=XyZ"}
    upload = asyncio.create_task(client.post("/api/ask", data=body(), headers=headers))
    await stalled.wait()
    resp = await upload
    resp.close()
    await asyncio.sleep(0.2)
    only(await ask(client, image=jpeg_bytes()), "done")  # per_user 1: the place came back




async def test_stopping_tells_the_waiting_and_finishes_the_running(tiny_pair, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    import aiohttp

    from bot.reply import WEB_STOPPING
    from bot.runtime import Runtime
    from bot.web.server import WebServer, shut_down
    from tests.web.helpers import tiny_settings

    monkeypatch.chdir(tmp_path)
    settings = tiny_settings(tiny_pair, web={"port": 0})
    runtime = Runtime(settings)
    await runtime.start()
    server = WebServer(runtime, settings.web)
    url = await server.start()
    gate = gate_engine(runtime)
    async with aiohttp.ClientSession() as session:
        running = await session.post(url + "api/ask", data=form(image=jpeg_bytes()))
        await wait_until(lambda: runtime.queue.stats().busy == 1)
        waiting = await session.post(url + "api/ask", data=form(image=jpeg_bytes()))
        events = iter_events(waiting)
        assert await anext(events) == ("queued", {"position": 1})
        stopping = asyncio.create_task(shut_down(runtime, server, bound=10))
        assert [event async for event in events] == [("error", {"message": friendly(WEB_STOPPING)})]
        gate.release()
        only(await all_events(running), "done")
        await asyncio.wait_for(stopping, 10)
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(url)
