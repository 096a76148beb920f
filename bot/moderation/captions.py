"""Captions moderators can search: SQLite FTS5 in the state database.

Each watched image leaves one row: the message's link, channel, poster id,
time, the caption and the names of the rules it matched.  ``/find`` searches
caption and rule names (FTS5, best matches first by bm25); rows older than
``moderation.keep_days`` are purged, ``/forget`` removes a member's rows, and
a deleted message's rows go when Discord says it is gone.

The same store remembers which messages were taken for checking
(``mod_seen``): a message is checked once, even if Discord delivers it twice
or the bot restarts.  A message's row carries its plain description
(``payload``) until its checks are done; rows still carrying one when a
process opens the store were cut short by the previous process and are
checked again (``leftovers``), skipping the steps already done (each
caption, the alt text, each alert is recorded as it completes, ``steps``).
A kept caption's key is (message, image position): a repeated check adds no
second row.

It shares the file with the job journal (its own connection, WAL mode).  All
calls run in one dedicated thread, off the event loop.  Nothing here imports
discord.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.sqlite_file import SqliteFile

log = logging.getLogger(__name__)

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS mod_captions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        message_id INTEGER NOT NULL,
        channel_id INTEGER NOT NULL,
        guild_id INTEGER,
        poster_id INTEGER NOT NULL,
        created REAL NOT NULL,
        link TEXT NOT NULL,
        filename TEXT NOT NULL DEFAULT '',
        caption TEXT NOT NULL,
        rules TEXT NOT NULL DEFAULT '',
        position INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX IF NOT EXISTS mod_captions_message ON mod_captions (message_id)",
    "CREATE INDEX IF NOT EXISTS mod_captions_poster ON mod_captions (poster_id)",
    "CREATE INDEX IF NOT EXISTS mod_captions_created ON mod_captions (created)",
    """CREATE VIRTUAL TABLE IF NOT EXISTS mod_captions_fts USING fts5(
        caption, rules, content='mod_captions', content_rowid='id', tokenize='porter unicode61'
    )""",
    """CREATE TRIGGER IF NOT EXISTS mod_captions_ai AFTER INSERT ON mod_captions BEGIN
        INSERT INTO mod_captions_fts (rowid, caption, rules) VALUES (new.id, new.caption, new.rules);
    END""",
    """CREATE TRIGGER IF NOT EXISTS mod_captions_ad AFTER DELETE ON mod_captions BEGIN
        INSERT INTO mod_captions_fts (mod_captions_fts, rowid, caption, rules) VALUES ('delete', old.id, old.caption, old.rules);
    END""",
    """CREATE TABLE IF NOT EXISTS mod_seen (
        message_id INTEGER PRIMARY KEY,
        created REAL NOT NULL,
        payload TEXT,
        steps TEXT
    )""",
)
#: (table, column, declaration) added after the first release: older files get them on open
ADDED_COLUMNS = (
    ("mod_captions", "position", "INTEGER NOT NULL DEFAULT 0"),
    ("mod_seen", "steps", "TEXT"),
)
#: one row per image of a message (a check repeated after a restart adds none)
UNIQUE_IMAGE = "CREATE UNIQUE INDEX IF NOT EXISTS mod_captions_image ON mod_captions (message_id, position)"

_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True, slots=True)
class CaptionRow:
    """One watched image's caption, as kept for /find."""

    message_id: int
    channel_id: int
    guild_id: int | None
    poster_id: int
    created: float
    link: str
    caption: str
    filename: str = ""
    rules: tuple[str, ...] = ()
    #: the image's place among the message's images (0 first): with the message, its unique key
    position: int = 0


def match_expression(query: str, *, any_word: bool = False) -> str | None:
    """A safe FTS5 expression for what a moderator typed: each word quoted (no
    FTS syntax from users), all words (or ``any_word``); None when no word."""
    words = _WORD.findall(query.lower())[:12]
    if not words:
        return None
    return (" OR " if any_word else " ").join(f'"{w}"' for w in words)


class CaptionStore(SqliteFile):
    """``path=None`` keeps nothing: claims always succeed, searches find nothing."""

    thread_name = "captions"

    def __init__(self, path: str | Path | None) -> None:
        super().__init__(path)
        #: descriptions of messages whose checks the previous process did not finish
        self.leftovers: list[dict[str, Any]] = []
        #: the steps of those checks that were done (see :meth:`step_done`), by message id
        self.leftover_steps: dict[int, set[str]] = {}
        self._claimed: set[int] = set()  # without a file: this process's claims

    async def open(self) -> None:
        if not self._start():
            return
        self.leftovers, self.leftover_steps = await self._call(self._open)
        if self.leftovers:
            log.info("%d watched message(s) left unchecked by the previous run", len(self.leftovers))

    def _open(self) -> tuple[list[dict[str, Any]], dict[int, set[str]]]:
        db = self._connect(timeout=10.0)
        with db:
            db.execute("BEGIN IMMEDIATE")
            for statement in SCHEMA:
                db.execute(statement)
            for table, column, decl in ADDED_COLUMNS:
                if column not in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
                    if column == "position":  # rows kept before: numbered in the order they came
                        db.execute(
                            "UPDATE mod_captions SET position = (SELECT count(*) FROM mod_captions AS c"
                            " WHERE c.message_id = mod_captions.message_id AND c.id < mod_captions.id)"
                        )
            db.execute(UNIQUE_IMAGE)
        self._db = db
        left: list[dict[str, Any]] = []
        steps: dict[int, set[str]] = {}
        rows = db.execute("SELECT message_id, payload, steps FROM mod_seen WHERE payload IS NOT NULL ORDER BY message_id").fetchall()
        for message_id, text, done in rows:
            try:
                payload = json.loads(text)
                if not isinstance(payload, dict):
                    raise ValueError("not an object")
                left.append(payload)
                steps[int(message_id)] = {str(step) for step in json.loads(done or "[]")}
            except (TypeError, ValueError):
                log.warning("dropping an unreadable unchecked message %s", message_id)
                db.execute("UPDATE mod_seen SET payload = NULL WHERE message_id = ?", (message_id,))
        return left, steps


    # -- once per message ----------------------------------------------------------

    async def claim(self, message_id: int, payload: dict[str, Any]) -> bool:
        """Take a message for checking; False if it was taken before (by this or an earlier run)."""
        if self.path is None:
            if message_id in self._claimed:
                return False
            self._claimed.add(message_id)
            return True
        return bool(await self._call(self._claim, message_id, json.dumps(payload), time.time()))

    def _claim(self, message_id: int, text: str, now: float) -> bool:
        assert self._db is not None
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO mod_seen (message_id, created, payload) VALUES (?, ?, ?)", (message_id, now, text)
        )
        return cursor.rowcount == 1

    async def step_done(self, message_id: int, step: str) -> None:
        """One step of a message's checks is over (a caption posted, an alert, the alt
        text): a check repeated after a restart skips it."""
        if self.path is not None and self._executor is not None:
            await self._call(
                self._execute,
                "UPDATE mod_seen SET steps = json_insert(coalesce(steps, '[]'), '$[#]', ?) WHERE message_id = ?",
                (step, message_id),
            )

    async def done(self, message_id: int) -> None:
        """The message's checks are over (answered, or never can be).  After
        :meth:`close` nothing is marked: the message is checked again at the next start."""
        if self.path is not None and self._executor is not None:
            await self._call(self._execute, "UPDATE mod_seen SET payload = NULL WHERE message_id = ?", (message_id,))

    def _execute(self, sql: str, args: tuple[Any, ...]) -> int:
        assert self._db is not None
        return int(self._db.execute(sql, args).rowcount)

    # -- captions ------------------------------------------------------------------

    async def add(self, rows: Sequence[CaptionRow]) -> None:
        if self.path is None or not rows:
            return
        await self._call(self._add, list(rows))

    def _add(self, rows: list[CaptionRow]) -> None:
        assert self._db is not None
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            for r in rows:
                self._db.execute(
                    "INSERT INTO mod_captions (message_id, channel_id, guild_id, poster_id, created, link, filename, caption, rules, position)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (message_id, position) DO NOTHING",
                    (r.message_id, r.channel_id, r.guild_id, r.poster_id, r.created, r.link, r.filename, r.caption, " ".join(r.rules),
                     r.position),
                )

    async def search(
        self, query: str, *, since: float | None = None, poster_id: int | None = None, limit: int = 10, guild_id: int | None = None
    ) -> list[CaptionRow]:
        """Best matches first: rows with every word, else rows with any of them
        (``guild_id``: only that server's images)."""
        if self.path is None:
            return []
        for any_word in (False, True):
            expression = match_expression(query, any_word=any_word)
            if expression is None:
                return []
            rows = await self._call(self._search, expression, since, poster_id, limit, guild_id)
            if rows:
                return rows
        return []

    def _search(
        self, expression: str, since: float | None, poster_id: int | None, limit: int, guild_id: int | None = None
    ) -> list[CaptionRow]:
        assert self._db is not None
        sql = (
            "SELECT c.message_id, c.channel_id, c.guild_id, c.poster_id, c.created, c.link, c.caption, c.filename, c.rules, c.position"
            " FROM mod_captions_fts JOIN mod_captions c ON c.id = mod_captions_fts.rowid"
            " WHERE mod_captions_fts MATCH ?"
        )
        args: list[Any] = [expression]
        if since is not None:
            sql += " AND c.created >= ?"
            args.append(since)
        if poster_id is not None:
            sql += " AND c.poster_id = ?"
            args.append(poster_id)
        if guild_id is not None:
            sql += " AND c.guild_id = ?"
            args.append(guild_id)
        sql += " ORDER BY bm25(mod_captions_fts), c.created DESC LIMIT ?"
        args.append(limit)
        return [
            CaptionRow(int(m), int(ch), g, int(p), float(t), link, caption, filename, tuple(rules.split()), int(pos))
            for m, ch, g, p, t, link, caption, filename, rules, pos in self._db.execute(sql, args)
        ]

    async def count(self) -> int:
        if self.path is None:
            return 0
        return int(await self._call(lambda: self._db.execute("SELECT count(*) FROM mod_captions").fetchone()[0]))  # type: ignore[union-attr]

    async def forget_member(self, poster_id: int, guild_id: int | None = None) -> int:
        """Remove every row of a member's images (in one server, with ``guild_id``); how many went."""
        if self.path is None:
            return 0
        if guild_id is None:
            return int(await self._call(self._execute, "DELETE FROM mod_captions WHERE poster_id = ?", (poster_id,)))
        sql = "DELETE FROM mod_captions WHERE poster_id = ? AND guild_id = ?"
        return int(await self._call(self._execute, sql, (poster_id, guild_id)))

    async def forget_message(self, message_id: int) -> int:
        """Remove a deleted message's rows; how many went."""
        if self.path is None:
            return 0
        return int(await self._call(self._execute, "DELETE FROM mod_captions WHERE message_id = ?", (message_id,)))

    async def purge(self, before: float, seen_before: float | None = None) -> int:
        """Remove captions older than ``before``, and the finished once-per-message
        marks older than ``seen_before`` (default: ``before``); captions removed."""
        if self.path is None:
            return 0
        return int(await self._call(self._purge, before, before if seen_before is None else seen_before))

    def _purge(self, before: float, seen_before: float) -> int:
        assert self._db is not None
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            removed = self._db.execute("DELETE FROM mod_captions WHERE created < ?", (before,)).rowcount
            self._db.execute("DELETE FROM mod_seen WHERE created < ? AND payload IS NULL", (seen_before,))
        return int(removed)
