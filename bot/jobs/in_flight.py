"""A count of pieces of work between their start and their end, and a wait for none.

Used by :class:`bot.jobs.Jobs` (questions between acceptance and reply) and
:class:`bot.moderation.watcher.Watcher` (watched messages between claim and last post),
so a shutdown can wait for both.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


class InFlight:
    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        """Count the work inside the ``with`` block."""
        self.count += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.count -= 1
            if self.count == 0:
                self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()
