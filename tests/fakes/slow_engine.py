"""A small OpenAI-compatible server for deterministic tests of remote engines.

Real servers (llama-cpp-python's, llama-server) are slow to start and cannot
be told to misbehave.  :class:`SlowEngine` answers ``/v1/chat/completions``
with a stream of word tokens at a fixed pace, and can be switched at run time
into each way a remote engine goes wrong: garbage, endless pings, redirects,
HTTP 500 / 503, a server that never answers.  It can also hold answers in the
middle until the test releases them, so a test can see a job in flight.

It runs on the test's event loop (aiohttp on 127.0.0.1, a free port), while the
blocking :class:`bot.engine.openai.OpenAIEngine` runs in a thread
(``asyncio.to_thread``)::

    async with SlowEngine(tokens=4, delay_s=0.01) as server:
        engine = OpenAIEngine(server.url)
        answer = await asyncio.to_thread(engine.generate, request)
        server.mode = "down503"

:func:`not_http_server` is a TCP port that is not an HTTP server at all (an
engine configured with the wrong port).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from aiohttp import web

#: what ``mode`` can be
MODES = ("ok", "garbage", "pings", "redirect", "error500", "down503", "hang")

#: what the "garbage" mode streams with a 200: a JSON array, then not JSON at all
GARBAGE_LINES = (b"data: [1,2,3]\n\n", b"data: <html>not json</html>\n\n", b"data: [DONE]\n\n")


class SlowEngine:
    """An OpenAI-compatible server on 127.0.0.1 whose answers come slowly and on demand.

    ``GET /v1/models`` answers a JSON object (a list with one model).
    ``POST /v1/chat/completions`` (streamed) answers, in mode "ok",
    ``min(tokens, max_tokens)`` word tokens ``word1 word2 ...`` (the first
    delta also carries ``role``), each after ``delay_s``, then a final chunk
    with ``finish_reason`` ("length" when ``max_tokens`` cut it, else "stop")
    and ``usage``, then ``data: [DONE]``.

    Modes (set ``server.mode`` at any time; it applies to requests that start later):

    * "ok": as above;
    * "garbage": 200 and the ``garbage`` lines (default :data:`GARBAGE_LINES`:
      ``data: [1,2,3]``, a non-JSON line); ``/models`` answers ``[1,2,3]``;
    * "pings": 200 and only ``: ping`` comment lines, one every 0.05 s, until
      the client goes away or the server closes; ``/models`` answers normally;
    * "redirect": 302 to ``redirect_to`` (default: this server's ``/elsewhere``
      under the name ``localhost``, another host for the client), for both
      routes; the target records whether anyone came and with which
      Authorization header;
    * "error500": chat completions answer HTTP 500, ``/models`` answers normally;
    * "down503": both routes answer HTTP 503;
    * "hang": both routes accept the request and never answer (until the server closes).
    """

    def __init__(
        self,
        *,
        tokens: int = 8,
        delay_s: float = 0.1,
        mode: str = "ok",
        model: str = "slow-engine",
        prompt_tokens: int = 16,
        server_timings: bool = False,
        redirect_to: str | None = None,
        garbage: Sequence[bytes] = GARBAGE_LINES,
        pings_while_held: bool = False,
        answer: Callable[[dict[str, Any]], str] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
        #: word tokens an "ok" answer has (fewer when the request's max_tokens is lower)
        self.tokens = tokens
        #: seconds before each token
        self.delay_s = delay_s
        #: one of :data:`MODES`
        self.mode = mode
        self.model = model
        #: usage.prompt_tokens reported in the final chunk
        self.prompt_tokens = prompt_tokens
        #: also send llama-server-style ``timings`` (prompt_ms, predicted_ms, ...) in the final chunk
        self.server_timings = server_timings
        #: where "redirect" sends clients (None: http://localhost:PORT/elsewhere)
        self.redirect_to = redirect_to
        #: the raw lines the "garbage" mode writes after its 200
        self.garbage = tuple(garbage)
        #: held answers send ``: ping`` every 0.05 s while they wait (else they are silent)
        self.pings_while_held = pings_while_held
        #: what to answer, from the request's JSON body (None: ``word1 word2 ...``); its words
        #: are the tokens, ``tokens`` of them at most
        self.answer = answer
        self.port = 0
        #: chat completions started (any mode)
        self.requests = 0
        #: chat completions answered to the end (``data: [DONE]`` written)
        self.completed = 0
        #: streams whose client went away before the end (a cancel, a timeout)
        self.disconnected = 0
        #: GET /models calls (probes)
        self.probes = 0
        #: the last chat completion request's JSON body (None before the first, or when not JSON)
        self.last_body: dict[str, Any] | None = None
        #: every chat completion request's body, oldest first
        self.bodies: list[Any] = []
        #: the Authorization header of the last request to either route (None when absent)
        self.last_authorization: str | None = None
        #: requests that reached the redirect target, and the Authorization headers they carried
        self.redirect_hits = 0
        self.redirect_authorizations: list[str | None] = []
        #: answers now waiting at the hold gate (after their first token)
        self.holding = 0
        self._gate = asyncio.Event()
        self._gate.set()
        self._closing = asyncio.Event()
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None

    # -- lifecycle ---------------------------------------------------------------

    @property
    def url(self) -> str:
        """The API base to give an engine: ``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> SlowEngine:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_route("*", "/elsewhere{tail:.*}", self._elsewhere)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        """Stop: held, pinging and hanging requests end, connections close."""
        self._closing.set()
        self._gate.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SlowEngine:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- test controls -----------------------------------------------------------

    def hold(self) -> None:
        """From now on "ok" answers stop after their first token until :meth:`release`."""
        self._gate.clear()

    def release(self) -> None:
        """Let held answers (and later ones) go on."""
        self._gate.set()

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> None:
        """Wait until ``predicate(self)`` is true (checked whenever a counter changes)."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the slow engine never reached the expected state")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.1))

    async def wait_holding(self, count: int = 1, timeout: float = 10.0) -> None:
        """Wait until ``count`` answers are held at the gate."""
        await self.wait_for(lambda s: s.holding >= count, timeout)

    def _bump(self) -> None:
        self._changed.set()

    # -- routes --------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.StreamResponse:
        self.probes += 1
        self.last_authorization = request.headers.get("Authorization")
        self._bump()
        mode = self.mode
        if mode in ("redirect", "down503", "hang"):
            return await self._misbehave(mode)
        if mode == "garbage":
            return web.Response(body=b"[1,2,3]", content_type="application/json")
        body = {"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "slow-engine"}]}
        return web.Response(body=json.dumps(body).encode(), content_type="application/json")

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        self.last_authorization = request.headers.get("Authorization")
        try:
            body = await request.json()
        except ValueError:
            body = None
        self.bodies.append(body)
        self.last_body = body if isinstance(body, dict) else None
        self._bump()
        mode = self.mode
        if mode in ("redirect", "down503", "hang"):
            return await self._misbehave(mode)
        if mode == "error500":
            return web.Response(status=500, text="the slow engine failed on purpose")
        stream = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await stream.prepare(request)
        try:
            if mode == "garbage":
                for line in self.garbage:
                    await stream.write(line)
            elif mode == "pings":
                await self._pings(stream)
            else:
                await self._answer(stream, self.last_body or {})
        except ConnectionError:
            self.disconnected += 1
            self._bump()
        return stream

    async def _elsewhere(self, request: web.Request) -> web.StreamResponse:
        self.redirect_hits += 1
        self.redirect_authorizations.append(request.headers.get("Authorization"))
        self._bump()
        return web.Response(body=b'{"object": "list", "data": []}', content_type="application/json")

    async def _misbehave(self, mode: str) -> web.StreamResponse:
        if mode == "redirect":
            target = self.redirect_to or f"http://localhost:{self.port}/elsewhere"
            return web.Response(status=302, headers={"Location": target})
        if mode == "down503":
            return web.Response(status=503, text="the slow engine is down on purpose")
        await self._closing.wait()  # "hang": never answer
        return web.Response(status=503)

    # -- streams -------------------------------------------------------------------

    async def _pings(self, stream: web.StreamResponse) -> None:
        while not self._closing.is_set():
            await stream.write(b": ping\n\n")
            await asyncio.sleep(0.05)

    async def _answer(self, stream: web.StreamResponse, body: dict[str, Any]) -> None:
        started = time.perf_counter()
        max_tokens = body.get("max_tokens")
        words = self.answer(body).split() if self.answer is not None else [f"word{i + 1}" for i in range(self.tokens)]
        whole = min(self.tokens, len(words))
        count = whole if not isinstance(max_tokens, int) else max(0, min(whole, max_tokens))
        first_at = None
        for i in range(count):
            if i == 1:
                await self._wait_gate(stream)
            await asyncio.sleep(self.delay_s)
            delta: dict[str, Any] = {"content": words[i] if i == 0 else f" {words[i]}"}
            if i == 0:
                delta["role"] = "assistant"
                first_at = time.perf_counter()
            await _send(stream, self._chunk([{"index": 0, "delta": delta, "finish_reason": None}]))
        finish = "length" if count < whole else "stop"
        final = self._chunk([{"index": 0, "delta": {}, "finish_reason": finish}])
        final["usage"] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": count,
            "total_tokens": self.prompt_tokens + count,
        }
        if self.server_timings:
            done = time.perf_counter()
            prompt_ms = ((first_at or done) - started) * 1000
            final["timings"] = {
                "prompt_n": self.prompt_tokens,
                "prompt_ms": prompt_ms,
                "predicted_n": count,
                "predicted_ms": (done - started) * 1000 - prompt_ms,
            }
        await _send(stream, final)
        await stream.write(b"data: [DONE]\n\n")
        self.completed += 1
        self._bump()

    async def _wait_gate(self, stream: web.StreamResponse) -> None:
        if self._gate.is_set():
            return
        self.holding += 1
        self._bump()
        try:
            while not self._gate.is_set():
                if self.pings_while_held:
                    await stream.write(b": ping\n\n")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._gate.wait(), 0.05)
        finally:
            self.holding -= 1
            self._bump()

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": "chatcmpl-slow",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model,
            "choices": choices,
        }


async def _send(stream: web.StreamResponse, event: dict[str, Any]) -> None:
    await stream.write(b"data: " + json.dumps(event).encode() + b"\n\n")


@contextlib.asynccontextmanager
async def not_http_server(junk: bytes = b"SSH-2.0-OpenSSH_9.6 not http\r\n\x00\xff\xfe garbage") -> AsyncIterator[str]:
    """A TCP port on 127.0.0.1 that is not an HTTP server: it reads the request,
    writes ``junk`` and closes.  Yields an engine URL for it (``http://127.0.0.1:PORT/v1``)::

        async with not_http_server() as url:
            assert OpenAIEngine(url).probe() is False
    """

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(_read_request(reader), 2)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        try:
            writer.write(junk)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.close()
        await server.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> None:
    """Read one HTTP request's head and body, so closing does not reset the connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length:
        await reader.readexactly(length)


def word_text(count: int) -> str:
    """The text of an "ok" answer of ``count`` tokens: ``word1 word2 ... wordN``."""
    return " ".join(f"word{i + 1}" for i in range(count))


__all__ = ["GARBAGE_LINES", "MODES", "SlowEngine", "not_http_server", "word_text"]
