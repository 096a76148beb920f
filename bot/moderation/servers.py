"""Per-server (guild) moderation settings, over the ``[moderation]`` defaults of the file.

A server may set its own caption / watch / alt-text channels, its log channel,
its moderator and allowed roles and its rules.  Each of these parts is either
*not set* (the server uses the operator's defaults) or *set* (the server's own
list replaces the default, and an empty list means "none", not "the default").
Writing to a part sets it; :meth:`ServerStore.reset` gives it back to the defaults.

Nothing here reaches the operator's other settings: :func:`effective` only
replaces the parts above, so a server can never raise generation or queue limits.

The store keeps its rows in the state database (tables ``srv_*``, beside the
job journal and the caption store, its own connection), with a numbered schema
(``srv_schema``) brought up to date at open by :data:`MIGRATIONS`, in one
transaction.  Every guild's settings are also held in memory, loaded at open and
updated on each write, so :meth:`ServerStore.cached` and
:meth:`ServerStore.effective` answer without waiting on the disk.  ``path=None``
keeps everything in memory only.  Nothing here imports discord.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sqlite3
import time
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from bot.config import ModerationRule, ModerationSettings
from bot.sqlite_file import SqliteFile, migrate_schema

log = logging.getLogger(__name__)

ChannelKind = Literal["captions", "watch", "alt-text", "log"]
RoleKind = Literal["moderator", "allowed"]
Part = Literal["captions", "watch", "alt-text", "log", "moderator", "allowed", "rules"]

#: channel kind -> ServerSettings field
CHANNEL_FIELDS: dict[str, str] = {
    "captions": "caption_channels",
    "watch": "watch_channels",
    "alt-text": "alt_text_channels",
    "log": "log_channel",
}
#: role kind -> ServerSettings field
ROLE_FIELDS: dict[str, str] = {"moderator": "moderator_roles", "allowed": "allowed_roles"}
#: every part a server may set -> ServerSettings field
PART_FIELDS: dict[str, str] = {**CHANNEL_FIELDS, **ROLE_FIELDS, "rules": "rules"}

#: ``log_channel`` of a server that set "no log channel" (None: not set, the default applies)
NO_LOG = 0

# -- schema ---------------------------------------------------------------------------

#: Migration steps, in order: ``MIGRATIONS[i]`` brings a file from version ``i`` to ``i + 1``.
#: Only ever append a step; never change one that was released.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: channels, roles, rules
    (
        """CREATE TABLE srv_channels (
            guild_id INTEGER NOT NULL,
            kind TEXT NOT NULL,
            channel_id INTEGER NOT NULL,
            PRIMARY KEY (guild_id, kind, channel_id)
        )""",
        """CREATE TABLE srv_roles (
            guild_id INTEGER NOT NULL,
            kind TEXT NOT NULL,
            role_id INTEGER NOT NULL,
            PRIMARY KEY (guild_id, kind, role_id)
        )""",
        """CREATE TABLE srv_rules (
            guild_id INTEGER NOT NULL,
            name TEXT NOT NULL COLLATE NOCASE,
            question TEXT NOT NULL,
            alert_role INTEGER,
            channel INTEGER,
            created REAL NOT NULL,
            PRIMARY KEY (guild_id, name)
        )""",
    ),
    # 2: rules on trial; which parts a guild has set (an empty set part replaces the default);
    #    at most one log channel per guild
    (
        "ALTER TABLE srv_rules ADD COLUMN trial INTEGER NOT NULL DEFAULT 0",
        """CREATE TABLE srv_parts (
            guild_id INTEGER NOT NULL,
            part TEXT NOT NULL,
            PRIMARY KEY (guild_id, part)
        )""",
        "INSERT OR IGNORE INTO srv_parts (guild_id, part) SELECT DISTINCT guild_id, kind FROM srv_channels",
        "INSERT OR IGNORE INTO srv_parts (guild_id, part) SELECT DISTINCT guild_id, kind FROM srv_roles",
        "INSERT OR IGNORE INTO srv_parts (guild_id, part) SELECT DISTINCT guild_id, 'rules' FROM srv_rules",
        """DELETE FROM srv_channels WHERE kind = 'log' AND rowid NOT IN
            (SELECT max(rowid) FROM srv_channels WHERE kind = 'log' GROUP BY guild_id)""",
        "CREATE UNIQUE INDEX srv_one_log ON srv_channels (guild_id) WHERE kind = 'log'",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(db: sqlite3.Connection) -> int:
    """Bring the ``srv_*`` tables up to :data:`SCHEMA_VERSION`; the version found."""
    return migrate_schema(db, "srv_schema", MIGRATIONS, "server settings")


# -- the settings of one server ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerRule:
    """One of a server's rules (see :class:`bot.config.ModerationRule`)."""

    name: str
    question: str
    alert_role: int | None = None
    #: only images in this channel (None: every watched channel)
    channel: int | None = None
    #: checked and recorded, alerts no one
    trial: bool = False
    #: when it was added (time.time()); not part of equality
    created: float = field(default=0.0, compare=False)

    def to_rule(self) -> ModerationRule:
        return ModerationRule(
            name=self.name,
            question=self.question,
            alert_role=self.alert_role,
            channels=[self.channel] if self.channel is not None else [],
            trial=self.trial,
        )


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """What one server set; a None field is not set (the file's default applies)."""

    caption_channels: tuple[int, ...] | None = None
    watch_channels: tuple[int, ...] | None = None
    alt_text_channels: tuple[int, ...] | None = None
    #: NO_LOG (0): set to "no log channel"
    log_channel: int | None = None
    moderator_roles: tuple[int, ...] | None = None
    allowed_roles: tuple[int, ...] | None = None
    rules: tuple[ServerRule, ...] | None = None

    @property
    def parts(self) -> frozenset[str]:
        """The parts this server set."""
        return frozenset(p for p, f in PART_FIELDS.items() if getattr(self, f) is not None)

    def rule(self, name: str) -> ServerRule | None:
        return next((r for r in self.rules or () if r.name.lower() == name.lower()), None)


def _one_line(exc: ValidationError, prefix: str = "") -> str:
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err["loc"])
    key = f"{prefix}.{where}" if prefix and where else prefix or where
    return f"{key}: {err['msg']}" if key else str(err["msg"])


def check_rule(rule: ServerRule, key: str = "rule") -> ModerationRule:
    """The rule as the bot runs it; ValueError (one line naming the key) if it is not valid."""
    try:
        return rule.to_rule()
    except ValidationError as exc:
        raise ValueError(_one_line(exc, key)) from None


def _check_id(value: Any, key: str, *, zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if zero else 1) or value >= 2**63:
        raise ValueError(f"{key}: must be a {'Discord id or 0' if zero else 'Discord id'} (a positive integer), got {value!r}")
    return value


def _check_rules(rules: Iterable[ServerRule], key: str = "rules") -> None:
    seen: set[str] = set()
    for i, rule in enumerate(rules):
        check_rule(rule, f"{key}[{i}]")
        if rule.name.lower() in seen:
            raise ValueError(f"{key}[{i}].name: two rules are named {rule.name.lower()!r}")
        seen.add(rule.name.lower())


# -- effective settings --------------------------------------------------------------


def effective(defaults: ModerationSettings, server: ServerSettings | None) -> ModerationSettings:
    """The server's moderation settings: the defaults with the parts it set replaced.
    Everything else (prompts, token limits, keep_days) stays the operator's."""
    if server is None:
        return defaults
    update: dict[str, Any] = {}
    for name in ("caption_channels", "watch_channels", "alt_text_channels", "moderator_roles"):
        value = getattr(server, name)
        if value is not None:
            update[name] = list(value)
    if server.log_channel is not None:
        update["log_channel"] = server.log_channel or None
    if server.rules is not None:
        update["rules"] = [rule.to_rule() for rule in server.rules]
    if not update:
        return defaults
    # validated again as a whole (unique rule names, the fields' own checks)
    return type(defaults).model_validate({**dict(defaults), **update})


def server_rules(defaults: Sequence[ModerationRule], channels: Callable[[int], bool], roles: Callable[[int], bool]) -> list[ServerRule]:
    """The file's rules as one server's own (:meth:`ServerStore.adopt_rules`): a rule kept to
    channels of another server does not apply here and is left out; a role of another
    server is not mentioned.  ``channels`` / ``roles``: whether an id is this server's."""
    adopted: list[ServerRule] = []
    for rule in defaults:
        here = [c for c in rule.channels if channels(c)]
        if rule.channels and not here:
            continue
        role = rule.alert_role if rule.alert_role is not None and roles(rule.alert_role) else None
        # a server's rule names one channel at most: the first of this server's
        adopted.append(ServerRule(rule.name, rule.question, role, here[0] if here else None, rule.trial))
    return adopted


def effective_allowed_roles(defaults: Sequence[int], server: ServerSettings | None) -> list[int]:
    """The roles that may use the bot in this server (``discord.allowed_roles`` unless it set its own)."""
    if server is None or server.allowed_roles is None:
        return list(defaults)
    return list(server.allowed_roles)


# -- the store -----------------------------------------------------------------------


class ServerStore(SqliteFile):
    """Servers' settings in the state database; ``path=None`` keeps them in memory only."""

    thread_name = "servers"

    def __init__(self, path: str | Path | None) -> None:
        super().__init__(path)
        self._cache: dict[int, ServerSettings] = {}
        self._effective: dict[int, tuple[ModerationSettings, ModerationSettings]] = {}
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        """Open the file (migrating its tables) and load every server's settings."""
        if not self._start():
            return
        self._cache = await self._call(self._open)
        self._effective.clear()
        log.info("settings of %d server(s) loaded", len(self._cache))

    def _open(self) -> dict[int, ServerSettings]:
        db = self._connect(timeout=10.0)
        try:
            found = migrate(db)
        except BaseException:
            db.close()
            raise
        if found != SCHEMA_VERSION:
            log.info("server settings: schema %d -> %d", found, SCHEMA_VERSION)
        self._db = db
        return self._load()

    def _load(self, guild_id: int | None = None) -> dict[int, ServerSettings]:
        assert self._db is not None
        where, args = ("WHERE guild_id = ?", (guild_id,)) if guild_id is not None else ("", ())
        lists: dict[int, dict[str, list[Any]]] = {}
        parts: dict[int, set[str]] = {}
        for g, part in self._db.execute(f"SELECT guild_id, part FROM srv_parts {where}", args):
            parts.setdefault(g, set()).add(part)
            lists.setdefault(g, {})
        for g, kind, cid in self._db.execute(f"SELECT guild_id, kind, channel_id FROM srv_channels {where} ORDER BY rowid", args):
            lists.setdefault(g, {}).setdefault(kind, []).append(cid)
        for g, kind, rid in self._db.execute(f"SELECT guild_id, kind, role_id FROM srv_roles {where} ORDER BY rowid", args):
            lists.setdefault(g, {}).setdefault(kind, []).append(rid)
        rules_sql = (
            f"SELECT guild_id, name, question, alert_role, channel, trial, created FROM srv_rules {where} ORDER BY created, rowid"
        )
        for g, name, question, role, channel, trial, created in self._db.execute(rules_sql, args):
            lists.setdefault(g, {}).setdefault("rules", []).append(
                ServerRule(name, question, role, channel, bool(trial), float(created))
            )
        out: dict[int, ServerSettings] = {}
        for g, values in lists.items():
            kw: dict[str, Any] = {}
            for part, name in PART_FIELDS.items():
                if part not in parts.get(g, set()):
                    continue
                if part == "log":
                    kw[name] = (values.get("log") or [NO_LOG])[-1]
                else:
                    kw[name] = tuple(values.get(part, ()))
            out[g] = ServerSettings(**kw)
        return out

    def _write(self, guild_id: int, settings: ServerSettings) -> None:
        """Replace every row of one guild (one transaction)."""
        assert self._db is not None
        db = self._db
        with db:
            db.execute("BEGIN IMMEDIATE")
            for table in ("srv_parts", "srv_channels", "srv_roles", "srv_rules"):
                db.execute(f"DELETE FROM {table} WHERE guild_id = ?", (guild_id,))
            db.executemany(
                "INSERT INTO srv_parts (guild_id, part) VALUES (?, ?)", [(guild_id, p) for p in sorted(settings.parts)]
            )
            for kind, name in CHANNEL_FIELDS.items():
                value = getattr(settings, name)
                if kind == "log":
                    ids = [value] if value else []  # NO_LOG: the part is set, no row
                else:
                    ids = list(value or ())
                db.executemany(
                    "INSERT OR IGNORE INTO srv_channels (guild_id, kind, channel_id) VALUES (?, ?, ?)",
                    [(guild_id, kind, c) for c in ids],
                )
            for kind, name in ROLE_FIELDS.items():
                db.executemany(
                    "INSERT OR IGNORE INTO srv_roles (guild_id, kind, role_id) VALUES (?, ?, ?)",
                    [(guild_id, kind, r) for r in getattr(settings, name) or ()],
                )
            db.executemany(
                "INSERT INTO srv_rules (guild_id, name, question, alert_role, channel, trial, created) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(guild_id, r.name, r.question, r.alert_role, r.channel, int(r.trial), r.created) for r in settings.rules or ()],
            )

    async def _update(self, guild_id: int, change: Callable[[ServerSettings], ServerSettings]) -> ServerSettings:
        """Apply ``change`` to a guild's settings, write them, then update the cache."""
        async with self._lock:
            new = change(self._cache.get(guild_id, ServerSettings()))
            if self.path is not None:
                await self._call(self._write, guild_id, new)
            self._set_cached(guild_id, new)
            return new

    def _set_cached(self, guild_id: int, settings: ServerSettings) -> None:
        if settings == ServerSettings():
            self._cache.pop(guild_id, None)
        else:
            self._cache[guild_id] = settings
        self._effective.pop(guild_id, None)

    # -- reading ---------------------------------------------------------------------

    def cached(self, guild_id: int | None) -> ServerSettings | None:
        """What a guild set (None: nothing), from memory."""
        return self._cache.get(guild_id) if guild_id is not None else None

    def effective(self, defaults: ModerationSettings, guild_id: int | None) -> ModerationSettings:
        """:func:`effective` for a guild, from memory (remembered until the guild or the defaults change)."""
        server = self.cached(guild_id)
        if server is None or guild_id is None:
            return defaults
        hit = self._effective.get(guild_id)
        if hit is not None and hit[0] is defaults:
            return hit[1]
        result = effective(defaults, server)
        self._effective[guild_id] = (defaults, result)
        return result

    def guilds(self) -> list[int]:
        """Guilds that set anything."""
        return sorted(self._cache)

    async def get(self, guild_id: int) -> ServerSettings:
        """What a guild set, read from the file (the cache is refreshed with it)."""
        if self.path is None:
            return self._cache.get(guild_id, ServerSettings())
        async with self._lock:
            settings = (await self._call(self._load, guild_id)).get(guild_id, ServerSettings())
            self._set_cached(guild_id, settings)
            return settings

    # -- writing ---------------------------------------------------------------------

    async def set_channel(self, guild_id: int, kind: ChannelKind | str, channel_id: int, enabled: bool) -> ServerSettings:
        """Add (or remove) a channel of a kind; the log channel replaces the one before.
        Removing the log channel leaves the server with none (not the default)."""
        if kind not in CHANNEL_FIELDS:
            raise ValueError(f"channel kind: must be one of {', '.join(CHANNEL_FIELDS)}, got {kind!r}")
        _check_id(channel_id, "channel")
        name = CHANNEL_FIELDS[kind]

        def change(s: ServerSettings) -> ServerSettings:
            if kind == "log":
                if enabled:
                    return dataclasses.replace(s, log_channel=channel_id)
                return dataclasses.replace(s, log_channel=NO_LOG if s.log_channel in (None, channel_id) else s.log_channel)
            update: dict[str, Any] = {name: _toggle(getattr(s, name), channel_id, enabled)}
            return dataclasses.replace(s, **update)

        return await self._update(guild_id, change)

    async def set_role(self, guild_id: int, kind: RoleKind | str, role_id: int, enabled: bool) -> ServerSettings:
        if kind not in ROLE_FIELDS:
            raise ValueError(f"role kind: must be one of {', '.join(ROLE_FIELDS)}, got {kind!r}")
        _check_id(role_id, "role")
        name = ROLE_FIELDS[kind]

        def change(s: ServerSettings) -> ServerSettings:
            update: dict[str, Any] = {name: _toggle(getattr(s, name), role_id, enabled)}
            return dataclasses.replace(s, **update)

        return await self._update(guild_id, change)

    async def add_rule(self, guild_id: int, rule: ServerRule) -> ServerSettings:
        """Add a rule; ValueError for a name already used (any case) or a bad rule."""
        check_rule(rule)
        if rule.created == 0.0:
            rule = dataclasses.replace(rule, created=time.time())

        def change(s: ServerSettings) -> ServerSettings:
            if s.rule(rule.name) is not None:
                raise ValueError(f"rule.name: this server already has a rule named {rule.name.lower()!r}")
            return dataclasses.replace(s, rules=(*(s.rules or ()), rule))

        return await self._update(guild_id, change)

    async def adopt_rules(self, guild_id: int, rules: Sequence[ServerRule]) -> ServerSettings:
        """Before a server's first change to its rules: the defaults it runs become its own list
        (so adding one rule does not drop the others).  Nothing changes once it has its own."""
        _check_rules(rules)
        return await self._update(guild_id, lambda s: s if s.rules is not None else dataclasses.replace(s, rules=tuple(rules)))

    async def remove_rule(self, guild_id: int, name: str) -> bool:
        """Remove a rule; False if the guild has none of that name."""
        current = self._cache.get(guild_id)
        if current is None or current.rule(name) is None:
            return False
        await self._update(
            guild_id, lambda s: dataclasses.replace(s, rules=tuple(r for r in s.rules or () if r.name.lower() != name.lower()))
        )
        return True

    async def set_trial(self, guild_id: int, name: str, trial: bool) -> bool:
        """Put a rule on trial (or take it off); False if the guild has no rule of that name."""
        current = self._cache.get(guild_id)
        if current is None or current.rule(name) is None:
            return False

        def change(s: ServerSettings) -> ServerSettings:
            rules = tuple(dataclasses.replace(r, trial=trial) if r.name.lower() == name.lower() else r for r in s.rules or ())
            return dataclasses.replace(s, rules=rules)

        await self._update(guild_id, change)
        return True

    async def reset(self, guild_id: int, part: Part | str) -> ServerSettings:
        """Give one part back to the defaults."""
        if part not in PART_FIELDS:
            raise ValueError(f"part: must be one of {', '.join(PART_FIELDS)}, got {part!r}")
        update: dict[str, Any] = {PART_FIELDS[part]: None}
        return await self._update(guild_id, lambda s: dataclasses.replace(s, **update))

    async def replace(self, guild_id: int, settings: ServerSettings) -> ServerSettings:
        """Replace everything a guild set (an import); rules keep the date they were first added."""
        _check_rules(settings.rules or ())
        for name in ("caption_channels", "watch_channels", "alt_text_channels", "moderator_roles", "allowed_roles"):
            for i, value in enumerate(getattr(settings, name) or ()):
                _check_id(value, f"{name}[{i}]")
        if settings.log_channel is not None:
            _check_id(settings.log_channel, "log_channel", zero=True)
        now = time.time()

        def change(s: ServerSettings) -> ServerSettings:
            if settings.rules is None:
                return settings
            rules = []
            for r in settings.rules:
                old = s.rule(r.name)
                created = old.created if old is not None else r.created or now
                rules.append(dataclasses.replace(r, created=created))
            return dataclasses.replace(settings, rules=tuple(rules))

        return await self._update(guild_id, change)


def _toggle(values: tuple[int, ...] | None, value: int, enabled: bool) -> tuple[int, ...]:
    values = values or ()
    if enabled:
        return values if value in values else (*values, value)
    return tuple(v for v in values if v != value)


# -- TOML import / export ----------------------------------------------------------

_LIST_KEYS = ("caption_channels", "watch_channels", "alt_text_channels", "moderator_roles", "allowed_roles")
_KEYS = (*_LIST_KEYS[:3], "log_channel", *_LIST_KEYS[3:], "rules")
_RULE_KEYS = ("name", "question", "alert_role", "channel", "trial")


def _toml_str(text: str) -> str:
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def export_toml(settings: ServerSettings) -> str:
    """A TOML document of what a server set (keys left out: the defaults apply)."""
    lines = [
        "# llava-bot: one server's moderation settings. A key left out uses the bot's defaults;",
        "# an empty list means none.",
    ]
    for key in _KEYS:
        value = getattr(settings, key)
        if value is None:
            continue
        if key == "log_channel":
            lines.append(f"log_channel = {value}" + ("  # none" if value == NO_LOG else ""))
        elif key == "rules":
            if not value:
                lines.append("rules = []")
        else:
            lines.append(f"{key} = [{', '.join(str(v) for v in value)}]")
    for rule in settings.rules or ():
        lines += ["", "[[rules]]", f"name = {_toml_str(rule.name)}", f"question = {_toml_str(rule.question)}"]
        if rule.alert_role is not None:
            lines.append(f"alert_role = {rule.alert_role}")
        if rule.channel is not None:
            lines.append(f"channel = {rule.channel}")
        lines.append(f"trial = {'true' if rule.trial else 'false'}")
    return "\n".join(lines) + "\n"


def parse_toml(text: str) -> ServerSettings:
    """Read :func:`export_toml`'s document (a ``[moderation]`` table around it also does);
    ValueError with one line naming the bad key."""
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"not valid TOML: {exc}") from None
    if set(data) == {"moderation"} and isinstance(data["moderation"], dict):
        data = data["moderation"]
    for key in data:
        if key not in _KEYS:
            raise ValueError(f"{key}: unknown key (known: {', '.join(_KEYS)})")
    kw: dict[str, Any] = {}
    for key in _LIST_KEYS:
        if key in data:
            value = data[key]
            if not isinstance(value, list):
                raise ValueError(f"{key}: must be a list of ids, got {value!r}")
            ids = [_check_id(v, f"{key}[{i}]") for i, v in enumerate(value)]
            kw[key] = tuple(dict.fromkeys(ids))
    if "log_channel" in data:
        kw["log_channel"] = _check_id(data["log_channel"], "log_channel", zero=True)
    if "rules" in data:
        if not isinstance(data["rules"], list):
            raise ValueError("rules: must be a list of tables ([[rules]])")
        rules = []
        for i, item in enumerate(data["rules"]):
            key = f"rules[{i}]"
            if not isinstance(item, dict):
                raise ValueError(f"{key}: must be a table ([[rules]])")
            for k in item:
                if k not in _RULE_KEYS:
                    raise ValueError(f"{key}.{k}: unknown key (known: {', '.join(_RULE_KEYS)})")
            for k in ("name", "question"):
                if not isinstance(item.get(k), str):
                    raise ValueError(f"{key}.{k}: must be a string" + ("" if k in item else " (missing)"))
            trial = item.get("trial", False)
            if not isinstance(trial, bool):
                raise ValueError(f"{key}.trial: must be true or false, got {trial!r}")
            alert_role = item.get("alert_role")
            channel = item.get("channel")
            rules.append(
                ServerRule(
                    name=item["name"],
                    question=item["question"],
                    alert_role=None if alert_role is None else _check_id(alert_role, f"{key}.alert_role"),
                    channel=None if channel is None else _check_id(channel, f"{key}.channel"),
                    trial=trial,
                )
            )
        _check_rules(rules)
        kw["rules"] = tuple(rules)
    return ServerSettings(**kw)


# -- diff ----------------------------------------------------------------------------

_LIST_LABELS = {
    "caption_channels": ("captions channel", "<#{}>"),
    "watch_channels": ("watch channel", "<#{}>"),
    "alt_text_channels": ("alt-text channel", "<#{}>"),
    "moderator_roles": ("moderator role", "<@&{}>"),
    "allowed_roles": ("allowed role", "<@&{}>"),
}


def _channel(value: int | None, none: str) -> str:
    return f"<#{value}>" if value else none


def _log(value: int | None) -> str:
    return "default" if value is None else _channel(value, "none")


def _role(value: int | None) -> str:
    return f"<@&{value}>" if value else "none"


def diff(old: ServerSettings, new: ServerSettings) -> list[str]:
    """What changes from ``old`` to ``new``, one line each ("+ rule x", "- watch channel <#1>", "~ ...")."""
    lines: list[str] = []
    for key in _KEYS:
        a, b = getattr(old, key), getattr(new, key)
        if a == b:
            continue
        if key == "log_channel":
            lines.append(f"~ log channel: {_log(a)} -> {_log(b)}")
            continue
        label = _LIST_LABELS[key][0] + "s" if key != "rules" else "rules"
        if a is None:
            lines.append(f"~ {label}: defaults -> this server's own")
        elif b is None:
            lines.append(f"~ {label}: this server's own -> defaults")
        if key == "rules":
            lines += _diff_rules(a or (), b or ())
            continue
        noun, fmt = _LIST_LABELS[key]
        lines += [f"- {noun} {fmt.format(v)}" for v in a or () if v not in (b or ())]
        lines += [f"+ {noun} {fmt.format(v)}" for v in b or () if v not in (a or ())]
    return lines


def _diff_rules(old: Sequence[ServerRule], new: Sequence[ServerRule]) -> list[str]:
    before = {r.name.lower(): r for r in old}
    after = {r.name.lower(): r for r in new}
    lines = [f"- rule {r.name}" for r in old if r.name.lower() not in after]
    for r in new:
        was = before.get(r.name.lower())
        if was is None:
            lines.append(f"+ rule {r.name}")
            continue
        if was.question != r.question:
            lines.append(f"~ rule {r.name}: question {was.question!r} -> {r.question!r}")
        if was.alert_role != r.alert_role:
            lines.append(f"~ rule {r.name}: alert role {_role(was.alert_role)} -> {_role(r.alert_role)}")
        if was.channel != r.channel:
            lines.append(
                f"~ rule {r.name}: channel {_channel(was.channel, 'all watched')} -> {_channel(r.channel, 'all watched')}"
            )
        if was.trial != r.trial:
            lines.append(f"~ rule {r.name}: trial {'on' if was.trial else 'off'} -> {'on' if r.trial else 'off'}")
        if was.name != r.name:
            lines.append(f"~ rule {was.name}: renamed {r.name}")
    return lines
