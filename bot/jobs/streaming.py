"""Show an answer growing in Discord while the model writes it.

A :class:`ReplyStream` takes the text as the engine hands it out (``feed``,
on the event loop) and keeps the reply up to date through its replier's
``show``: at most one edit per ``every_s`` seconds, the first one as soon as
the first words exist, a cursor mark while the answer is partial, and an
answer that outgrows Discord's 2,000 characters continued in a new message
on whole words.  Edits run in their own task: a slow or failing edit (a
deleted message, a 429 that discord.py waits out) never holds up the
generation, and edits that cannot keep up are simply merged.  ``close()``
ends the stream before the final text (with the footer) is delivered, so no
late edit can land on top of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable

import discord

from bot.jobs.delivery import DISCORD_OR_NETWORK_ERRORS, Replier
from bot.reply import DISCORD_LIMIT, split_text

log = logging.getLogger(__name__)

#: shown at the end of a partial answer
CURSOR = " ▌"


def partial_parts(text: str, header: str = "", limit: int = DISCORD_LIMIT) -> list[str]:
    """The messages of a partial answer: split like the final one (whole words),
    the cursor on the last part when it fits."""
    body = text.lstrip()
    if header:
        body = f"{header}\n{body}"
    parts = split_text(body, limit)
    if len(parts[-1]) + len(CURSOR) <= limit:
        parts[-1] += CURSOR
    return parts


class ReplyStream:
    """One answer streaming into one reply (see the module's docstring)."""

    def __init__(
        self,
        replier: Replier,
        *,
        every_s: float = 1.0,
        header: str = "",
        on_first_shown: Callable[[int], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.replier = replier
        #: awaited once with the id of the reply's first message (the journal keeps it,
        #: so that after a crash the answer replaces the partial text, not beside it)
        self.on_first_shown = on_first_shown
        self.every_s = every_s
        self.header = header
        self._clock = clock
        self.text = ""
        self._shown: dict[int, str] = {}
        self._last_edit = -math.inf
        self._task: asyncio.Task[None] | None = None
        self._editing = False
        self._closed = False
        #: edits (and new messages) made while streaming; when the first one was made
        self.edits = 0
        self.first_shown_at: float | None = None

    # -- fed by the engine (through the queue, on the event loop) -----------------------

    def feed(self, text: str) -> None:
        if self._closed:
            return
        self.text += text
        self._kick()

    def restart(self) -> None:
        """The job starts again on another engine: its text starts again too."""
        self.text = ""

    @property
    def shown_anything(self) -> bool:
        return bool(self._shown)

    # -- the edits ---------------------------------------------------------------------

    def _kick(self) -> None:
        if self._task is None and not self._closed and self.text.strip():
            self._task = asyncio.create_task(self._pump(), name="llava-reply-stream")

    async def _pump(self) -> None:
        try:
            while not self._closed:
                wait = self._last_edit + self.every_s - self._clock()
                if wait > 0:
                    await asyncio.sleep(wait)
                changed = [(i, t) for i, t in enumerate(partial_parts(self.text, self.header)) if self._shown.get(i) != t]
                if self._closed or not changed:
                    return
                for index, text in changed:
                    await self._show(index, text)
        finally:
            self._task = None

    async def _show(self, index: int, text: str) -> None:
        self._editing = True
        try:
            message_id = await self.replier.show(index, text)
        except discord.NotFound:
            log.info("the reply was deleted while the answer streamed; the final text goes to a new one")
            self._closed = True  # no more edits: deliver() posts the answer anew
        except DISCORD_OR_NETWORK_ERRORS as exc:
            log.info("a streamed edit failed (the final text still follows): %s", exc)
        else:
            self._shown[index] = text
            if self.first_shown_at is None:
                self.first_shown_at = self._clock()
                if self.on_first_shown is not None and message_id is not None:
                    await self.on_first_shown(message_id)
        finally:
            self._editing = False
            self._last_edit = self._clock()
            self.edits += 1

    async def close(self) -> None:
        """Stop streaming: an edit in flight is let finish, a waiting one is dropped."""
        self._closed = True
        task = self._task
        if task is None:
            return
        if not self._editing:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
