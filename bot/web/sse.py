"""A server-sent event stream that never raises when its reader has gone."""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache, no-store",
    "X-Accel-Buffering": "no",  # nginx: do not hold the events back
}


def encode(event: str, data: dict[str, Any]) -> bytes:
    """One event: ``event: NAME``, one ``data:`` line of JSON, a blank line."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


class EventStream:
    """The response of one ``/api/ask`` request, written event by event."""

    def __init__(self, request: web.Request) -> None:
        self._request = request
        self.response = web.StreamResponse(headers=HEADERS)
        self._gone = False
        #: names of the events sent, in order (logs and tests)
        self.sent: list[str] = []

    async def open(self) -> None:
        await self.response.prepare(self._request)

    @property
    def gone(self) -> bool:
        """The client closed the connection (nothing more can reach it)."""
        if not self._gone:
            transport = self._request.transport
            self._gone = transport is None or transport.is_closing()
        return self._gone

    async def send(self, event: str, data: dict[str, Any]) -> bool:
        """Send one event; False (and nothing raised) when the client has gone."""
        return await self._write(encode(event, data), event)

    async def ping(self) -> bool:
        """A comment line: keeps proxies from timing out, and finds a closed connection."""
        return await self._write(b": ping\n\n", None)

    async def _write(self, payload: bytes, event: str | None) -> bool:
        if self.gone:
            return False
        try:
            await self.response.write(payload)
        except (ConnectionError, RuntimeError) as exc:  # reset, or the transport closed under us
            log.debug("the client went away: %s", exc)
            self._gone = True
            return False
        if event is not None:
            self.sent.append(event)
        return True

    async def close(self) -> None:
        if self.gone:
            return
        try:
            await self.response.write_eof()
        except (ConnectionError, RuntimeError):
            self._gone = True
