"""A small SQLite journal of accepted jobs, so a killed bot answers them on restart.

A job is written when the bot decides to answer it and removed once its one
reply was sent (or could never be: the channel is gone, no permission).  At
start-up, whatever is still in the journal was accepted and not answered: the
bot answers it then.  Delivery is at least once: a kill between sending a
reply and removing its row answers that question twice; everything else is
answered exactly once.

SQLite runs in WAL mode with ``synchronous=NORMAL``: a committed row survives
the process being killed (the data is in the OS), not necessarily a power
cut.  All calls run in one dedicated thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Entry:
    id: int
    created: float
    payload: dict[str, Any]


class Journal:
    """``path=None`` keeps nothing (every call is a no-op)."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self._db: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def enabled(self) -> bool:
        return self.path is not None

    async def _call(self, fn: Any, *args: Any) -> Any:
        if self._executor is None:
            raise RuntimeError("Journal.open() was not called")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def open(self) -> None:
        if self.path is None or self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        await self._call(self._open)
        log.info("job journal at %s", self.path)

    def _open(self) -> None:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(
            "CREATE TABLE IF NOT EXISTS jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, created REAL NOT NULL, payload TEXT NOT NULL)"
        )
        self._db = db

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        await asyncio.get_running_loop().run_in_executor(executor, self._close)
        executor.shutdown(wait=False)

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def add(self, payload: dict[str, Any]) -> int | None:
        if self.path is None:
            return None
        return await self._call(self._add, json.dumps(payload), time.time())

    def _add(self, text: str, created: float) -> int:
        assert self._db is not None
        cursor = self._db.execute("INSERT INTO jobs (created, payload) VALUES (?, ?)", (created, text))
        return int(cursor.lastrowid or 0)

    async def remove(self, entry_id: int | None) -> None:
        if self.path is None or entry_id is None:
            return
        await self._call(self._remove, entry_id)

    def _remove(self, entry_id: int) -> None:
        assert self._db is not None
        self._db.execute("DELETE FROM jobs WHERE id = ?", (entry_id,))

    async def pending(self) -> list[Entry]:
        if self.path is None:
            return []
        return await self._call(self._pending)

    def _pending(self) -> list[Entry]:
        assert self._db is not None
        rows = self._db.execute("SELECT id, created, payload FROM jobs ORDER BY id").fetchall()
        entries = []
        for row_id, created, text in rows:
            try:
                entries.append(Entry(int(row_id), float(created), json.loads(text)))
            except (TypeError, ValueError):
                log.warning("dropping unreadable journal row %s", row_id)
                self._remove(int(row_id))
        return entries

    async def count(self) -> int:
        return len(await self.pending())
