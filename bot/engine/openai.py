"""An engine for OpenAI-compatible chat-completions servers with vision.

llama.cpp's ``llama-server --mmproj``, llama-cpp-python's own server
(``python -m llama_cpp.server --clip_model_path``), vLLM and Ollama's ``/v1``
all take images as ``data:`` URIs in ``image_url`` content parts.  Like every
engine, this one is blocking and called from its own consumer thread.

Timings: the reply is streamed, so time to first token is measured; when the
server reports ``timings`` (llama-server does: prompt and generation in ms and
token counts) those are used, otherwise the prompt stage (image encode
included, the server does not tell them apart) is the time to first token and
generation is the rest.

A server that cannot be reached, times out, answers 502/503/504, answers
something that is not an OpenAI stream, answers a redirect, or stops in the
middle of a reply and then fails a probe raises :class:`EndpointDown`: the
queue gives the job to another engine and retries this one later.  A server
that is up but fails one question (HTTP 500, an ``error`` event, or a reply
ended early while it still answers probes) fails that job only
(:class:`EngineError`); a 4xx is about the request (:class:`RequestError`).
Nothing else escapes :meth:`OpenAIEngine.generate`, and :meth:`probe` and
:meth:`load` never raise: a remote engine that is down or wrong never stops
the bot from starting.

Safety: no redirect is ever followed and no proxy is used, so the API key
(sent as an unredirected header) reaches only the host in the configured URL.
A ``user:password@`` in the URL is sent as HTTP basic auth (when there is no
API key) and never shown: :attr:`OpenAIEngine.url`, the default name and
:attr:`OpenAIEngine.info` hold the URL without it.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bot.engine.base import (
    Answer,
    EndpointDown,
    EngineError,
    EngineInfo,
    RequestError,
    StageTimings,
    TextSink,
    VisionRequest,
    chat_messages,
)

log = logging.getLogger(__name__)

#: a line of the stream longer than this is not an OpenAI stream
MAX_LINE = 1 << 20
#: the most of a ``/models`` answer read by a probe
MAX_PROBE_BODY = 1 << 20
PROBE_TIMEOUT_S = 5.0
#: what the network stack raises for a server that is unreachable, cut off or not HTTP
#: (OSError covers URLError, timeouts, resets and RemoteDisconnected; ValueError covers
#: UnicodeDecodeError and an unknown URL type)
NETWORK_ERRORS: tuple[type[BaseException], ...] = (OSError, http.client.HTTPException, ValueError)
FAILED = "the model server failed on this question"


def split_userinfo(url: str) -> tuple[str, str | None]:
    """``(url without user:password@, the user:password or None)``; never raises."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url, None
    netloc, slash, path = rest.partition("/")
    if "@" not in netloc:
        return url, None
    userinfo, _, hostport = netloc.rpartition("@")
    return f"{scheme}{sep}{hostport}{slash}{path}", userinfo


def _host_of(url: str) -> str:
    try:
        return urllib.parse.urlsplit(url).hostname or "the same host"
    except ValueError:
        return "an unreadable address"


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """Follows nothing: a 3xx comes back as an :class:`urllib.error.HTTPError`."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class _NotAStream(Exception):
    """The server answered something that is not an OpenAI stream."""


@dataclass(slots=True)
class _Reply:
    """What has been read of one streamed reply so far."""

    started: float
    text: list[str] = field(default_factory=list)
    finish: str = "stop"
    first_token: float | None = None
    chunks: int = 0
    complete: bool = False
    usage: dict[str, Any] = field(default_factory=dict)
    server_timings: dict[str, Any] = field(default_factory=dict)
    sink: TextSink = field(default_factory=lambda: TextSink(None))

    def add(self, event: dict[str, Any]) -> None:
        self.usage = event.get("usage") or self.usage
        self.server_timings = event.get("timings") or self.server_timings
        for choice in event.get("choices") or []:
            delta = (choice.get("delta") or {}).get("content") or ""
            if delta:
                if self.first_token is None:
                    self.first_token = time.perf_counter()
                self.text.append(delta)
                self.sink(delta)
                self.chunks += 1
            self.finish = choice.get("finish_reason") or self.finish

    def stop(self, reason: str) -> None:
        self.finish = reason
        self.complete = True

    def answer(self) -> Answer:
        finished = time.perf_counter()
        usage, server = self.usage, self.server_timings
        timings = StageTimings(total_s=finished - self.started)
        timings.first_token_s = (self.first_token or finished) - self.started
        timings.prompt_tokens = _int(usage.get("prompt_tokens")) or _int(server.get("prompt_n"))
        timings.completion_tokens = _int(usage.get("completion_tokens")) or _int(server.get("predicted_n")) or self.chunks
        prompt_ms, predicted_ms = _float(server.get("prompt_ms")), _float(server.get("predicted_ms"))
        if prompt_ms is not None and predicted_ms is not None:
            timings.prompt_eval_s = prompt_ms / 1000
            timings.generation_s = predicted_ms / 1000
        else:
            timings.prompt_eval_s = timings.first_token_s
            timings.generation_s = max(0.0, timings.total_s - timings.first_token_s)
        return Answer(
            text="".join(self.text).strip(),
            finish_reason=self.finish,
            prompt_tokens=timings.prompt_tokens,
            completion_tokens=timings.completion_tokens,
            timings=timings,
        )


def _int(value: Any) -> int:
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError, OverflowError):
        return 0


def _float(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError, OverflowError):
        return None


def _data_payload(raw: bytes) -> str | None:
    """The payload of an SSE ``data:`` line; None for comments, empty lines and other fields."""
    if len(raw) >= MAX_LINE and not raw.endswith(b"\n"):
        raise _NotAStream("a line of over 1 MiB")
    line = raw.decode("utf-8", "replace").strip()
    if not line.startswith("data:"):
        return None
    return line[5:].strip()


def _parse_event(payload: str) -> dict[str, Any]:
    """One ``data:`` payload as a chat-completion chunk, checked for shape."""
    try:
        event = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise _NotAStream("a data line that is not JSON") from exc
    if not isinstance(event, dict):
        raise _NotAStream("a data line that is not a JSON object")
    for key in ("usage", "timings"):
        if not isinstance(event.get(key) or {}, dict):
            raise _NotAStream(f"{key} that is not an object")
    choices = event.get("choices") or []
    if not isinstance(choices, list):
        raise _NotAStream("choices that are not a list")
    for choice in choices:
        if not isinstance(choice, dict) or not isinstance(choice.get("delta") or {}, dict):
            raise _NotAStream("a choice or delta that is not an object")
        if not isinstance((choice.get("delta") or {}).get("content") or "", str):
            raise _NotAStream("content that is not text")
        if not isinstance(choice.get("finish_reason") or "", str):
            raise _NotAStream("a finish_reason that is not text")
    return event


class OpenAIEngine:
    """One OpenAI-compatible endpoint, e.g. ``http://127.0.0.1:8080/v1``."""

    def __init__(
        self,
        url: str,
        *,
        model: str = "llava",
        api_key: str | None = None,
        timeout_s: float = 120.0,
        name: str | None = None,
    ) -> None:
        #: the API base without any user:password@ (safe to show)
        self.url, userinfo = split_userinfo(url.rstrip("/"))
        self.model = model
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.name = name or self.url
        self._basic_auth = userinfo
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _RefuseRedirects())

    def __repr__(self) -> str:
        return f"OpenAIEngine({self.url!r}, model={self.model!r}, name={self.name!r})"

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(
            name=self.name,
            model=self.model,
            chat_format="server's own",
            text_backend="remote",
            clip_backend="remote",
            url=self.url,
        )

    # -- HTTP --------------------------------------------------------------------

    def _authorization(self) -> str | None:
        if self.api_key:
            return f"Bearer {self.api_key}"
        if self._basic_auth:
            user_pass = urllib.parse.unquote(self._basic_auth)
            return "Basic " + base64.b64encode(user_pass.encode("utf-8")).decode("ascii")
        return None

    def _open(self, path: str, body: dict[str, Any] | None, timeout: float) -> http.client.HTTPResponse:
        """Send one request to this server only (no redirect, no proxy)."""
        url = self.url + path
        if not url.lower().startswith(("http://", "https://")):
            raise ValueError("the engine URL must start with http:// or https://")
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
        req.add_header("Content-Type", "application/json")
        req.add_header("Accept", "application/json, text/event-stream")
        auth = self._authorization()
        if auth:
            # unredirected: urllib would copy an ordinary header into a redirect
            req.add_unredirected_header("Authorization", auth)
        return self._opener.open(req, timeout=timeout)

    def _redirect(self, exc: urllib.error.HTTPError, level: int) -> EndpointDown:
        location = exc.headers.get("Location", "") if exc.headers is not None else ""
        log.log(level, "%s answered a redirect (HTTP %d) to %s; not followed", self.name, exc.code, _host_of(location))
        return EndpointDown(f"{self.name} answered a redirect (engines follow none)")

    def _http_error(self, exc: urllib.error.HTTPError) -> EngineError:
        if 300 <= exc.code < 400:
            return self._redirect(exc, logging.WARNING)
        try:
            detail = exc.read(300).decode("utf-8", "replace")
        except Exception:  # the error body itself was cut off
            detail = ""
        if exc.code in (502, 503, 504):  # a proxy with nothing behind it, overloaded, loading
            return EndpointDown(f"{self.name} answered HTTP {exc.code}: {detail}")
        if exc.code >= 500:  # alive, but this question broke it
            log.warning("%s failed on a question: HTTP %d %s", self.name, exc.code, detail)
            return EngineError(FAILED)
        return RequestError(f"the model server refused the question (HTTP {exc.code})")

    # -- Engine protocol ---------------------------------------------------------

    def probe(self) -> bool:
        """True if the server answers ``GET /models`` with a JSON object.  Never raises."""
        try:
            with self._open("/models", None, min(PROBE_TIMEOUT_S, self.timeout_s)) as resp:
                body = resp.read(MAX_PROBE_BODY + 1)
            if len(body) > MAX_PROBE_BODY or not isinstance(json.loads(body), dict):
                log.debug("probe of %s: /models is not a JSON object", self.name)
                return False
            return True
        except urllib.error.HTTPError as exc:
            if 300 <= exc.code < 400:
                self._redirect(exc, logging.DEBUG)
            else:
                log.debug("probe of %s: HTTP %d", self.name, exc.code)
            return False
        except Exception as exc:  # not HTTP, TLS, bad bytes, anything: not usable now
            log.debug("probe of %s failed: %r", self.name, exc)
            return False

    def load(self) -> None:
        """Nothing to load; a server that is down now is retried by the queue later.  Never raises."""
        if not self.probe():
            log.warning("engine %s does not answer yet; it will be tried again", self.name)

    def close(self) -> None:
        return None

    def generate(
        self,
        request: VisionRequest,
        *,
        should_stop: Callable[[], bool] | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> Answer:
        """Stream one answer; see :meth:`bot.engine.base.Engine.generate`."""
        reply = _Reply(started=time.perf_counter(), sink=TextSink(on_text))
        try:
            with self._open("/chat/completions", self._body(request), self.timeout_s) as resp:
                self._read_stream(resp, reply, request, should_stop)
        except EngineError:
            raise
        except urllib.error.HTTPError as exc:
            raise self._http_error(exc) from exc
        except _NotAStream as exc:
            log.warning("%s answered something that is not an OpenAI stream: %s", self.name, exc)
            raise EndpointDown(f"{self.name} answered something that is not an OpenAI stream") from exc
        except NETWORK_ERRORS as exc:
            # connection refused or reset, timeout, not an HTTP server, a stream cut in the middle
            raise EndpointDown(f"{self.name} did not answer: {exc}") from exc
        except Exception as exc:  # the contract: only EngineError leaves generate
            log.warning("%s: unexpected failure while answering", self.name, exc_info=True)
            raise EngineError(FAILED) from exc
        if not reply.complete:
            raise self._ended_early()
        return reply.answer()

    # -- one answer, step by step --------------------------------------------------

    def _body(self, request: VisionRequest) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": chat_messages(request, request.images, request.system_prompt),
            "max_tokens": request.max_tokens,  # always: never "until the context is full"
            "temperature": request.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }

    def _read_stream(
        self,
        resp: http.client.HTTPResponse,
        reply: _Reply,
        request: VisionRequest,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        """Read server-sent events until ``[DONE]``, the end, the time limit or a stop.

        The limits are checked on every line, pings and comments included, so
        a server that only pings ends at the deadline too.  A server that
        sends no event for ``timeout_s`` (pings do not count) is down.
        """
        deadline = reply.started + request.time_limit_s if request.time_limit_s else None
        last_event = reply.started
        while raw := resp.readline(MAX_LINE):
            payload = _data_payload(raw)
            if payload == "[DONE]":
                reply.complete = True
                return
            now = time.perf_counter()
            if payload is not None:
                self._on_event(reply, _parse_event(payload))
                last_event = now
            if should_stop is not None and should_stop():
                reply.stop("cancelled")
                return
            if deadline is not None and now > deadline:
                reply.stop("timeout")
                return
            if now - last_event > self.timeout_s:
                raise EndpointDown(f"{self.name} sent nothing but pings for {self.timeout_s:.0f} s")

    def _on_event(self, reply: _Reply, event: dict[str, Any]) -> None:
        if event.get("error"):
            log.warning("%s sent an error in its reply: %.300s", self.name, json.dumps(event["error"]))
            raise EngineError(FAILED)
        reply.add(event)

    def _ended_early(self) -> EngineError:
        """The stream ended without [DONE]: a server that died mid-answer, or one
        that swallowed an error (llama-cpp-python's server does, e.g. for an
        image it cannot decode).  Ask it which."""
        if not self.probe():
            return EndpointDown(f"{self.name} stopped answering in the middle of a reply")
        log.warning("%s ended a reply without finishing it", self.name)
        return EngineError(FAILED)
