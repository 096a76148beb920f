"""What the fake records and keeps: requests, gateway events, injected faults, interactions; and its API error."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any

# --------------------------------------------------------------------------- records


@dataclass
class RecordedRequest:
    """One HTTP request the fake received (REST, webhook, CDN or other)."""

    method: str
    path: str  # REST: relative to /api/v10 (e.g. "/channels/2001/messages"); else the full path
    query: dict[str, str]
    json: Any  # parsed JSON body, or multipart ``payload_json``; None when absent
    files: list[dict[str, Any]]  # multipart files: name, filename, content_type, data, size
    headers: dict[str, str]
    time: float  # time.monotonic()
    status: int | None = None  # filled in once answered
    injected: bool = False  # answered by a fail_next/delay_next rule
    api: bool = True  # under /api/v10


@dataclass
class GatewayEvent:
    """One DISPATCH event of the current or a past gateway session."""

    seq: int
    t: str
    d: dict[str, Any]
    session_id: str
    delivered: asyncio.Future  # result: time.monotonic() of the first send over a websocket
    filtered: bool = False  # not sent: the session's intents exclude it
    replayable: bool = True

    @property
    def sent(self) -> bool:
        return self.delivered.done() and not self.delivered.cancelled() and self.delivered.exception() is None


@dataclass
class FailureRule:
    """A fault injected by :meth:`FakeDiscord.fail_next` / :meth:`FakeDiscord.delay_next`."""

    method: str  # "*" matches any method
    pattern: re.Pattern
    status: int | None  # None: only delay, then answer normally
    times: int | None  # None: until clear_failures()
    retry_after: float | None = None
    code: int | None = None
    message: str | None = None
    body: Any = None
    global_: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    #: answer the request normally, then drop the connection before the response is read
    #: (the request landed; the client sees a network error)
    drop_response: bool = False
    #: answer the request normally, but hold the response this long first (a kill -9 meanwhile:
    #: the request landed, the client never learned its answer)
    hold_response_s: float = 0.0
    hits: int = 0
    #: requests carried out whose response is being (or was) held
    held: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        return (self.method == "*" or self.method == method) and self.pattern.search(path) is not None


@dataclass
class FakeInteraction:
    """Server-side state of one interaction the fake created."""

    id: int
    token: str
    payload: dict[str, Any]
    created: float  # time.monotonic()
    channel_id: int
    command_type: int  # data.type: 1 chat input, 2 user, 3 message
    callback_type: int | None = None
    callback_data: dict[str, Any] | None = None
    original_message_id: int | None = None
    loading: bool = False  # deferred (type 5) and not yet filled in
    ephemeral: bool = False
    followup_ids: list[int] = field(default_factory=list)


class ApiError(Exception):
    """An error the fake answers a REST request with: HTTP status, Discord's JSON code and message, form errors."""

    def __init__(self, status: int, code: int, message: str, errors: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.errors = status, code, message, errors


def form_error(field_name: str, code: str, message: str) -> ApiError:
    return ApiError(400, 50035, "Invalid Form Body", {field_name: {"_errors": [{"code": code, "message": message}]}})
