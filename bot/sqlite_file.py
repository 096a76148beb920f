"""One SQLite file used from one worker thread, so the event loop never waits on the disk.

The base of :class:`bot.jobs.journal.Journal` (accepted jobs) and
:class:`bot.moderation.captions.CaptionStore` (kept captions): both live in the
state database, each on its own connection.  ``path=None`` keeps nothing.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any


def migrate_schema(db: sqlite3.Connection, table: str, migrations: Sequence[Sequence[str]], what: str) -> int:
    """Bring a set of tables up to ``len(migrations)``, in one transaction (on an
    autocommit connection); the version found.  ``migrations[i]`` takes the file
    from version ``i`` to ``i + 1`` (only ever append a step).  ``table`` holds the
    version; a file newer than this code is refused."""
    version = len(migrations)
    with db:
        db.execute("BEGIN IMMEDIATE")
        db.execute(f"CREATE TABLE IF NOT EXISTS {table} (version INTEGER NOT NULL)")
        row = db.execute(f"SELECT version FROM {table}").fetchone()
        found = int(row[0]) if row is not None else 0
        if row is None:
            db.execute(f"INSERT INTO {table} (version) VALUES (0)")
        if found > version:
            raise RuntimeError(f"{what}: the state file has schema version {found}, newer than this bot's {version}")
        for steps in migrations[found:]:
            for sql in steps:
                db.execute(sql)
        db.execute(f"UPDATE {table} SET version = ?", (version,))
    return found


class SqliteFile:
    #: the worker thread's name
    thread_name = "sqlite"

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self._db: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def enabled(self) -> bool:
        return self.path is not None

    async def _call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` in the worker thread."""
        if self._executor is None:
            raise RuntimeError(f"{type(self).__name__}.open() was not called")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _start(self) -> bool:
        """Start the worker thread; False when there is no file or it already runs."""
        if self.path is None or self._executor is not None:
            return False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.thread_name)
        return True

    def _connect(self, **kw: Any) -> sqlite3.Connection:
        """The connection (in the worker thread): the folder made, WAL, NORMAL sync."""
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, **kw)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

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
