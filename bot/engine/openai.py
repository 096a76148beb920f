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

A server that cannot be reached, times out, answers 502/503/504 or stops in
the middle of a reply and then fails a probe raises :class:`EndpointDown`:
the queue gives the job to another engine and retries this one later.  A
server that is up but fails one question (HTTP 500, or a reply ended early
while it still answers probes) fails that job only (:class:`EngineError`); a
4xx is about the request (:class:`RequestError`).
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from typing import Any

from bot.engine.base import (
    Answer,
    EndpointDown,
    EngineError,
    EngineInfo,
    RequestError,
    StageTimings,
    VisionRequest,
    chat_messages,
)

log = logging.getLogger(__name__)


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
        self.url = url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.name = name or self.url

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(
            name=self.name,
            model=self.model,
            chat_format="server's own",
            text_backend=f"remote ({self.url})",
            clip_backend=f"remote ({self.url})",
        )

    def _request(self, path: str, body: dict[str, Any] | None = None) -> urllib.request.Request:
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode() if body is not None else None
        return urllib.request.Request(self.url + path, data=data, headers=headers, method="POST" if data else "GET")

    def probe(self) -> bool:
        """True if the server answers ``GET /models``."""
        try:
            with urllib.request.urlopen(self._request("/models"), timeout=5) as resp:
                return 200 <= resp.status < 300
        except (OSError, urllib.error.URLError):
            return False

    def load(self) -> None:
        """Nothing to load; a server that is down now is retried by the queue later."""
        if not self.probe():
            log.warning("engine %s does not answer yet; it will be tried again", self.name)

    def close(self) -> None:
        return None

    def generate(self, request: VisionRequest) -> Answer:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": chat_messages(request, request.images, request.system_prompt),
            "max_tokens": request.max_tokens,  # always: never "until the context is full"
            "temperature": request.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        started = time.perf_counter()
        deadline = started + request.time_limit_s if request.time_limit_s else None
        text: list[str] = []
        finish = "stop"
        first_token: float | None = None
        chunks = 0
        complete = False
        usage: dict[str, Any] = {}
        server_timings: dict[str, Any] = {}
        try:
            with urllib.request.urlopen(self._request("/chat/completions", body), timeout=self.timeout_s) as resp:
                for raw in resp:
                    line = raw.decode("utf-8", "replace").strip()
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        complete = True
                        break
                    event = json.loads(payload)
                    usage = event.get("usage") or usage
                    server_timings = event.get("timings") or server_timings
                    for choice in event.get("choices") or []:
                        delta = (choice.get("delta") or {}).get("content") or ""
                        if delta:
                            if first_token is None:
                                first_token = time.perf_counter()
                            text.append(delta)
                            chunks += 1
                        finish = choice.get("finish_reason") or finish
                    if deadline is not None and time.perf_counter() > deadline:
                        finish = "timeout"
                        complete = True
                        break
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode("utf-8", "replace")
            if exc.code in (502, 503, 504):  # a proxy with nothing behind it, overloaded, loading
                raise EndpointDown(f"{self.name} answered HTTP {exc.code}: {detail}") from exc
            if exc.code >= 500:  # alive, but this question broke it
                log.warning("%s failed on a question: HTTP %d %s", self.name, exc.code, detail)
                raise EngineError("the model server failed on this question") from exc
            raise RequestError(f"the model server refused the question (HTTP {exc.code})") from exc
        except (OSError, urllib.error.URLError, ValueError) as exc:
            # connection refused or reset, timeout, a stream cut in the middle
            raise EndpointDown(f"{self.name} did not answer: {exc}") from exc
        if not complete:
            # The stream ended without [DONE]: a server that died mid-answer,
            # or one that swallowed an error (llama-cpp-python's server does,
            # e.g. for an image it cannot decode). Ask it which.
            if not self.probe():
                raise EndpointDown(f"{self.name} stopped answering in the middle of a reply")
            log.warning("%s ended a reply without finishing it", self.name)
            raise EngineError("the model server failed on this question")
        finished = time.perf_counter()
        timings = StageTimings(total_s=finished - started)
        timings.first_token_s = (first_token or finished) - started
        timings.prompt_tokens = int(usage.get("prompt_tokens") or server_timings.get("prompt_n") or 0)
        timings.completion_tokens = int(usage.get("completion_tokens") or server_timings.get("predicted_n") or chunks)
        if server_timings.get("prompt_ms") is not None and server_timings.get("predicted_ms") is not None:
            timings.prompt_eval_s = float(server_timings["prompt_ms"]) / 1000
            timings.generation_s = float(server_timings["predicted_ms"]) / 1000
        else:
            timings.prompt_eval_s = timings.first_token_s
            timings.generation_s = max(0.0, timings.total_s - timings.first_token_s)
        return Answer(
            text="".join(text).strip(),
            finish_reason=finish,
            prompt_tokens=timings.prompt_tokens,
            completion_tokens=timings.completion_tokens,
            timings=timings,
        )
