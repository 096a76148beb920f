"""What every engine speaks: requests in, answers with stage timings out.

Nothing here knows about Discord or about llama-cpp-python; the queue, the
CLI and the cogs use these types only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class VisionRequest:
    """One question about one or more prepared images.

    ``images`` are ``data:`` URIs (see :mod:`bot.images`); an engine never
    fetches anything.  ``history`` holds earlier (question, answer) turns of
    a conversation about the same images, oldest first.
    """

    images: tuple[str, ...]
    question: str
    max_tokens: int
    temperature: float = 0.2
    history: tuple[tuple[str, str], ...] = ()
    system_prompt: str | None = None
    #: stop generating after this many seconds of engine time (partial answer, finish "timeout")
    time_limit_s: float | None = None

    def __post_init__(self) -> None:
        if self.max_tokens is None or self.max_tokens < 1:
            # max_tokens=None means "until the context is full" in
            # llama-cpp-python: the 92-second bug this project exists to avoid.
            raise ValueError("max_tokens must be a positive integer")


def chat_messages(request: VisionRequest, image_urls: Sequence[str], system: str | None) -> list[dict[str, Any]]:
    """OpenAI-style chat messages for a request: the system prompt, the images
    (as ``image_urls``) with the first question, then the later turns."""
    messages: list[dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": system})
    image_parts = [{"type": "image_url", "image_url": {"url": url}} for url in image_urls]
    turns = [*request.history, (request.question, None)]
    for index, (question, answer) in enumerate(turns):
        parts = image_parts if index == 0 else []
        messages.append({"role": "user", "content": [*parts, {"type": "text", "text": question}]})
        if answer is not None:
            messages.append({"role": "assistant", "content": answer})
    return messages


@dataclass(slots=True)
class StageTimings:
    """Where the seconds of one answer went.  All times in seconds."""

    image_encode_s: float = 0.0
    prompt_eval_s: float = 0.0
    generation_s: float = 0.0
    total_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    queue_wait_s: float = 0.0
    #: from the engine starting the job to the first generated token
    first_token_s: float = 0.0
    #: prompt positions reused from the previous call's KV cache (not evaluated again)
    cached_tokens: int = 0

    @property
    def tokens_per_s(self) -> float:
        if self.generation_s <= 0 or self.completion_tokens <= 0:
            return 0.0
        return self.completion_tokens / self.generation_s


@dataclass(slots=True)
class Answer:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    timings: StageTimings = field(default_factory=StageTimings)
    #: the engine that answered (set by the queue)
    engine: str = ""


@dataclass(frozen=True, slots=True)
class EngineInfo:
    """What /status and ``doctor`` show about an engine."""

    name: str
    model: str
    chat_format: str
    text_backend: str = "unknown"
    clip_backend: str = "unknown"
    gpu_offload: bool = False
    #: where a remote engine lives, without any user:password@ ("" for a local one)
    url: str = ""
    #: which chat template the engine uses and where it came from ("" when the server chooses)
    template: str = ""


class EngineError(Exception):
    """An engine could not answer one request; the message is fit for a user."""


class EndpointDown(EngineError):
    """The engine's server did not answer; the job is not at fault and can go
    to another engine (the queue puts it back and retries this one later)."""


class RequestError(EngineError):
    """This request cannot be answered as asked (too long for the context,
    an image the model cannot decode): the asker's input, not a fault."""


@runtime_checkable
class Engine(Protocol):
    """A blocking model.  Exactly one consumer thread calls ``generate``."""

    @property
    def info(self) -> EngineInfo: ...

    def load(self) -> None:
        """Load the model and warm it up; return only when it can answer."""

    def generate(
        self,
        request: VisionRequest,
        *,
        should_stop: Callable[[], bool] | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> Answer:
        """Answer one request (blocking; called from a worker thread).

        ``on_text`` is called in that thread with each piece of text as it is
        generated (the pieces joined are the answer, before stripping); an
        exception from it is logged once and stops the calls, never the answer.

        ``should_stop`` is polled between tokens (a remote engine polls it on
        every line it receives); when it returns True the engine stops and
        returns the partial answer with ``finish_reason`` "cancelled".  Past
        ``request.time_limit_s`` it returns the partial answer with
        ``finish_reason`` "timeout".

        Raises only :class:`EngineError` subclasses: :class:`EndpointDown`
        when the server is not usable (give the job to another engine),
        :class:`RequestError` when the input cannot be answered as asked, and
        :class:`EngineError` otherwise (this job fails, the engine goes on).
        """

    def close(self) -> None:
        """Free the model."""


class TextSink:
    """Hands generated text to ``on_text`` from an engine's thread; a callback that
    raises is logged once and not called again (the answer goes on)."""

    def __init__(self, on_text: Callable[[str], None] | None) -> None:
        self._on_text = on_text

    def __call__(self, text: str) -> None:
        if self._on_text is None or not text:
            return
        try:
            self._on_text(text)
        except Exception:
            logging.getLogger(__name__).exception("a text callback failed; no more text is handed out for this answer")
            self._on_text = None
