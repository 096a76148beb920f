"""The "⏳ #3 in line, about 8 s" note of a waiting job, kept up to date.

The note is posted at once when a job has to wait, then edited as its place
and the estimate change (:meth:`bot.queue.JobHandle.eta_s`: the engines'
measured recent pace, their slots, every engine that is up).  Edits stay well
inside Discord's limits: a note changes at most every :data:`NOTE_EVERY_S`,
only when its text changes, and the notes of one channel together at most every
:data:`CHANNEL_SPACING_S` (Discord allows about 5 edits per 5 s per channel,
shared with the answers streaming there).  The keeper stops on its own once the
job starts, and is stopped (and awaited, never cut mid-edit) when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from bot.jobs.delivery import Replier, post_note
from bot.queue import JobHandle
from bot.reply import place_in_line

log = logging.getLogger(__name__)

#: a note is edited at most this often
NOTE_EVERY_S = 3.0
#: notes of one channel are edited at most this often, together
CHANNEL_SPACING_S = 1.5
#: how often the place and the estimate are looked at
TICK_S = 0.5


def note_text(handle: JobHandle) -> str | None:
    """The note for a waiting job (None once it has started)."""
    position = handle.current_position()
    if not position:
        return None
    eta = handle.eta_s()
    return place_in_line(position, eta)


class ChannelPace:
    """When each channel's notes were last edited (shared by every job of a bot)."""

    def __init__(self, spacing_s: float = CHANNEL_SPACING_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.spacing_s = spacing_s
        self._clock = clock
        self._last: dict[int, float] = {}

    def take(self, channel_id: int) -> bool:
        """True (and the turn is taken) when a note in this channel may be edited now."""
        now = self._clock()
        if now - self._last.get(channel_id, -1e9) < self.spacing_s:
            return False
        self._last[channel_id] = now
        if len(self._last) > 1000:  # forget quiet channels
            self._last = {c: t for c, t in self._last.items() if now - t < self.spacing_s}
        return True


class NoteKeeper:
    """Keeps one waiting job's note up to date until the job starts or :meth:`stop`."""

    def __init__(self, replier: Replier, handle: JobHandle, channel_id: int, pace: ChannelPace, shown: str) -> None:
        self.replier = replier
        self.handle = handle
        self.channel_id = channel_id
        self.pace = pace
        self.shown = shown
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="llava-note")

    async def _run(self) -> None:
        last_edit = time.monotonic()
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), TICK_S)
            if self._stop.is_set() or self.handle.done:
                return
            text = note_text(self.handle)
            if text is None:  # started: the answer takes over the note
                return
            if text == self.shown or time.monotonic() - last_edit < NOTE_EVERY_S or not self.pace.take(self.channel_id):
                continue
            await post_note(self.replier, text)  # never over streamed words (the replier's rule)
            self.shown, last_edit = text, time.monotonic()

    async def stop(self) -> None:
        """Stop, letting an edit in flight finish first (so it cannot land after the answer)."""
        self._stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), 10.0)
        except TimeoutError:
            self._task.cancel()
        except Exception:
            log.exception("the note keeper failed")
