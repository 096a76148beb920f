"""A small SQLite journal of accepted jobs, so a killed bot answers them on restart.

A message's jobs (one per image) are written together, in one transaction,
when the bot accepts the message; each row leaves once its one reply was sent
(or could never be: the channel is gone, no permission).  A kill between
sending a reply and removing its row does not answer twice: the replay reads
the channel and crosses off a reply that is already complete (``Jobs``).

Rows a process finds when it opens the journal were left by an earlier
process: :meth:`Journal.open` takes them aside at once (``leftovers``), before
this process accepts anything, so a restarted bot replays only what the
previous one left and never one of its own live questions.

A message addressed to the bot is journaled as "seen" (:meth:`Journal.add_seen`)
before any request is made on its behalf; its jobs replace that row in one
transaction.  A "seen" row left by a killed process is read back from
Discord and taken from the start.

Each row also records:

- ``note_id``: the reply's first message (the "⏳ #N in line" note, the
  streamed words, the answer), which the replay edits into the answer;
- ``parts``: the ids of the reply's later messages (an answer over 2,000
  characters), journaled as each is created;
- ``active``: set while the job is being worked on (downloaded, prepared,
  answered).  A row still active when a process opens the journal was in
  flight during a crash: its ``crashes`` count goes up.  A job that keeps
  crashing the bot is not replayed forever (see ``Jobs``).  A clean stop
  clears ``active`` on the rows it leaves (``park``): those are not crashes.

SQLite runs in WAL mode with ``synchronous=NORMAL``: a committed row survives
the process being killed (the data is in the OS), not necessarily a power
cut.  All calls run in one dedicated thread, off the event loop.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.sqlite_file import SqliteFile

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    payload TEXT NOT NULL,
    grp INTEGER NOT NULL DEFAULT 0,
    note_id INTEGER,
    active INTEGER NOT NULL DEFAULT 0,
    crashes INTEGER NOT NULL DEFAULT 0,
    parts TEXT
)
"""
#: columns added after the first release (older journals get them on open)
ADDED_COLUMNS = {
    "grp": "INTEGER NOT NULL DEFAULT 0",
    "note_id": "INTEGER",
    "active": "INTEGER NOT NULL DEFAULT 0",
    "crashes": "INTEGER NOT NULL DEFAULT 0",
    "parts": "TEXT",
}

#: the payload key of a message the bot received but has not made jobs of yet
SEEN = "seen"


@dataclass(frozen=True, slots=True)
class Entry:
    id: int
    created: float
    payload: dict[str, Any]
    group: int = 0
    note_id: int | None = None
    #: how many processes died while this job was being worked on
    crashes: int = 0
    #: the ids of the reply's later parts (continuations, follow-ups), by part index
    parts: dict[int, int] = field(default_factory=dict)

    @property
    def seen(self) -> dict[str, Any] | None:
        """A message received but not made into jobs yet (see :meth:`Journal.add_seen`)."""
        seen = self.payload.get(SEEN)
        return seen if isinstance(seen, dict) else None


class Journal(SqliteFile):
    """``path=None`` keeps nothing (every call is a no-op)."""

    thread_name = "journal"

    def __init__(self, path: str | Path | None) -> None:
        super().__init__(path)
        #: rows left by earlier processes, taken aside by open()
        self.leftovers: list[Entry] = []

    async def open(self) -> None:
        """Open (or create) the journal and take aside what earlier processes left."""
        if not self._start():
            return
        self.leftovers = await self._call(self._open)
        log.info("job journal at %s (%d job(s) left by the previous run)", self.path, len(self.leftovers))

    def _open(self) -> list[Entry]:
        db = self._connect()
        db.execute(SCHEMA)
        have = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
        for name, decl in ADDED_COLUMNS.items():
            if name not in have:
                db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {decl}")
        self._db = db
        with db:  # one transaction: count the crash, then read
            db.execute("BEGIN IMMEDIATE")
            db.execute("UPDATE jobs SET crashes = crashes + 1, active = 0 WHERE active != 0")
            return self._read_all()


    # -- writing ------------------------------------------------------------------

    async def add_seen(self, channel_id: int, message_id: int, user_id: int) -> int | None:
        """Journal a message as received, before any request is made on its behalf (its
        reply chain, the asker's roles): a kill before its jobs are journaled loses
        nothing, the replay reads the message from Discord and takes it from the start.
        It counts as in flight (a message that crashes the bot every time is given up)."""
        if self.path is None:
            return None
        seen = {"channel_id": channel_id, "message_id": message_id, "user_id": user_id, "created": time.time()}
        return (await self._call(self._add_group, [json.dumps({SEEN: seen})], time.time(), None, True))[0]

    async def add_group(self, payloads: Sequence[dict[str, Any]], *, replaces: int | None = None) -> list[int | None]:
        """Journal the jobs of one message together (one transaction); their row ids.
        ``replaces``: the message's "seen" row, removed in the same transaction."""
        if self.path is None:
            return [None] * len(payloads)
        texts = [json.dumps(p) for p in payloads]
        return await self._call(self._add_group, texts, time.time(), replaces)

    def _add_group(self, texts: list[str], created: float, replaces: int | None = None, active: bool = False) -> list[int]:
        assert self._db is not None
        ids: list[int] = []
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            if replaces is not None:
                self._db.execute("DELETE FROM jobs WHERE id = ?", (replaces,))
            for text in texts:
                cursor = self._db.execute("INSERT INTO jobs (created, payload, active) VALUES (?, ?, ?)", (created, text, int(active)))
                ids.append(int(cursor.lastrowid or 0))
            self._db.execute("UPDATE jobs SET grp = ? WHERE id BETWEEN ? AND ?", (ids[0], ids[0], ids[-1]))
        return ids

    async def add(self, payload: dict[str, Any]) -> int | None:
        return (await self.add_group([payload]))[0]

    async def _update(self, sql: str, *args: Any) -> None:
        if self.path is None or args[-1] is None:
            return
        await self._call(self._execute, sql, args)

    def _execute(self, sql: str, args: tuple[Any, ...]) -> None:
        assert self._db is not None
        self._db.execute(sql, args)

    async def mark_active(self, entry_id: int | None, active: bool = True) -> None:
        """The job is being worked on (downloaded, prepared, answered): a crash now counts
        against it.  ``active=False``: it only waits in line, and a crash is not its fault."""
        await self._update("UPDATE jobs SET active = ? WHERE id = ?", int(active), entry_id)

    async def set_note(self, entry_id: int | None, note_id: int | None) -> None:
        """Remember the "in line" message of a job (the replay edits it)."""
        await self._update("UPDATE jobs SET note_id = ? WHERE id = ?", note_id, entry_id)

    async def set_part(self, entry_id: int | None, index: int, message_id: int) -> None:
        """Remember the message of a reply's part ``index`` as soon as it is created
        (part 0 is the note column: the message the note, the stream and the answer share)."""
        if index == 0:
            await self.set_note(entry_id, message_id)
            return
        await self._update(
            "UPDATE jobs SET parts = json_set(coalesce(parts, '{}'), ?, ?) WHERE id = ?", f'$."{index}"', message_id, entry_id
        )

    async def remove(self, entry_id: int | None) -> None:
        await self._update("DELETE FROM jobs WHERE id = ?", entry_id)

    async def park(self) -> int:
        """A clean stop: what is left is not in flight during a crash.  Rows left."""
        if self.path is None or self._executor is None:
            return 0
        return await self._call(self._park)

    def _park(self) -> int:
        assert self._db is not None
        self._db.execute("UPDATE jobs SET active = 0")
        return int(self._db.execute("SELECT count(*) FROM jobs").fetchone()[0])

    # -- reading ------------------------------------------------------------------

    async def pending(self) -> list[Entry]:
        if self.path is None:
            return []
        return await self._call(self._read_all)

    def _read_all(self) -> list[Entry]:
        assert self._db is not None
        rows = self._db.execute("SELECT id, created, payload, grp, note_id, crashes, parts FROM jobs ORDER BY id").fetchall()
        entries = []
        for row_id, created, text, group, note_id, crashes, parts_text in rows:
            try:
                payload = json.loads(text)
                if not isinstance(payload, dict):
                    raise ValueError("not an object")
                parts = {int(k): int(v) for k, v in json.loads(parts_text).items()} if parts_text else {}
                entries.append(Entry(int(row_id), float(created), payload, int(group or row_id), note_id, int(crashes), parts))
            except (TypeError, ValueError):
                log.warning("dropping unreadable journal row %s", row_id)
                self._db.execute("DELETE FROM jobs WHERE id = ?", (int(row_id),))
        return entries

    async def count(self) -> int:
        return len(await self.pending())
