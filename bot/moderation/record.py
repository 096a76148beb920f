"""Moderation rules' track record and the moderators' decision memory, per server (guild).

Each rule keeps a record per server: the images it was asked about (``rec_checks``),
its alerts and what moderators made of them (``rec_alerts``: "Looks fine" is fate
``fine``, "Delete message" ``deleted``, "Right call" on a rule on trial ``confirmed``).
The first review of an alert stands; later presses change nothing.

An alert also keeps a perceptual hash of its image (:func:`image_hash`: a pHash of
the structure plus a colour hash, as pHash alone takes a red and a blue square of one
shape for one picture).  :meth:`RecordStore.recall` finds the latest ``fine`` /
``deleted`` decision in the same server about a :func:`near` image, so a repost after
"Looks fine" raises no alert for that rule and one after "Delete message" is alerted
at once, without asking the model.  ``/forget`` (a member, in one server) and
``moderation.keep_days`` drop the hash and the poster id; the counts stay.  A deleted
message keeps its hash: Discord does not say who deleted it, and a repost of a
picture moderators deleted is what the memory is for.

The ``rec_*`` tables live in the state database (their own connection), with a
numbered schema (``rec_schema``) brought up to date at open by :data:`MIGRATIONS`.
``path=None`` keeps everything in an in-memory database (same worker thread).
Nothing here imports discord.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import sqlite3
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import imagehash
from PIL import Image

from bot.sqlite_file import SqliteFile, migrate_schema

log = logging.getLogger(__name__)

Fate = Literal["fine", "deleted", "confirmed"]
FATES: tuple[str, ...] = ("fine", "deleted", "confirmed")

#: at most this many of the 64 pHash bits may differ for two images to be "near"
PHASH_NEAR = 6
#: watched messages remembered per server for /rule test
SEEN_KEPT = 200
#: at most this many colour-hash bits (14 bins x 3 bits) may differ
COLOUR_NEAR = 4

# -- hashing (sync, CPU: callers run these in a thread) --------------------------------


def _rgb(img: Image.Image) -> Image.Image:
    """RGB, transparent parts on white (so a transparent PNG hashes like its flattened copy)."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return img.convert("RGB")


def image_hash(data_uri: str) -> str:
    """``"<phash hex>:<colour hash hex>"`` of a ``data:image/...;base64,...`` URI;
    ValueError when it is not one or holds no image Pillow can read."""
    header, sep, payload = data_uri.partition(",")
    if not sep or not header.startswith("data:image/") or not header.endswith(";base64"):
        raise ValueError("not a base64 image data URI")
    try:
        raw = base64.b64decode(payload, validate=True)
        with Image.open(io.BytesIO(raw)) as opened:
            img = _rgb(opened)
    except (binascii.Error, OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"unreadable image: {exc}") from None
    return f"{imagehash.phash(img, hash_size=8)}:{imagehash.colorhash(img, binbits=3)}"


def _parts(value: str) -> tuple[int, int, int]:
    phash, sep, colour = value.partition(":")
    if not sep or len(phash) != 16 or not colour:
        raise ValueError(f"not an image hash: {value!r}")
    return int(phash, 16), int(colour, 16), len(colour)


def hash_distance(a: str, b: str) -> tuple[int, int]:
    """(pHash bits differing, colour-hash bits differing); ValueError for a string
    that is not an :func:`image_hash`, or two of different kinds."""
    pa, ca, wa = _parts(a)
    pb, cb, wb = _parts(b)
    if wa != wb:
        raise ValueError("colour hashes of different sizes")
    return (pa ^ pb).bit_count(), (ca ^ cb).bit_count()


def near(a: str, b: str) -> bool:
    """The same or a near-identical picture (re-encoded, resized, slightly cropped or
    brightened); an unreadable hash is near nothing."""
    try:
        phash, colour = hash_distance(a, b)
    except ValueError:
        return False
    return phash <= PHASH_NEAR and colour <= COLOUR_NEAR


# -- schema ---------------------------------------------------------------------------

#: ``MIGRATIONS[i]`` brings a file from version ``i`` to ``i + 1``; only ever append a step.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: alerts (with their fate and image hash) and checks per rule
    (
        """CREATE TABLE rec_alerts (
            alert_id INTEGER PRIMARY KEY,
            guild_id INTEGER NOT NULL,
            rule TEXT NOT NULL COLLATE NOCASE,
            message_id INTEGER NOT NULL,
            channel_id INTEGER NOT NULL,
            poster_id INTEGER,
            image_hash TEXT,
            trial INTEGER NOT NULL DEFAULT 0,
            created REAL NOT NULL,
            fate TEXT CHECK (fate IN ('fine', 'deleted', 'confirmed')),
            by_user INTEGER,
            decided_at REAL,
            remembered INTEGER NOT NULL DEFAULT 0
        )""",
        """CREATE TABLE rec_checks (
            guild_id INTEGER NOT NULL,
            rule TEXT NOT NULL COLLATE NOCASE,
            checks INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (guild_id, rule)
        )""",
        "CREATE INDEX rec_alerts_rule ON rec_alerts (guild_id, rule)",
        "CREATE INDEX rec_alerts_poster ON rec_alerts (guild_id, poster_id)",
        "CREATE INDEX rec_alerts_message ON rec_alerts (message_id)",
        "CREATE INDEX rec_alerts_created ON rec_alerts (created)",
        # the latest watched messages with images, per server (what /rule test asks about)
        """CREATE TABLE rec_seen (
            message_id INTEGER PRIMARY KEY,
            guild_id INTEGER NOT NULL,
            channel_id INTEGER NOT NULL,
            poster_id INTEGER,
            created REAL NOT NULL
        )""",
        "CREATE INDEX rec_seen_guild ON rec_seen (guild_id, created)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(db: sqlite3.Connection) -> int:
    """Bring the ``rec_*`` tables up to :data:`SCHEMA_VERSION`; the version found."""
    return migrate_schema(db, "rec_schema", MIGRATIONS, "rule records")


# -- data -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    """A moderator's decision about an alerted image, as remembered."""

    rule: str
    #: only "fine" or "deleted" come from :meth:`RecordStore.recall`
    fate: Fate
    by_user: int
    decided_at: float
    #: the message the alert was about
    message_id: int
    #: the alert message
    alert_id: int

    @property
    def day(self) -> str:
        """The day of the decision, ``"2026-12-03"`` (UTC)."""
        return datetime.fromtimestamp(self.decided_at, tz=UTC).strftime("%Y-%m-%d")


@dataclass(frozen=True, slots=True)
class RuleRecord:
    """One rule's track record in one server."""

    rule: str
    #: images the rule was asked about (answers received)
    checks: int = 0
    #: alerts posted (trial and remembered ones included)
    alerts: int = 0
    fine: int = 0
    deleted: int = 0
    confirmed: int = 0
    #: reposts decided from memory (no model question)
    remembered: int = 0

    @property
    def open(self) -> int:
        """Alerts no moderator reviewed."""
        return max(0, self.alerts - self.fine - self.deleted - self.confirmed)

    @property
    def wrong_share(self) -> float | None:
        """The share of reviewed alerts found fine; None when none was reviewed."""
        reviewed = self.fine + self.deleted + self.confirmed
        return self.fine / reviewed if reviewed else None


@dataclass(frozen=True, slots=True)
class AlertRow:
    """One recorded alert."""

    guild_id: int
    rule: str
    alert_id: int
    message_id: int
    channel_id: int
    poster_id: int | None
    image_hash: str | None
    trial: bool
    created: float
    fate: Fate | None
    by_user: int | None
    decided_at: float | None


_ROW = "guild_id, rule, alert_id, message_id, channel_id, poster_id, image_hash, trial, created, fate, by_user, decided_at"
_FORGET = "UPDATE rec_alerts SET image_hash = NULL, poster_id = NULL"
_KEPT = "(image_hash IS NOT NULL OR poster_id IS NOT NULL)"


# -- the store ------------------------------------------------------------------------


class RecordStore(SqliteFile):
    """Rules' records and decision memory; ``path=None`` keeps them in an in-memory database."""

    thread_name = "record"

    def _start(self) -> bool:
        """Start the worker thread (with or without a file); False if it already runs."""
        if self._executor is not None:
            return False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.thread_name)
        return True

    def _connect(self, **kw: Any) -> sqlite3.Connection:
        if self.path is not None:
            return super()._connect(**kw)
        return sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None, **kw)

    async def open(self) -> None:
        """Open the file (migrating its tables)."""
        if self._start():
            await self._call(self._open)

    def _open(self) -> None:
        db = self._connect(timeout=10.0)
        try:
            found = migrate(db)
        except BaseException:
            db.close()
            raise
        if found != SCHEMA_VERSION:
            log.info("rule records: schema %d -> %d", found, SCHEMA_VERSION)
        self._db = db

    def _run(self, sql: str, args: tuple[Any, ...]) -> int:
        assert self._db is not None
        return int(self._db.execute(sql, args).rowcount)

    # -- writing ---------------------------------------------------------------------

    async def count_checks(self, guild_id: int, counts: Mapping[str, int]) -> None:
        """Add the rules' checks of one image (rule name -> answers received)."""
        rows = [(guild_id, rule, int(n)) for rule, n in counts.items() if n]
        if rows:
            await self._call(self._count_checks, rows)

    def _count_checks(self, rows: list[tuple[int, str, int]]) -> None:
        assert self._db is not None
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT INTO rec_checks (guild_id, rule, checks) VALUES (?, ?, ?)"
                " ON CONFLICT (guild_id, rule) DO UPDATE SET checks = checks + excluded.checks",
                rows,
            )

    async def add_alert(
        self, guild_id: int, rule: str, *, alert_id: int, message_id: int, channel_id: int, poster_id: int | None,
        image_hash: str | None, trial: bool, remembered: bool = False, created: float | None = None,
    ) -> None:
        """Record a posted alert (once per alert id)."""
        await self._call(
            self._run,
            "INSERT OR IGNORE INTO rec_alerts (guild_id, rule, alert_id, message_id, channel_id, poster_id, image_hash, trial,"
            " created, remembered) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (guild_id, rule, alert_id, message_id, channel_id, poster_id, image_hash, int(trial),
             time.time() if created is None else created, int(remembered)),
        )

    async def review(self, alert_id: int, fate: Fate, by_user: int, at: float | None = None) -> AlertRow | None:
        """Record a moderator's review; the row when this one set the fate, None when the
        alert is unknown or was reviewed before (the first decision stands)."""
        if fate not in FATES:
            raise ValueError(f"fate: must be one of {', '.join(FATES)}, got {fate!r}")
        return await self._call(self._review, alert_id, fate, by_user, time.time() if at is None else at)

    def _review(self, alert_id: int, fate: str, by_user: int, at: float) -> AlertRow | None:
        sql = "UPDATE rec_alerts SET fate = ?, by_user = ?, decided_at = ? WHERE alert_id = ? AND fate IS NULL"
        return self._alert_row(alert_id) if self._run(sql, (fate, by_user, at, alert_id)) == 1 else None

    async def forget_rule(self, guild_id: int, rule: str) -> None:
        """Drop a removed rule's record (alerts and checks) in one server."""
        await self._call(self._forget_rule, guild_id, rule)

    def _forget_rule(self, guild_id: int, rule: str) -> None:
        assert self._db is not None
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM rec_alerts WHERE guild_id = ? AND rule = ?", (guild_id, rule))
            self._db.execute("DELETE FROM rec_checks WHERE guild_id = ? AND rule = ?", (guild_id, rule))

    async def forget_member(self, guild_id: int, poster_id: int) -> int:
        """Forget a member's images in one server (hash and poster id; counts stay); rows changed."""
        await self._call(self._run, "DELETE FROM rec_seen WHERE guild_id = ? AND poster_id = ?", (guild_id, poster_id))
        return int(await self._call(self._run, f"{_FORGET} WHERE guild_id = ? AND poster_id = ?", (guild_id, poster_id)))

    async def note_seen(self, guild_id: int, channel_id: int, message_id: int, poster_id: int, created: float) -> None:
        """A watched message with images (the server keeps its latest :data:`SEEN_KEPT`)."""
        await self._call(self._note_seen, guild_id, channel_id, message_id, poster_id, created)

    def _note_seen(self, guild_id: int, channel_id: int, message_id: int, poster_id: int, created: float) -> None:
        assert self._db is not None
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT OR IGNORE INTO rec_seen (message_id, guild_id, channel_id, poster_id, created) VALUES (?, ?, ?, ?, ?)",
                (message_id, guild_id, channel_id, poster_id, created),
            )
            self._db.execute(
                "DELETE FROM rec_seen WHERE guild_id = ? AND message_id NOT IN"
                " (SELECT message_id FROM rec_seen WHERE guild_id = ? ORDER BY created DESC, message_id DESC LIMIT ?)",
                (guild_id, guild_id, SEEN_KEPT),
            )

    async def recent(self, guild_id: int, limit: int) -> list[tuple[int, int]]:
        """(channel id, message id) of the server's latest watched messages, newest first."""
        sql = "SELECT channel_id, message_id FROM rec_seen WHERE guild_id = ? ORDER BY created DESC, message_id DESC LIMIT ?"
        rows = await self._call(self._rows, sql, (guild_id, limit))
        return [(int(c), int(m)) for c, m in rows]

    def _rows(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        assert self._db is not None
        return list(self._db.execute(sql, args))

    async def purge(self, before: float) -> int:
        """Forget the hashes and poster ids of alerts created before ``before``, and the
        watched messages seen before then; alert rows changed."""
        await self._call(self._run, "DELETE FROM rec_seen WHERE created < ?", (before,))
        return int(await self._call(self._run, f"{_FORGET} WHERE created < ? AND {_KEPT}", (before,)))

    # -- reading ---------------------------------------------------------------------

    async def alert_row(self, alert_id: int) -> AlertRow | None:
        return await self._call(self._alert_row, alert_id)

    def _alert_row(self, alert_id: int) -> AlertRow | None:
        assert self._db is not None
        row = self._db.execute(f"SELECT {_ROW} FROM rec_alerts WHERE alert_id = ?", (alert_id,)).fetchone()
        if row is None:
            return None
        g, rule, a, m, ch, p, h, trial, created, fate, by, at = row
        return AlertRow(int(g), rule, int(a), int(m), int(ch), p, h, bool(trial), float(created), fate, by, at)

    async def recall(self, guild_id: int, image_hash: str, rules: Iterable[str] | None = None) -> dict[str, Decision]:
        """Per rule, the latest "fine" or "deleted" decision in this server about an image
        :func:`near` this one.  With ``rules``, only those (any case; keyed as given)."""
        wanted = {name.lower(): name for name in rules} if rules is not None else None
        return await self._call(self._recall, guild_id, image_hash, wanted)

    def _recall(self, guild_id: int, image_hash: str, wanted: dict[str, str] | None) -> dict[str, Decision]:
        assert self._db is not None
        rows = self._db.execute(
            "SELECT rule, fate, by_user, decided_at, message_id, alert_id, image_hash FROM rec_alerts"
            " WHERE guild_id = ? AND image_hash IS NOT NULL AND fate IN ('fine', 'deleted')"
            " ORDER BY decided_at DESC, rowid DESC",
            (guild_id,),
        )
        found: dict[str, Decision] = {}
        for rule, fate, by_user, decided_at, message_id, alert_id, hashed in rows:
            key = rule.lower()
            if key in found or (wanted is not None and key not in wanted) or not near(image_hash, hashed):
                continue
            name = wanted[key] if wanted is not None else rule
            found[key] = Decision(name, fate, int(by_user), float(decided_at), int(message_id), int(alert_id))
        return {d.rule: d for d in found.values()}

    async def records(self, guild_id: int) -> dict[str, RuleRecord]:
        """Every rule's track record in a server (rules checked but never alerted included),
        by name as first stored."""
        return await self._call(self._records, guild_id)

    def _records(self, guild_id: int) -> dict[str, RuleRecord]:
        assert self._db is not None
        out: dict[str, RuleRecord] = {}
        for rule, checks in self._db.execute("SELECT rule, checks FROM rec_checks WHERE guild_id = ? ORDER BY rowid", (guild_id,)):
            out[rule.lower()] = RuleRecord(rule, checks=int(checks))
        # with min(rowid) the bare "rule" is the group's first alert's spelling (SQLite); the
        # rowid is the alert id, a Discord snowflake, so the first is the earliest
        for rule, _, alerts, fine, deleted, confirmed, remembered in self._db.execute(
            "SELECT rule, min(rowid), count(*), sum(fate = 'fine'), sum(fate = 'deleted'), sum(fate = 'confirmed'),"
            " sum(remembered) FROM rec_alerts WHERE guild_id = ? GROUP BY rule",
            (guild_id,),
        ):
            before = out.get(rule.lower())
            out[rule.lower()] = RuleRecord(
                before.rule if before is not None else rule, before.checks if before is not None else 0,
                int(alerts), int(fine or 0), int(deleted or 0), int(confirmed or 0), int(remembered or 0),
            )
        return {r.rule: r for r in out.values()}
