"""A local fake Discord (REST + gateway + CDN) for end-to-end tests of the real discord.py client.

One aiohttp application on 127.0.0.1 (random free port) serves:

* REST under ``/api/v10`` (login, messages, typing, application commands,
  interaction callbacks and webhooks/follow-ups, ...), every request recorded in
  :attr:`FakeDiscord.requests`, every message the bot creates or edits in
  :attr:`FakeDiscord.sent`;
* the gateway websocket at :attr:`FakeDiscord.gateway_url` (HELLO, heartbeat ACKs,
  IDENTIFY -> READY + GUILD_CREATE, RESUME -> replay + RESUMED, plain TEXT
  frames whatever ``compress=`` the client asks for);
* a CDN for attachments (:meth:`FakeDiscord.add_attachment`), downloads recorded
  in :attr:`FakeDiscord.downloads`, plus redirects and plain files.

Point discord.py at it (process-wide; restore afterwards)::

    discord.http.Route.BASE = f"{fake.base_url}/api/v10"
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)

Written from discord.py 2.7.1's own source (http.py, gateway.py, state.py,
interactions.py, webhook/async_.py) and Discord's documented payloads.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import mimetypes
import re
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

__all__ = [
    "FakeDiscord",
    "RecordedRequest",
    "GatewayEvent",
    "FailureRule",
    "FakeInteraction",
    "BOT_ID",
    "APP_ID",
    "GUILD_ID",
    "OWNER_ID",
    "ALICE_ID",
    "BOB_ID",
    "OTHER_BOT_ID",
    "GENERAL_ID",
    "CAPTIONS_ID",
    "MOD_LOG_ID",
    "DM_CHANNEL_ID",
    "EVERYONE_ROLE_ID",
    "BOT_ROLE_ID",
    "MOD_ROLE_ID",
    "Perm",
]

# --------------------------------------------------------------------------- model ids

BOT_ID = 9000
APP_ID = BOT_ID  # modern applications: application id == bot user id
GUILD_ID = 1000
OWNER_ID = ALICE_ID = 1
BOB_ID = 2
OTHER_BOT_ID = 3
GENERAL_ID = 2001
CAPTIONS_ID = 2002
MOD_LOG_ID = 2003
DM_CHANNEL_ID = 3001  # DM between the bot and alice
EVERYONE_ROLE_ID = GUILD_ID  # Discord: the @everyone role id equals the guild id
BOT_ROLE_ID = 1100
MOD_ROLE_ID = 1101

DISCORD_EPOCH_MS = 1420070400000
API_PREFIX = "/api/v10"

# Gateway opcodes
OP_DISPATCH, OP_HEARTBEAT, OP_IDENTIFY, OP_PRESENCE, OP_VOICE = 0, 1, 2, 3, 4
OP_RESUME, OP_RECONNECT, OP_REQUEST_MEMBERS, OP_INVALID_SESSION = 6, 7, 8, 9
OP_HELLO, OP_HEARTBEAT_ACK = 10, 11

# Intents (bits)
INTENT_GUILDS = 1 << 0
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_PRESENCES = 1 << 8
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15
PRIVILEGED_INTENTS = INTENT_GUILD_MEMBERS | INTENT_GUILD_PRESENCES | INTENT_MESSAGE_CONTENT

# Message flags
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7


class Perm:
    """Permission bits used by the fake's model."""

    CREATE_INSTANT_INVITE = 1 << 0
    KICK_MEMBERS = 1 << 1
    BAN_MEMBERS = 1 << 2
    ADMINISTRATOR = 1 << 3
    MANAGE_CHANNELS = 1 << 4
    MANAGE_GUILD = 1 << 5
    ADD_REACTIONS = 1 << 6
    VIEW_AUDIT_LOG = 1 << 7
    VIEW_CHANNEL = 1 << 10
    SEND_MESSAGES = 1 << 11
    MANAGE_MESSAGES = 1 << 13
    EMBED_LINKS = 1 << 14
    ATTACH_FILES = 1 << 15
    READ_MESSAGE_HISTORY = 1 << 16
    MENTION_EVERYONE = 1 << 17
    USE_EXTERNAL_EMOJIS = 1 << 18
    CHANGE_NICKNAME = 1 << 26
    USE_APPLICATION_COMMANDS = 1 << 31
    CREATE_PUBLIC_THREADS = 1 << 35
    SEND_MESSAGES_IN_THREADS = 1 << 38
    ALL = (1 << 51) - 1

    EVERYONE_DEFAULT = (
        CREATE_INSTANT_INVITE
        | ADD_REACTIONS
        | VIEW_CHANNEL
        | SEND_MESSAGES
        | EMBED_LINKS
        | ATTACH_FILES
        | READ_MESSAGE_HISTORY
        | USE_EXTERNAL_EMOJIS
        | CHANGE_NICKNAME
        | USE_APPLICATION_COMMANDS
        | CREATE_PUBLIC_THREADS
        | SEND_MESSAGES_IN_THREADS
    )
    DM_DEFAULT = (
        ADD_REACTIONS
        | VIEW_CHANNEL
        | SEND_MESSAGES
        | EMBED_LINKS
        | ATTACH_FILES
        | READ_MESSAGE_HISTORY
        | USE_EXTERNAL_EMOJIS
        | USE_APPLICATION_COMMANDS
    )


# --------------------------------------------------------------------------- records


@dataclass
class RecordedRequest:
    """One HTTP request the fake received (REST, webhook, CDN or other)."""

    method: str
    path: str  # REST: relative to /api/v10 (e.g. "/channels/2001/messages"); else the full path
    query: dict[str, str]
    json: Any  # parsed JSON body, or multipart ``payload_json``; None when absent
    files: list[dict[str, Any]]  # multipart files: name, filename, content_type, data, size
    headers: dict[str, str]
    time: float  # time.monotonic()
    status: int | None = None  # filled in once answered
    injected: bool = False  # answered by a fail_next/delay_next rule
    api: bool = True  # under /api/v10


@dataclass
class GatewayEvent:
    """One DISPATCH event of the current or a past gateway session."""

    seq: int
    t: str
    d: dict[str, Any]
    session_id: str
    delivered: asyncio.Future  # result: time.monotonic() of the first send over a websocket
    filtered: bool = False  # not sent: the session's intents exclude it
    replayable: bool = True

    @property
    def sent(self) -> bool:
        return self.delivered.done() and not self.delivered.cancelled() and self.delivered.exception() is None


@dataclass
class FailureRule:
    """A fault injected by :meth:`FakeDiscord.fail_next` / :meth:`FakeDiscord.delay_next`."""

    method: str  # "*" matches any method
    pattern: re.Pattern
    status: int | None  # None: only delay, then answer normally
    times: int | None  # None: until clear_failures()
    retry_after: float | None = None
    code: int | None = None
    message: str | None = None
    body: Any = None
    global_: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        return (self.method == "*" or self.method == method) and self.pattern.search(path) is not None


@dataclass
class FakeInteraction:
    """Server-side state of one interaction the fake created."""

    id: int
    token: str
    payload: dict[str, Any]
    created: float  # time.monotonic()
    channel_id: int
    command_type: int  # data.type: 1 chat input, 2 user, 3 message
    callback_type: int | None = None
    callback_data: dict[str, Any] | None = None
    original_message_id: int | None = None
    loading: bool = False  # deferred (type 5) and not yet filled in
    ephemeral: bool = False
    followup_ids: list[int] = field(default_factory=list)


class _Conn:
    """One gateway websocket connection (server side)."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.ws = ws
        self.request = request
        self.query = dict(request.query)
        self.queue: asyncio.Queue = asyncio.Queue()
        self.live = False  # session events flow to this connection
        self.writer: asyncio.Task | None = None
        self.close_code: int | None = None

    def send(self, frame: dict[str, Any], entry: GatewayEvent | None = None) -> None:
        self.queue.put_nowait((json.dumps(frame), entry))


class _ApiError(Exception):
    def __init__(self, status: int, code: int, message: str, errors: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.errors = status, code, message, errors


def _iso(ts: float | None = None) -> str:
    return _dt.datetime.fromtimestamp(time.time() if ts is None else ts, tz=_dt.UTC).isoformat()


def _form_error(field_name: str, code: str, message: str) -> _ApiError:
    return _ApiError(400, 50035, "Invalid Form Body", {field_name: {"_errors": [{"code": code, "message": message}]}})


_USER_MENTION = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION = re.compile(r"<@&(\d+)>")


# --------------------------------------------------------------------------- the fake


class FakeDiscord:
    """A fake Discord for one bot: REST, gateway and CDN on one local aiohttp server.

    Use ``async with FakeDiscord() as fake:`` or ``await fake.start()`` / ``await fake.close()``.
    """

    def __init__(
        self,
        *,
        token: str = "test-token",
        heartbeat_interval: int = 41250,
        host: str = "127.0.0.1",
    ) -> None:
        self.token = token
        self.heartbeat_interval = heartbeat_interval  # ms, sent in HELLO
        self.host = host
        self.port: int | None = None

        # knobs
        self.ack_heartbeats = True  # False: never answer op 1 (zombie connection)
        self.privileged_intents = True  # False: IDENTIFY asking for a privileged intent is closed with 4014
        self.reject_resumes = False  # True: answer RESUME with op 9 (session not resumable)
        self.interaction_ack_timeout: float | None = 3.0  # callback later than this: 404 10062
        self.interaction_token_lifetime: float | None = 900.0  # follow-ups after this: 401 50027
        self.attachment_size_limit = 10 * 1024 * 1024  # sent in interactions
        self.upload_limit = 10 * 1024 * 1024  # bot uploads above this: 413 40005

        # model
        self.users: dict[int, dict[str, Any]] = {}
        self.members: dict[int, dict[str, Any]] = {}  # guild members of GUILD_ID by user id
        self.roles: dict[int, dict[str, Any]] = {}
        self.channels: dict[int, dict[str, Any]] = {}  # guild and DM channels
        self.guild: dict[str, Any] = {}
        self.messages: dict[int, dict[str, Any]] = {}  # every message by id (user and bot)
        self.commands: dict[int | None, list[dict[str, Any]]] = {None: []}  # None: global; else guild id
        self.interactions: dict[int, FakeInteraction] = {}
        self._build_model()

        # records
        self.requests: list[RecordedRequest] = []
        self.sent: list[dict[str, Any]] = []
        self.callbacks: list[dict[str, Any]] = []
        self.deleted: list[dict[str, Any]] = []
        self.typing: list[dict[str, Any]] = []
        self.reactions: list[dict[str, Any]] = []
        self.downloads: list[dict[str, Any]] = []
        self.events: list[GatewayEvent] = []  # every dispatch of every session
        self.identify_payloads: list[dict[str, Any]] = []
        self.gateway_connections: list[dict[str, str]] = []  # query of each websocket connect
        self.presence_updates: list[dict[str, Any]] = []
        self.heartbeats = 0
        self.identifies = 0
        self.resumes = 0
        self.invalid_sessions = 0

        # fault injection
        self.failures: list[FailureRule] = []

        # CDN
        self._blobs: dict[int, dict[str, Any]] = {}
        self._files: dict[str, dict[str, Any]] = {}
        self._redirects: dict[str, tuple[str, int]] = {}

        # gateway session
        self._conns: list[_Conn] = []
        self._conn: _Conn | None = None
        self.session_id: str | None = None
        self._seq = 0
        self._log: list[GatewayEvent] = []
        self._intents = 0
        self._shard: list[int] | None = None

        self._snowflake_last = 0
        self._change: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self._routes = self._build_routes()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> FakeDiscord:
        app = web.Application(client_max_size=200 * 1024 * 1024)
        app.router.add_route("GET", "/gateway", self._gateway_handler)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._api_handler)
        app.router.add_route("*", "/{tail:.*}", self._other_handler)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        site = web.SockSite(self._runner, sock)
        await site.start()
        self._change = asyncio.Event()
        return self

    async def close(self) -> None:
        for conn in list(self._conns):
            conn.live = False
            if not conn.ws.closed:
                try:
                    await asyncio.wait_for(conn.ws.close(code=1001, message=b"fake shutting down"), 2)
                except (TimeoutError, Exception):
                    pass
            if conn.writer is not None:
                conn.writer.cancel()
        for entry in self._log:
            if not entry.delivered.done():
                entry.delivered.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_base(self) -> str:
        """What ``discord.http.Route.BASE`` should be set to."""
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        return f"ws://{self.host}:{self.port}/gateway"

    # ------------------------------------------------------------------ model

    def _build_model(self) -> None:
        self.add_user(BOT_ID, "llava-bot", bot=True, roles=[BOT_ROLE_ID])
        self.add_user(ALICE_ID, "alice", roles=[MOD_ROLE_ID])
        self.add_user(BOB_ID, "bob")
        self.add_user(OTHER_BOT_ID, "other-bot", bot=True)
        self.roles = {
            EVERYONE_ROLE_ID: self._role(EVERYONE_ROLE_ID, "@everyone", Perm.EVERYONE_DEFAULT, 0),
            BOT_ROLE_ID: self._role(
                BOT_ROLE_ID,
                "llava-bot",
                Perm.EVERYONE_DEFAULT | Perm.MANAGE_MESSAGES,
                2,
                managed=True,
                tags={"bot_id": str(BOT_ID)},
            ),
            MOD_ROLE_ID: self._role(MOD_ROLE_ID, "Moderator", Perm.EVERYONE_DEFAULT | Perm.MANAGE_MESSAGES | Perm.KICK_MEMBERS, 1),
        }
        self.add_text_channel(GENERAL_ID, "general", position=0)
        self.add_text_channel(CAPTIONS_ID, "captions", position=1)
        self.add_text_channel(
            MOD_LOG_ID,
            "mod-log",
            position=2,
            overwrites=[
                {"id": str(EVERYONE_ROLE_ID), "type": 0, "allow": "0", "deny": str(Perm.VIEW_CHANNEL)},
                {"id": str(MOD_ROLE_ID), "type": 0, "allow": str(Perm.VIEW_CHANNEL), "deny": "0"},
                {"id": str(BOT_ROLE_ID), "type": 0, "allow": str(Perm.VIEW_CHANNEL | Perm.SEND_MESSAGES), "deny": "0"},
            ],
        )
        self.add_dm_channel(ALICE_ID, DM_CHANNEL_ID)
        self.guild = {
            "id": str(GUILD_ID),
            "name": "Test guild",
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(OWNER_ID),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "features": [],
            "emojis": [],
            "stickers": [],
            "system_channel_id": str(GENERAL_ID),
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "vanity_url_code": None,
            "application_id": None,
            "max_members": 500000,
        }

    @staticmethod
    def _role(role_id: int, name: str, perms: int, position: int, **extra: Any) -> dict[str, Any]:
        role = {
            "id": str(role_id),
            "name": name,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "position": position,
            "permissions": str(perms),
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }
        role.update(extra)
        return role

    def add_user(
        self, user_id: int, name: str, *, bot: bool = False, roles: Iterable[int] = (), member: bool = True
    ) -> dict[str, Any]:
        """Add a user (and, by default, a member of the guild). Call before the bot connects."""
        user = {
            "id": str(user_id),
            "username": name,
            "discriminator": "0",
            "global_name": None if bot else name.capitalize(),
            "avatar": None,
            "public_flags": 0,
            "flags": 0,
        }
        if bot:
            user["bot"] = True
        self.users[user_id] = user
        if member:
            self.members[user_id] = {
                "roles": [str(r) for r in roles],
                "nick": None,
                "avatar": None,
                "banner": None,
                "joined_at": _iso(),
                "premium_since": None,
                "deaf": False,
                "mute": False,
                "flags": 0,
                "pending": False,
                "communication_disabled_until": None,
            }
        return user

    def add_text_channel(
        self, channel_id: int, name: str, *, position: int = 0, overwrites: list[dict[str, Any]] | None = None, **extra: Any
    ) -> dict[str, Any]:
        """Add a guild text channel. Call before the bot connects."""
        channel = {
            "id": str(channel_id),
            "type": 0,
            "guild_id": str(GUILD_ID),
            "name": name,
            "position": position,
            "parent_id": None,
            "topic": None,
            "nsfw": False,
            "rate_limit_per_user": 0,
            "last_message_id": None,
            "permission_overwrites": overwrites or [],
            "flags": 0,
        }
        channel.update(extra)
        self.channels[channel_id] = channel
        return channel

    def add_dm_channel(self, user_id: int, channel_id: int | None = None) -> dict[str, Any]:
        """The DM channel between the bot and ``user_id`` (created if needed)."""
        for ch in self.channels.values():
            if ch["type"] == 1 and ch["recipients"][0]["id"] == str(user_id):
                return ch
        channel_id = channel_id or self._snowflake()
        channel = {
            "id": str(channel_id),
            "type": 1,
            "last_message_id": None,
            "flags": 0,
            "recipients": [self.users[user_id]],
        }
        self.channels[channel_id] = channel
        return channel

    def _is_dm(self, channel_id: int) -> bool:
        return self.channels[channel_id]["type"] == 1

    @property
    def bot_user(self) -> dict[str, Any]:
        return self.users[BOT_ID]

    def member_payload(self, user_id: int, *, with_user: bool = True) -> dict[str, Any]:
        m = dict(self.members[user_id])
        if with_user:
            m["user"] = self.users[user_id]
        return m

    def permissions(self, user_id: int, channel_id: int | None = None) -> int:
        """Effective permissions of ``user_id`` (in ``channel_id`` when given), Discord's algorithm."""
        if channel_id is not None and self._is_dm(channel_id):
            return Perm.DM_DEFAULT
        if str(user_id) == self.guild["owner_id"]:
            return Perm.ALL
        member = self.members.get(user_id)
        role_ids = [int(r) for r in member["roles"]] if member else []
        perms = int(self.roles[EVERYONE_ROLE_ID]["permissions"])
        for rid in role_ids:
            perms |= int(self.roles[rid]["permissions"])
        if perms & Perm.ADMINISTRATOR:
            return Perm.ALL
        if channel_id is None:
            return perms
        ows = {(int(o["id"]), o["type"]): o for o in self.channels[channel_id].get("permission_overwrites", [])}
        ev = ows.get((EVERYONE_ROLE_ID, 0))
        if ev:
            perms = (perms & ~int(ev["deny"])) | int(ev["allow"])
        allow = deny = 0
        for rid in role_ids:
            o = ows.get((rid, 0))
            if o:
                allow |= int(o["allow"])
                deny |= int(o["deny"])
        perms = (perms & ~deny) | allow
        o = ows.get((user_id, 1))
        if o:
            perms = (perms & ~int(o["deny"])) | int(o["allow"])
        return perms

    def _snowflake(self) -> int:
        now = int(time.time() * 1000) - DISCORD_EPOCH_MS
        sf = (now << 22) | (1 << 17)
        if sf <= self._snowflake_last:
            sf = self._snowflake_last + 1
        self._snowflake_last = sf
        return sf

    # ------------------------------------------------------------------ waiting

    def _notify(self) -> None:
        if self._change is not None:
            self._change.set()
            self._change = asyncio.Event()

    async def wait_until(self, condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
        """Wait until ``condition()`` is truthy (re-checked whenever the fake records something); return it."""
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
            assert self._change is not None, "fake not started"
            ev = self._change
            try:
                await asyncio.wait_for(ev.wait(), min(remaining, 0.25))
            except TimeoutError:
                pass

    async def wait_for_sent(
        self, predicate: Callable[[dict[str, Any]], bool] | None = None, timeout: float = 10.0, *, start: int = 0
    ) -> dict[str, Any]:
        """The first record in ``sent[start:]`` matching ``predicate`` (waiting for it if needed)."""

        def find() -> dict[str, Any] | None:
            for rec in self.sent[start:]:
                if predicate is None or predicate(rec):
                    return rec
            return None

        return await self.wait_until(find, timeout, "a sent message")

    async def wait_for_request(
        self, method: str, path_regex: str, timeout: float = 10.0, *, start: int = 0
    ) -> RecordedRequest:
        pattern = re.compile(path_regex)

        def find() -> RecordedRequest | None:
            for r in self.requests[start:]:
                if (method == "*" or r.method == method) and pattern.search(r.path) and r.status is not None:
                    return r
            return None

        return await self.wait_until(find, timeout, f"{method} {path_regex}")

    async def wait_for_callback(
        self, predicate: Callable[[dict[str, Any]], bool] | None = None, timeout: float = 10.0
    ) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            return next((c for c in self.callbacks if predicate is None or predicate(c)), None)

        return await self.wait_until(find, timeout, "an interaction callback")

    def sent_to(self, channel_id: int) -> list[dict[str, Any]]:
        return [s for s in self.sent if s["channel_id"] == channel_id]

    def requests_to(self, method: str, path_regex: str) -> list[RecordedRequest]:
        pattern = re.compile(path_regex)
        return [r for r in self.requests if (method == "*" or r.method == method) and pattern.search(r.path)]

    # ------------------------------------------------------------------ fault injection

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int,
        times: int | None = 1,
        retry_after: float | None = None,
        *,
        code: int | None = None,
        message: str | None = None,
        body: Any = None,
        global_: bool = False,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
    ) -> FailureRule:
        """Answer the next ``times`` requests matching ``method`` ("*": any) and ``path_regex`` with ``status``.

        ``path_regex`` is searched in the path relative to /api/v10 for REST (e.g. ``r"/channels/\\d+/messages$"``)
        and in the full path otherwise (``/attachments/...``). ``times=None``: until :meth:`clear_failures`.
        429 answers carry ``Via`` + ``{"message", "retry_after", "global"}`` (what discord.py needs to retry);
        403 defaults to code 50013 Missing Permissions, 404 to 10008 Unknown Message.
        """
        rule = FailureRule(
            method=method.upper(),
            pattern=re.compile(path_regex),
            status=status,
            times=times,
            retry_after=retry_after,
            code=code,
            message=message,
            body=body,
            global_=global_,
            headers=dict(headers or {}),
            delay=delay,
        )
        self.failures.append(rule)
        return rule

    def delay_next(self, method: str, path_regex: str, seconds: float, times: int | None = 1) -> FailureRule:
        """Delay the next matching requests by ``seconds``, then answer them normally."""
        rule = FailureRule(method=method.upper(), pattern=re.compile(path_regex), status=None, times=times, delay=seconds)
        self.failures.append(rule)
        return rule

    def clear_failures(self) -> None:
        self.failures.clear()

    def _take_rule(self, method: str, path: str) -> FailureRule | None:
        for rule in self.failures:
            if rule.matches(method, path):
                rule.hits += 1
                if rule.times is not None:
                    rule.times -= 1
                return rule
        return None

    def _failure_response(self, rule: FailureRule) -> web.Response:
        status = rule.status
        assert status is not None
        headers = dict(rule.headers)
        if rule.body is not None:
            body = rule.body
        elif status == 429:
            retry_after = 0.05 if rule.retry_after is None else rule.retry_after
            body = {"message": rule.message or "You are being rate limited.", "retry_after": retry_after, "global": rule.global_}
            if rule.code is not None:
                body["code"] = rule.code
            headers.setdefault("Via", "1.1 google")
            headers.setdefault("Retry-After", str(max(1, int(retry_after + 0.999))))
            headers.setdefault("X-RateLimit-Scope", "global" if rule.global_ else "user")
            if rule.global_:
                headers.setdefault("X-RateLimit-Global", "true")
        else:
            defaults = {
                400: (50035, "Invalid Form Body"),
                401: (0, "401: Unauthorized"),
                403: (50013, "Missing Permissions"),
                404: (10008, "Unknown Message"),
                413: (40005, "Request entity too large"),
            }
            d_code, d_msg = defaults.get(status, (0, f"{status}: Server Error" if status >= 500 else f"{status}: Error"))
            body = {"message": rule.message or d_msg, "code": d_code if rule.code is None else rule.code}
        if isinstance(body, (bytes, str)):
            raw = body.encode() if isinstance(body, str) else body
            return web.Response(status=status, body=raw, content_type="text/plain", headers=headers)
        return self._json(body, status=status, headers=headers)

    # ------------------------------------------------------------------ HTTP plumbing

    @staticmethod
    def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        # Exactly "application/json": discord.py's json_or_text compares the header verbatim.
        return web.Response(status=status, body=json.dumps(data).encode(), content_type="application/json", headers=headers)

    @staticmethod
    def _no_content() -> web.Response:
        return web.Response(status=204)

    def _error_response(self, err: _ApiError) -> web.Response:
        body: dict[str, Any] = {"message": err.message, "code": err.code}
        if err.errors:
            body["errors"] = err.errors
        return self._json(body, status=err.status)

    async def _read_body(self, request: web.Request) -> tuple[Any, list[dict[str, Any]]]:
        ctype = request.content_type
        if ctype == "multipart/form-data":
            payload: Any = None
            files: list[dict[str, Any]] = []
            reader = await request.multipart()
            async for part in reader:
                data = await part.read(decode=False)
                if part.name == "payload_json":
                    payload = json.loads(data.decode("utf-8"))
                elif part.filename is not None:
                    files.append(
                        {
                            "name": part.name,
                            "filename": part.filename,
                            "content_type": part.headers.get("Content-Type"),
                            "data": bytes(data),
                            "size": len(data),
                        }
                    )
            return payload, files
        if request.can_read_body:
            raw = await request.read()
            if raw:
                try:
                    return json.loads(raw.decode("utf-8")), []
                except ValueError:
                    return raw, []
        return None, []

    async def _api_handler(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        method = request.method
        try:
            body, files = await self._read_body(request)
        except Exception:  # noqa: BLE001 - a malformed body is recorded as None; the route decides
            body, files = None, []
        rec = RecordedRequest(
            method=method,
            path=path,
            query=dict(request.query),
            json=body,
            files=files,
            headers=dict(request.headers),
            time=time.monotonic(),
        )
        self.requests.append(rec)
        self._notify()
        try:
            response = await self._answer_api(rec, request)
        except _ApiError as err:
            response = self._error_response(err)
        except Exception as exc:  # noqa: BLE001 - surface fake bugs as 500 with the message
            response = self._json({"message": f"fake discord error: {exc!r}", "code": 0}, status=500)
        rec.status = response.status
        self._notify()
        return response

    async def _answer_api(self, rec: RecordedRequest, request: web.Request) -> web.StreamResponse:
        rule = self._take_rule(rec.method, rec.path)
        if rule is not None:
            if rule.delay:
                await asyncio.sleep(rule.delay)
            if rule.status is not None:
                rec.injected = True
                return self._failure_response(rule)
        for method, pattern, handler, needs_auth in self._routes:
            if method != rec.method:
                continue
            m = pattern.fullmatch(rec.path)
            if m is None:
                continue
            if needs_auth and request.headers.get("Authorization") != f"Bot {self.token}":
                raise _ApiError(401, 0, "401: Unauthorized")
            return await handler(rec, **m.groupdict())
        raise _ApiError(404, 0, "404: Not Found")

    def _build_routes(self) -> list[tuple[str, re.Pattern, Callable[..., Awaitable[web.StreamResponse]], bool]]:
        ID = r"(?P<{}>\d+)"
        TOKEN = r"(?P<token>[^/]+)"
        msg = r"(?P<mid>@original|\d+)"
        table = [
            ("GET", r"/users/@me", self._get_me, True),
            ("GET", r"/users/" + ID.format("uid"), self._get_user, True),
            ("POST", r"/users/@me/channels", self._create_dm, True),
            ("GET", r"/oauth2/applications/@me", self._get_app_info, True),
            ("GET", r"/applications/@me", self._get_app_info, True),
            ("GET", r"/gateway", self._get_gateway, False),
            ("GET", r"/gateway/bot", self._get_gateway_bot, True),
            ("GET", r"/guilds/" + ID.format("gid"), self._get_guild, True),
            ("GET", r"/guilds/" + ID.format("gid") + r"/channels", self._get_guild_channels, True),
            ("GET", r"/guilds/" + ID.format("gid") + r"/roles", self._get_guild_roles, True),
            ("GET", r"/guilds/" + ID.format("gid") + r"/members/" + ID.format("uid"), self._get_member, True),
            ("GET", r"/channels/" + ID.format("cid"), self._get_channel, True),
            ("GET", r"/channels/" + ID.format("cid") + r"/messages", self._get_history, True),
            ("POST", r"/channels/" + ID.format("cid") + r"/messages", self._post_message, True),
            ("GET", r"/channels/" + ID.format("cid") + r"/messages/" + ID.format("mid"), self._get_message, True),
            ("PATCH", r"/channels/" + ID.format("cid") + r"/messages/" + ID.format("mid"), self._edit_message, True),
            ("DELETE", r"/channels/" + ID.format("cid") + r"/messages/" + ID.format("mid"), self._delete_message, True),
            ("POST", r"/channels/" + ID.format("cid") + r"/typing", self._typing, True),
            (
                "PUT",
                r"/channels/" + ID.format("cid") + r"/messages/" + ID.format("mid") + r"/reactions/(?P<emoji>[^/]+)/@me",
                self._add_reaction,
                True,
            ),
            (
                "DELETE",
                r"/channels/" + ID.format("cid") + r"/messages/" + ID.format("mid") + r"/reactions/(?P<emoji>[^/]+)/@me",
                self._remove_reaction,
                True,
            ),
            ("GET", r"/applications/" + ID.format("app") + r"(?:/guilds/(?P<gid>\d+))?/commands", self._list_commands, True),
            ("PUT", r"/applications/" + ID.format("app") + r"(?:/guilds/(?P<gid>\d+))?/commands", self._put_commands, True),
            ("POST", r"/applications/" + ID.format("app") + r"(?:/guilds/(?P<gid>\d+))?/commands", self._post_command, True),
            (
                "GET",
                r"/applications/" + ID.format("app") + r"(?:/guilds/(?P<gid>\d+))?/commands/" + ID.format("cmd"),
                self._get_command,
                True,
            ),
            (
                "PATCH",
                r"/applications/" + ID.format("app") + r"(?:/guilds/(?P<gid>\d+))?/commands/" + ID.format("cmd"),
                self._patch_command,
                True,
            ),
            (
                "DELETE",
                r"/applications/" + ID.format("app") + r"(?:/guilds/(?P<gid>\d+))?/commands/" + ID.format("cmd"),
                self._delete_command,
                True,
            ),
            ("POST", r"/interactions/" + ID.format("iid") + "/" + TOKEN + r"/callback", self._interaction_callback, False),
            ("POST", r"/webhooks/" + ID.format("app") + "/" + TOKEN, self._followup, False),
            ("GET", r"/webhooks/" + ID.format("app") + "/" + TOKEN + r"/messages/" + msg, self._webhook_get, False),
            ("PATCH", r"/webhooks/" + ID.format("app") + "/" + TOKEN + r"/messages/" + msg, self._webhook_edit, False),
            ("DELETE", r"/webhooks/" + ID.format("app") + "/" + TOKEN + r"/messages/" + msg, self._webhook_delete, False),
        ]
        return [(m, re.compile(p), h, a) for m, p, h, a in table]

    # ------------------------------------------------------------------ REST: users, app, gateway, guild

    async def _get_me(self, rec: RecordedRequest) -> web.Response:
        me = dict(self.bot_user, verified=True, mfa_enabled=False, email=None, locale="en-US", bio="")
        return self._json(me)

    async def _get_user(self, rec: RecordedRequest, uid: str) -> web.Response:
        user = self.users.get(int(uid))
        if user is None:
            raise _ApiError(404, 10013, "Unknown User")
        return self._json(user)

    async def _create_dm(self, rec: RecordedRequest) -> web.Response:
        uid = int((rec.json or {}).get("recipient_id", 0))
        if uid not in self.users:
            raise _ApiError(400, 50007, "Cannot send messages to this user")
        return self._json(self.add_dm_channel(uid))

    def app_info(self) -> dict[str, Any]:
        return {
            "id": str(APP_ID),
            "name": "llava-bot",
            "icon": None,
            "description": "A fake application",
            "summary": "",
            "type": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "verify_key": "00" * 32,
            "owner": self.users[OWNER_ID],
            "team": None,
            "flags": (1 << 15) | (1 << 19) | (1 << 23),  # gateway: guild members / message content limited; app commands
            "bot": self.bot_user,
            "redirect_uris": [],
            "interactions_endpoint_url": None,
            "rpc_origins": [],
            "tags": [],
            "install_params": {"scopes": ["bot", "applications.commands"], "permissions": "0"},
            "integration_types_config": {"0": {}},
            "approximate_guild_count": 1,
        }

    async def _get_app_info(self, rec: RecordedRequest) -> web.Response:
        return self._json(self.app_info())

    async def _get_gateway(self, rec: RecordedRequest) -> web.Response:
        return self._json({"url": self.gateway_url})

    async def _get_gateway_bot(self, rec: RecordedRequest) -> web.Response:
        return self._json(
            {
                "url": self.gateway_url,
                "shards": 1,
                "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1},
            }
        )

    def _check_guild(self, gid: str) -> None:
        if int(gid) != GUILD_ID:
            raise _ApiError(404, 10004, "Unknown Guild")

    def guild_payload(self) -> dict[str, Any]:
        """The guild without gateway-only fields (REST shape)."""
        return dict(self.guild, roles=list(self.roles.values()))

    async def _get_guild(self, rec: RecordedRequest, gid: str) -> web.Response:
        self._check_guild(gid)
        return self._json(self.guild_payload())

    async def _get_guild_channels(self, rec: RecordedRequest, gid: str) -> web.Response:
        self._check_guild(gid)
        return self._json([c for c in self.channels.values() if c["type"] != 1])

    async def _get_guild_roles(self, rec: RecordedRequest, gid: str) -> web.Response:
        self._check_guild(gid)
        return self._json(list(self.roles.values()))

    async def _get_member(self, rec: RecordedRequest, gid: str, uid: str) -> web.Response:
        self._check_guild(gid)
        if int(uid) not in self.members:
            raise _ApiError(404, 10007, "Unknown Member")
        return self._json(self.member_payload(int(uid)))

    def _channel(self, cid: Any) -> dict[str, Any]:
        ch = self.channels.get(int(cid))
        if ch is None:
            raise _ApiError(404, 10003, "Unknown Channel")
        return ch

    async def _get_channel(self, rec: RecordedRequest, cid: str) -> web.Response:
        return self._json(self._channel(cid))

    # ------------------------------------------------------------------ messages

    def _rest_message(self, msg: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in msg.items() if k != "member"}
        return out

    async def _get_history(self, rec: RecordedRequest, cid: str) -> web.Response:
        self._channel(cid)
        limit = int(rec.query.get("limit", 50))
        before = int(rec.query["before"]) if "before" in rec.query else None
        after = int(rec.query["after"]) if "after" in rec.query else None
        msgs = [m for mid, m in self.messages.items() if m["channel_id"] == cid]
        msgs.sort(key=lambda m: int(m["id"]), reverse=True)
        if before is not None:
            msgs = [m for m in msgs if int(m["id"]) < before]
        if after is not None:
            msgs = [m for m in msgs if int(m["id"]) > after]
        return self._json([self._rest_message(m) for m in msgs[:limit]])

    def _stored(self, cid: Any, mid: Any) -> dict[str, Any]:
        msg = self.messages.get(int(mid))
        if msg is None or msg["channel_id"] != str(cid):
            raise _ApiError(404, 10008, "Unknown Message")
        return msg

    async def _get_message(self, rec: RecordedRequest, cid: str, mid: str) -> web.Response:
        self._channel(cid)
        return self._json(self._rest_message(self._stored(cid, mid)))

    @staticmethod
    def _validate_message(data: dict[str, Any], files: list[dict[str, Any]], *, creating: bool, kept_attachments: int = 0) -> None:
        content = data.get("content") or ""
        if len(content) > 2000:
            raise _form_error("content", "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.")
        embeds = data.get("embeds") or []
        if len(embeds) > 10:
            raise _form_error("embeds", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
        total = 0
        for i, e in enumerate(embeds):
            for key, limit in (("title", 256), ("description", 4096)):
                value = e.get(key) or ""
                total += len(value)
                if len(value) > limit:
                    raise _form_error(f"embeds.{i}.{key}", "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")
            footer = (e.get("footer") or {}).get("text") or ""
            author = (e.get("author") or {}).get("name") or ""
            total += len(footer) + len(author)
            if len(footer) > 2048:
                raise _form_error(f"embeds.{i}.footer.text", "BASE_TYPE_MAX_LENGTH", "Must be 2048 or fewer in length.")
            fields = e.get("fields") or []
            if len(fields) > 25:
                raise _form_error(f"embeds.{i}.fields", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
            for f in fields:
                total += len(f.get("name") or "") + len(f.get("value") or "")
        if total > 6000:
            raise _form_error("embeds", "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000")
        if creating and not content and not embeds and not files and not kept_attachments and not data.get("sticker_ids") and not data.get("poll"):
            raise _ApiError(400, 50006, "Cannot send an empty message")

    def _store_upload(self, f: dict[str, Any], channel_id: int) -> dict[str, Any]:
        return self.add_attachment(f["filename"], f["data"], content_type=f.get("content_type"), channel_id=channel_id)

    def _resolve_mentions(
        self, content: str, allowed: dict[str, Any] | None, replied_author: int | None, guild: bool
    ) -> tuple[list[dict[str, Any]], list[str], bool]:
        """What Discord would actually ping, honouring allowed_mentions (absent: everything parses)."""
        parse = set(allowed.get("parse", [])) if allowed is not None else {"users", "roles", "everyone"}
        allowed_users = {str(u) for u in (allowed or {}).get("users", [])}
        allowed_roles = {str(r) for r in (allowed or {}).get("roles", [])}
        ids: list[int] = []
        for m in _USER_MENTION.finditer(content):
            uid = int(m.group(1))
            if uid in self.users and ("users" in parse or str(uid) in allowed_users) and uid not in ids:
                ids.append(uid)
        if replied_author is not None and replied_author not in ids:
            if allowed is None or allowed.get("replied_user"):
                ids.append(replied_author)
        mentions = []
        for uid in ids:
            u = dict(self.users[uid])
            if guild and uid in self.members:
                u["member"] = self.member_payload(uid, with_user=False)
            mentions.append(u)
        roles = [
            m.group(1)
            for m in _ROLE_MENTION.finditer(content)
            if int(m.group(1)) in self.roles and ("roles" in parse or m.group(1) in allowed_roles)
        ]
        everyone = ("@everyone" in content or "@here" in content) and "everyone" in parse
        return mentions, roles, everyone

    def _make_message(
        self,
        *,
        author_id: int,
        channel_id: int,
        content: str,
        attachments: list[dict[str, Any]] = (),  # type: ignore[assignment]
        embeds: list[dict[str, Any]] = (),  # type: ignore[assignment]
        mentions: list[dict[str, Any]] = (),  # type: ignore[assignment]
        mention_roles: list[str] = (),  # type: ignore[assignment]
        mention_everyone: bool = False,
        reference: dict[str, Any] | None = None,
        msg_type: int = 0,
        flags: int = 0,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        ch = self._channel(channel_id)
        msg: dict[str, Any] = {
            "id": str(self._snowflake()),
            "channel_id": str(channel_id),
            "author": self.users[author_id],
            "content": content,
            "timestamp": _iso(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": mention_everyone,
            "mentions": list(mentions),
            "mention_roles": list(mention_roles),
            "attachments": list(attachments),
            "embeds": list(embeds),
            "pinned": False,
            "type": msg_type,
            "flags": flags,
            "components": [],
        }
        if ch["type"] != 1:
            msg["guild_id"] = str(GUILD_ID)
            if author_id in self.members:
                msg["member"] = self.member_payload(author_id, with_user=False)
        if reference is not None:
            ref_msg = self.messages.get(int(reference["message_id"]))
            msg["message_reference"] = {
                "type": 0,
                "message_id": str(reference["message_id"]),
                "channel_id": str(reference.get("channel_id") or channel_id),
                **({"guild_id": str(GUILD_ID)} if ch["type"] != 1 else {}),
            }
            if ref_msg is not None:
                msg["referenced_message"] = {k: v for k, v in ref_msg.items() if k not in ("referenced_message", "member")}
            else:
                msg["referenced_message"] = None
            if msg_type == 0:
                msg["type"] = 19
        if extra:
            msg.update(extra)
        ch["last_message_id"] = msg["id"]
        self.messages[int(msg["id"])] = msg
        return msg

    def _gateway_message(self, msg: dict[str, Any]) -> dict[str, Any]:
        """The MESSAGE_CREATE/UPDATE shape, without content when the session lacks the message-content intent."""
        out = dict(msg)
        if not self._intents & INTENT_MESSAGE_CONTENT and "guild_id" in msg and msg["author"]["id"] != str(BOT_ID):
            mentioned = any(u["id"] == str(BOT_ID) for u in msg.get("mentions", []))
            if not mentioned:
                out.update(content="", embeds=[], attachments=[], components=[])
                out.pop("poll", None)
        return out

    def _bot_message_from_payload(
        self,
        channel_id: int,
        data: dict[str, Any],
        files: list[dict[str, Any]],
        *,
        msg_type: int = 0,
        flags: int = 0,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        if sum(f["size"] for f in files) > self.upload_limit:
            raise _ApiError(413, 40005, "Request entity too large")
        self._validate_message(data, files, creating=True)
        reference = data.get("message_reference")
        replied_author = None
        if reference:
            target = self.messages.get(int(reference.get("message_id", 0)))
            if target is None:
                if reference.get("fail_if_not_exists", True):
                    raise _form_error(
                        "message_reference", "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message"
                    )
                reference = None
            else:
                replied_author = int(target["author"]["id"])
        content = data.get("content") or ""
        mentions, roles, everyone = self._resolve_mentions(
            content, data.get("allowed_mentions"), replied_author, not self._is_dm(channel_id)
        )
        attachments = [self._store_upload(f, channel_id) for f in files]
        return self._make_message(
            author_id=BOT_ID,
            channel_id=channel_id,
            content=content,
            attachments=attachments,
            embeds=data.get("embeds") or [],
            mentions=mentions,
            mention_roles=roles,
            mention_everyone=everyone,
            reference=reference,
            msg_type=msg_type,
            flags=flags | (data.get("flags") or 0),
            extra=extra,
        )

    def _record_sent(
        self,
        msg: dict[str, Any],
        via: str,
        payload: dict[str, Any] | None,
        files: list[dict[str, Any]],
        **extra: Any,
    ) -> dict[str, Any]:
        payload = payload or {}
        rec = {
            "id": int(msg["id"]),
            "channel_id": int(msg["channel_id"]),
            "guild_id": int(msg["guild_id"]) if "guild_id" in msg else None,
            "content": msg["content"],
            "embeds": msg.get("embeds", []),
            "attachments": msg.get("attachments", []),
            "files": [{k: f[k] for k in ("filename", "content_type", "size", "data")} for f in files],
            "message_reference": payload.get("message_reference"),
            "allowed_mentions": payload.get("allowed_mentions"),
            "mentions": [int(u["id"]) for u in msg.get("mentions", [])],
            "mention_roles": [int(r) for r in msg.get("mention_roles", [])],
            "mention_everyone": msg.get("mention_everyone", False),
            "flags": msg.get("flags", 0),
            "via": via,
            "interaction_id": None,
            "payload": payload,
            "message": msg,
            "time": time.monotonic(),
        }
        rec.update(extra)
        self.sent.append(rec)
        self._notify()
        return rec

    def _echo(self, t: str, msg: dict[str, Any]) -> None:
        if self.session_id is None:
            return
        if msg.get("flags", 0) & FLAG_EPHEMERAL:
            return  # ephemeral messages never reach the gateway
        self._dispatch(t, self._gateway_message(msg))

    async def _post_message(self, rec: RecordedRequest, cid: str) -> web.Response:
        channel_id = int(self._channel(cid)["id"])
        data = rec.json if isinstance(rec.json, dict) else {}
        msg = self._bot_message_from_payload(channel_id, data, rec.files)
        self._record_sent(msg, "channel", data, rec.files)
        self._echo("MESSAGE_CREATE", msg)
        return self._json(self._rest_message(msg))

    def _apply_edit(self, msg: dict[str, Any], data: dict[str, Any], files: list[dict[str, Any]]) -> None:
        if sum(f["size"] for f in files) > self.upload_limit:
            raise _ApiError(413, 40005, "Request entity too large")
        kept = msg.get("attachments", [])
        if "attachments" in data:
            keep_ids = {str(a.get("id")) for a in data["attachments"] or []}
            kept = [a for a in kept if a["id"] in keep_ids]
        self._validate_message(data, files, creating=False)
        if "content" in data:
            msg["content"] = data["content"] or ""
        if "embeds" in data:
            msg["embeds"] = data["embeds"] or []
        if "flags" in data and data["flags"] is not None:
            msg["flags"] = (msg.get("flags", 0) & (FLAG_EPHEMERAL | FLAG_LOADING)) | data["flags"]
        if "components" in data:
            msg["components"] = data["components"] or []
        msg["attachments"] = kept + [self._store_upload(f, int(msg["channel_id"])) for f in files]
        replied = None
        ref = msg.get("referenced_message")
        if ref:
            replied = int(ref["author"]["id"])
        mentions, roles, everyone = self._resolve_mentions(
            msg["content"], data.get("allowed_mentions"), None, "guild_id" in msg
        )
        # an edit never adds a reply ping: keep the replied user only if it was already there
        if replied is not None and any(u["id"] == str(replied) for u in msg.get("mentions", [])):
            if not any(u["id"] == str(replied) for u in mentions):
                mentions.append(next(u for u in msg["mentions"] if u["id"] == str(replied)))
        msg["mentions"], msg["mention_roles"], msg["mention_everyone"] = mentions, roles, everyone
        if not (msg["content"] or msg["embeds"] or msg["attachments"] or msg.get("flags", 0) & FLAG_LOADING):
            raise _ApiError(400, 50006, "Cannot send an empty message")
        msg["edited_timestamp"] = _iso()

    async def _edit_message(self, rec: RecordedRequest, cid: str, mid: str) -> web.Response:
        self._channel(cid)
        msg = self._stored(cid, mid)
        if msg["author"]["id"] != str(BOT_ID):
            raise _ApiError(403, 50005, "Cannot edit a message authored by another user")
        data = rec.json if isinstance(rec.json, dict) else {}
        self._apply_edit(msg, data, rec.files)
        self._record_sent(msg, "edit", data, rec.files)
        self._echo("MESSAGE_UPDATE", msg)
        return self._json(self._rest_message(msg))

    def _forget_message(self, msg: dict[str, Any], via: str) -> GatewayEvent | None:
        del self.messages[int(msg["id"])]
        self.deleted.append(
            {"id": int(msg["id"]), "channel_id": int(msg["channel_id"]), "via": via, "time": time.monotonic()}
        )
        self._notify()
        if self.session_id is not None and not msg.get("flags", 0) & FLAG_EPHEMERAL:
            d = {"id": msg["id"], "channel_id": msg["channel_id"]}
            if "guild_id" in msg:
                d["guild_id"] = msg["guild_id"]
            return self._dispatch("MESSAGE_DELETE", d)
        return None

    async def _delete_message(self, rec: RecordedRequest, cid: str, mid: str) -> web.Response:
        self._channel(cid)
        msg = self._stored(cid, mid)
        if msg["author"]["id"] != str(BOT_ID) and not self.permissions(BOT_ID, int(cid)) & Perm.MANAGE_MESSAGES:
            raise _ApiError(403, 50013, "Missing Permissions")
        self._forget_message(msg, "channel")
        return self._no_content()

    async def _typing(self, rec: RecordedRequest, cid: str) -> web.Response:
        self._channel(cid)
        self.typing.append({"channel_id": int(cid), "time": time.monotonic()})
        self._notify()
        return self._no_content()

    def _record_reaction(self, cid: str, mid: str, emoji: str, added: bool) -> web.Response:
        from urllib.parse import unquote

        self._channel(cid)
        self._stored(cid, mid)
        self.reactions.append(
            {"channel_id": int(cid), "message_id": int(mid), "emoji": unquote(emoji), "added": added, "time": time.monotonic()}
        )
        self._notify()
        return self._no_content()

    async def _add_reaction(self, rec: RecordedRequest, cid: str, mid: str, emoji: str) -> web.Response:
        return self._record_reaction(cid, mid, emoji, added=True)

    async def _remove_reaction(self, rec: RecordedRequest, cid: str, mid: str, emoji: str) -> web.Response:
        return self._record_reaction(cid, mid, emoji, added=False)

    # ------------------------------------------------------------------ application commands

    def _check_app(self, app: str) -> None:
        if int(app) != APP_ID:
            raise _ApiError(404, 10002, "Unknown Application")

    def _scope(self, gid: str | None) -> int | None:
        if gid is None:
            return None
        self._check_guild(gid)
        return int(gid)

    def _command_record(self, data: dict[str, Any], scope: int | None, old: dict[str, Any] | None) -> dict[str, Any]:
        cmd = dict(data)
        cmd.setdefault("type", 1)
        cmd.setdefault("description", "")
        cmd.setdefault("options", [])
        cmd.setdefault("default_member_permissions", None)
        cmd.setdefault("nsfw", False)
        cmd["id"] = old["id"] if old else str(self._snowflake())
        cmd["application_id"] = str(APP_ID)
        cmd["version"] = str(self._snowflake())
        if scope is not None:
            cmd["guild_id"] = str(scope)
        else:
            cmd.setdefault("contexts", None)
            cmd.setdefault("integration_types", [0])
        return cmd

    async def _list_commands(self, rec: RecordedRequest, app: str, gid: str | None = None) -> web.Response:
        self._check_app(app)
        return self._json(self.commands.get(self._scope(gid), []))

    async def _put_commands(self, rec: RecordedRequest, app: str, gid: str | None = None) -> web.Response:
        self._check_app(app)
        scope = self._scope(gid)
        old = {(c["name"], c["type"]): c for c in self.commands.get(scope, [])}
        new = [self._command_record(d, scope, old.get((d["name"], d.get("type", 1)))) for d in rec.json or []]
        self.commands[scope] = new
        self._notify()
        return self._json(new)

    async def _post_command(self, rec: RecordedRequest, app: str, gid: str | None = None) -> web.Response:
        self._check_app(app)
        scope = self._scope(gid)
        cmds = self.commands.setdefault(scope, [])
        data = rec.json or {}
        old = next((c for c in cmds if c["name"] == data["name"] and c["type"] == data.get("type", 1)), None)
        cmd = self._command_record(data, scope, old)
        if old is not None:
            cmds[cmds.index(old)] = cmd
        else:
            cmds.append(cmd)
        self._notify()
        return self._json(cmd, status=200 if old else 201)

    def _find_stored_command(self, scope: int | None, cmd_id: str) -> dict[str, Any]:
        for c in self.commands.get(scope, []):
            if c["id"] == cmd_id:
                return c
        raise _ApiError(404, 10063, "Unknown application command")

    async def _get_command(self, rec: RecordedRequest, app: str, cmd: str, gid: str | None = None) -> web.Response:
        self._check_app(app)
        return self._json(self._find_stored_command(self._scope(gid), cmd))

    async def _patch_command(self, rec: RecordedRequest, app: str, cmd: str, gid: str | None = None) -> web.Response:
        self._check_app(app)
        scope = self._scope(gid)
        old = self._find_stored_command(scope, cmd)
        new = self._command_record({**old, **(rec.json or {})}, scope, old)
        cmds = self.commands[scope]
        cmds[cmds.index(old)] = new
        self._notify()
        return self._json(new)

    async def _delete_command(self, rec: RecordedRequest, app: str, cmd: str, gid: str | None = None) -> web.Response:
        self._check_app(app)
        scope = self._scope(gid)
        self.commands[scope].remove(self._find_stored_command(scope, cmd))
        self._notify()
        return self._no_content()

    @property
    def global_commands(self) -> list[dict[str, Any]]:
        return self.commands.get(None, [])

    def guild_commands(self, guild_id: int = GUILD_ID) -> list[dict[str, Any]]:
        return self.commands.get(guild_id, [])

    def find_command(self, name: str, type: int = 1, guild_id: int | None = GUILD_ID) -> dict[str, Any] | None:
        """A registered command by name/type: the guild's first, then global."""
        for scope in ([guild_id] if guild_id is not None else []) + [None]:
            for c in self.commands.get(scope, []):
                if c["name"] == name and c.get("type", 1) == type:
                    return c
        return None

    # ------------------------------------------------------------------ interactions (server side)

    def _interaction_by_token(self, app: str, token: str) -> FakeInteraction:
        if int(app) != APP_ID:
            raise _ApiError(404, 10015, "Unknown Webhook")
        for it in self.interactions.values():
            if it.token == token:
                if self.interaction_token_lifetime is not None and time.monotonic() - it.created > self.interaction_token_lifetime:
                    raise _ApiError(401, 50027, "Invalid Webhook Token")
                return it
        raise _ApiError(404, 10015, "Unknown Webhook")

    def _interaction_extra(self, it: FakeInteraction) -> dict[str, Any]:
        user = self.users[int((it.payload.get("member") or it.payload)["user"]["id"])]
        meta = {
            "id": str(it.id),
            "type": 2,
            "user": user,
            "authorizing_integration_owners": it.payload["authorizing_integration_owners"],
            "name": it.payload["data"]["name"],
            "command_type": it.command_type,
        }
        return {
            "webhook_id": str(APP_ID),
            "application_id": str(APP_ID),
            "interaction_metadata": meta,
            "interaction": {"id": str(it.id), "type": 2, "name": it.payload["data"]["name"], "user": user},
        }

    async def _interaction_callback(self, rec: RecordedRequest, iid: str, token: str) -> web.Response:
        it = self.interactions.get(int(iid))
        if it is None or it.token != token:
            raise _ApiError(404, 10062, "Unknown interaction")
        if it.callback_type is not None:
            raise _ApiError(400, 40060, "Interaction has already been acknowledged.")
        if self.interaction_ack_timeout is not None and time.monotonic() - it.created > self.interaction_ack_timeout:
            raise _ApiError(404, 10062, "Unknown interaction")
        body = rec.json if isinstance(rec.json, dict) else {}
        ctype = body.get("type")
        data = body.get("data") or {}
        now = time.monotonic()
        self.callbacks.append(
            {
                "interaction_id": it.id,
                "type": ctype,
                "data": data,
                "files": rec.files,
                "time": now,
                "delay": now - it.created,
            }
        )
        msg = None
        if ctype in (4, 5):
            flags = data.get("flags") or 0
            it.ephemeral = bool(flags & FLAG_EPHEMERAL)
            msg_type = 20 if it.command_type == 1 else 23
            if ctype == 5:
                msg = self._make_message(
                    author_id=BOT_ID,
                    channel_id=it.channel_id,
                    content="",
                    msg_type=msg_type,
                    flags=(flags & FLAG_EPHEMERAL) | FLAG_LOADING,
                    extra=self._interaction_extra(it),
                )
                it.loading = True
            else:
                msg = self._bot_message_from_payload(
                    it.channel_id, data, rec.files, msg_type=msg_type, extra=self._interaction_extra(it)
                )
                self._record_sent(msg, "interaction_callback", data, rec.files, interaction_id=it.id)
            it.original_message_id = int(msg["id"])
            self._echo("MESSAGE_CREATE", msg)
        elif ctype not in (1, 6, 7, 8, 9, 10, 12):
            raise _form_error("type", "BASE_TYPE_CHOICES", f"Value must be one of (1, 4, 5, 6, 7, 8, 9, 12); got {ctype!r}.")
        it.callback_type = ctype
        it.callback_data = data
        self._notify()
        if rec.query.get("with_response", "").lower() not in ("1", "true"):
            return self._no_content()
        out: dict[str, Any] = {
            "interaction": {
                "id": str(it.id),
                "type": it.payload["type"],
                "response_message_id": msg["id"] if msg else None,
                "response_message_loading": ctype == 5,
                "response_message_ephemeral": it.ephemeral,
            },
            "resource": {"type": ctype},
        }
        if msg is not None:
            out["resource"]["message"] = self._rest_message(msg)
        return self._json(out)

    async def _followup(self, rec: RecordedRequest, app: str, token: str) -> web.Response:
        it = self._interaction_by_token(app, token)
        if it.callback_type is None:
            raise _ApiError(404, 10015, "Unknown Webhook")
        data = rec.json if isinstance(rec.json, dict) else {}
        if it.loading and it.original_message_id in self.messages:
            # Discord: the first follow-up after a deferred response fills in the loading message.
            msg = self.messages[it.original_message_id]
            self._validate_message(data, rec.files, creating=True)
            self._apply_edit(msg, {k: v for k, v in data.items() if k != "flags"}, rec.files)
            msg["flags"] = msg.get("flags", 0) & ~FLAG_LOADING
            msg["edited_timestamp"] = None
            it.loading = False
            self._record_sent(msg, "followup", data, rec.files, interaction_id=it.id, edited_original=True)
            self._echo("MESSAGE_UPDATE", msg)
        else:
            msg = self._bot_message_from_payload(
                it.channel_id, data, rec.files, msg_type=20 if it.command_type == 1 else 23, extra=self._interaction_extra(it)
            )
            it.followup_ids.append(int(msg["id"]))
            self._record_sent(msg, "followup", data, rec.files, interaction_id=it.id, edited_original=False)
            self._echo("MESSAGE_CREATE", msg)
        if rec.query.get("wait", "").lower() in ("1", "true"):
            return self._json(self._rest_message(msg))
        return self._no_content()

    def _webhook_message(self, it: FakeInteraction, mid: str) -> dict[str, Any]:
        target = it.original_message_id if mid == "@original" else int(mid)
        if target is None or (target != it.original_message_id and target not in it.followup_ids):
            raise _ApiError(404, 10008, "Unknown Message")
        msg = self.messages.get(target)
        if msg is None:
            raise _ApiError(404, 10008, "Unknown Message")
        return msg

    async def _webhook_get(self, rec: RecordedRequest, app: str, token: str, mid: str) -> web.Response:
        it = self._interaction_by_token(app, token)
        return self._json(self._rest_message(self._webhook_message(it, mid)))

    async def _webhook_edit(self, rec: RecordedRequest, app: str, token: str, mid: str) -> web.Response:
        it = self._interaction_by_token(app, token)
        msg = self._webhook_message(it, mid)
        data = rec.json if isinstance(rec.json, dict) else {}
        was_loading = it.loading and int(msg["id"]) == it.original_message_id
        self._apply_edit(msg, data, rec.files)
        if was_loading:
            msg["flags"] = msg.get("flags", 0) & ~FLAG_LOADING
            it.loading = False
        self._record_sent(msg, "edit", data, rec.files, interaction_id=it.id, original=mid == "@original")
        self._echo("MESSAGE_UPDATE", msg)
        return self._json(self._rest_message(msg))

    async def _webhook_delete(self, rec: RecordedRequest, app: str, token: str, mid: str) -> web.Response:
        it = self._interaction_by_token(app, token)
        msg = self._webhook_message(it, mid)
        self._forget_message(msg, "webhook")
        return self._no_content()

    # ------------------------------------------------------------------ CDN and other paths

    def add_attachment(
        self,
        filename: str,
        data: bytes,
        content_type: str | None = None,
        size: int | None = None,
        *,
        width: int | None = None,
        height: int | None = None,
        channel_id: int = GENERAL_ID,
        url: str | None = None,
        delay: float = 0.0,
        status: int = 200,
    ) -> dict[str, Any]:
        """Host ``data`` on the fake CDN; return the attachment dict for messages/interactions.

        ``size`` is the declared size (defaults to ``len(data)``; may differ to test declared-size checks).
        ``url`` overrides the attachment url (e.g. a redirect added with :meth:`add_redirect`);
        ``delay`` slows the download, ``status`` != 200 makes it fail.
        """
        att_id = self._snowflake()
        if content_type is None:
            content_type = mimetypes.guess_type(filename)[0]
        path = f"/attachments/{channel_id}/{att_id}/{filename}"
        att: dict[str, Any] = {
            "id": str(att_id),
            "filename": filename,
            "size": len(data) if size is None else size,
            "url": url or self.base_url + path,
            "proxy_url": self.base_url + "/media" + path,
        }
        if content_type is not None:
            att["content_type"] = content_type
        if width is not None:
            att["width"] = width
        if height is not None:
            att["height"] = height
        self._blobs[att_id] = {
            "data": data,
            "content_type": content_type or "application/octet-stream",
            "filename": filename,
            "delay": delay,
            "status": status,
        }
        return att

    def add_redirect(self, path: str, location: str, status: int = 302) -> str:
        """Answer GET ``path`` with a redirect to ``location``; return the full URL."""
        self._redirects[path] = (location, status)
        return self.base_url + path

    def add_file(self, path: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Serve ``data`` at ``path`` (recorded in downloads); return the full URL."""
        self._files[path] = {"data": data, "content_type": content_type}
        return self.base_url + path

    def downloads_of(self, attachment: dict[str, Any]) -> list[dict[str, Any]]:
        return [d for d in self.downloads if d.get("attachment_id") == int(attachment["id"])]

    _CDN = re.compile(r"(?P<proxy>/media)?/attachments/(?P<cid>\d+)/(?P<aid>\d+)/(?P<filename>[^/]+)")

    async def _other_handler(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        rec = RecordedRequest(
            method=request.method,
            path=path,
            query=dict(request.query),
            json=None,
            files=[],
            headers=dict(request.headers),
            time=time.monotonic(),
            api=False,
        )
        self.requests.append(rec)
        response = await self._answer_other(rec, request)
        rec.status = response.status
        self._notify()
        return response

    async def _answer_other(self, rec: RecordedRequest, request: web.Request) -> web.StreamResponse:
        path = rec.path
        rule = self._take_rule(rec.method, path)
        download = {"path": path, "headers": rec.headers, "time": rec.time, "via": "other", "attachment_id": None}
        m = self._CDN.fullmatch(path)
        if m:
            download.update(via="proxy" if m.group("proxy") else "cdn", attachment_id=int(m.group("aid")))
        if rec.method in ("GET", "HEAD"):
            if path in self._redirects:
                download["via"] = "redirect"
            self.downloads.append(download)
        if rule is not None:
            if rule.delay:
                await asyncio.sleep(rule.delay)
            if rule.status is not None:
                rec.injected = True
                return self._failure_response(rule)
        if rec.method not in ("GET", "HEAD"):
            return web.Response(status=405)
        if path in self._redirects:
            location, status = self._redirects[path]
            return web.Response(status=status, headers={"Location": location})
        if path in self._files:
            f = self._files[path]
            return web.Response(body=f["data"], content_type=f["content_type"])
        if m:
            blob = self._blobs.get(int(m.group("aid")))
            if blob is None or blob["filename"] != m.group("filename"):
                return web.Response(status=404, text="Not Found")
            if blob["delay"]:
                await asyncio.sleep(blob["delay"])
            if blob["status"] != 200:
                return web.Response(status=blob["status"], text="error")
            return web.Response(body=blob["data"], content_type=blob["content_type"])
        return web.Response(status=404, text="Not Found")

    # ------------------------------------------------------------------ gateway

    async def _gateway_handler(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        await ws.prepare(request)
        conn = _Conn(ws, request)
        self._conns.append(conn)
        self.gateway_connections.append(conn.query)
        conn.writer = asyncio.create_task(self._writer(conn))
        conn.send({"op": OP_HELLO, "d": {"heartbeat_interval": self.heartbeat_interval, "_trace": ["fake-gateway"]}, "s": None, "t": None})
        self._notify()
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_gateway_frame(conn, json.loads(msg.data))
                elif msg.type == WSMsgType.BINARY:
                    await ws.close(code=4002, message=b"Error while decoding payload.")
                    break
        finally:
            conn.live = False
            conn.close_code = ws.close_code
            if self._conn is conn:
                self._conn = None
            if conn.writer is not None:
                conn.writer.cancel()
            if conn in self._conns:
                self._conns.remove(conn)
            self._notify()
        return ws

    async def _writer(self, conn: _Conn) -> None:
        while True:
            frame, entry = await conn.queue.get()
            try:
                await conn.ws.send_str(frame)
            except Exception:  # noqa: BLE001 - the socket went away; undelivered events stay in the log
                return
            if entry is not None and not entry.delivered.done():
                entry.delivered.set_result(time.monotonic())
                self._notify()

    async def _on_gateway_frame(self, conn: _Conn, frame: dict[str, Any]) -> None:
        op = frame.get("op")
        d = frame.get("d")
        if op == OP_HEARTBEAT:
            self.heartbeats += 1
            self._notify()
            if self.ack_heartbeats:
                conn.send({"op": OP_HEARTBEAT_ACK, "d": None, "s": None, "t": None})
        elif op == OP_IDENTIFY:
            await self._identify(conn, d or {})
        elif op == OP_RESUME:
            await self._resume(conn, d or {})
        elif op == OP_REQUEST_MEMBERS:
            self._request_members(d or {})
        elif op == OP_PRESENCE:
            self.presence_updates.append(d)
            self._notify()
        elif op == OP_VOICE:
            pass
        else:
            await conn.ws.close(code=4001, message=b"Unknown opcode.")

    async def _identify(self, conn: _Conn, d: dict[str, Any]) -> None:
        if d.get("token") != self.token:
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        intents = int(d.get("intents") or 0)
        if not self.privileged_intents and intents & PRIVILEGED_INTENTS:
            await conn.ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        self.identifies += 1
        self.identify_payloads.append(d)
        for entry in self._log:  # a new session: what the old one did not deliver is lost
            if not entry.delivered.done():
                entry.delivered.set_exception(ConnectionError("gateway session replaced before delivery"))
                entry.delivered.exception()  # mark retrieved
        for old in self._conns:
            if old is not conn:
                old.live = False
        self.session_id = secrets.token_hex(16)
        self._seq = 0
        self._log = []
        self._intents = intents
        self._shard = d.get("shard")
        self._conn = conn
        conn.live = True
        ready = {
            "v": 10,
            "user": dict(self.bot_user, verified=True, mfa_enabled=False, email=None),
            "guilds": [{"id": str(GUILD_ID), "unavailable": True}],
            "session_id": self.session_id,
            "session_type": "normal",
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(APP_ID), "flags": self.app_info()["flags"]},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": [],
            "user_settings": {},
            "_trace": ["fake-gateway"],
        }
        if self._shard is not None:
            ready["shard"] = self._shard
        self._dispatch("READY", ready)
        self._dispatch("GUILD_CREATE", self.guild_create_payload())
        self._notify()

    def guild_create_payload(self) -> dict[str, Any]:
        channels = [{k: v for k, v in c.items() if k != "guild_id"} for c in self.channels.values() if c["type"] != 1]
        return dict(
            self.guild,
            roles=list(self.roles.values()),
            channels=channels,
            members=[self.member_payload(uid) for uid in self.members],
            member_count=len(self.members),
            large=False,
            unavailable=False,
            joined_at=self.members[BOT_ID]["joined_at"],
            presences=[],
            voice_states=[],
            threads=[],
            stage_instances=[],
            guild_scheduled_events=[],
            soundboard_sounds=[],
            lazy=True,
        )

    async def _resume(self, conn: _Conn, d: dict[str, Any]) -> None:
        if d.get("token") != self.token:
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        if self.reject_resumes or self.session_id is None or d.get("session_id") != self.session_id:
            self.invalid_sessions += 1
            conn.send({"op": OP_INVALID_SESSION, "d": False, "s": None, "t": None})
            self._notify()
            return
        self.resumes += 1
        for old in self._conns:
            if old is not conn:
                old.live = False
        self._conn = conn
        seq = int(d.get("seq") or 0)
        # Replay what the client missed, then RESUMED; no await in between, so nothing slips past.
        for entry in self._log:
            if entry.seq > seq and entry.replayable and not entry.filtered:
                conn.send({"op": OP_DISPATCH, "d": entry.d, "s": entry.seq, "t": entry.t}, entry)
        self._dispatch("RESUMED", {"_trace": ["fake-gateway"]}, conn=conn, replayable=False)
        conn.live = True
        self._notify()

    def _request_members(self, d: dict[str, Any]) -> None:
        user_ids = d.get("user_ids")
        query = d.get("query") or ""
        members = []
        for uid in self.members:
            if user_ids is not None and str(uid) not in {str(u) for u in (user_ids if isinstance(user_ids, list) else [user_ids])}:
                continue
            if query and not self.users[uid]["username"].startswith(query):
                continue
            members.append(self.member_payload(uid))
        limit = d.get("limit") or 0
        if limit:
            members = members[:limit]
        chunk = {"guild_id": str(GUILD_ID), "members": members, "chunk_index": 0, "chunk_count": 1, "not_found": []}
        if d.get("nonce"):
            chunk["nonce"] = d["nonce"]
        if d.get("presences"):
            chunk["presences"] = []
        self._dispatch("GUILD_MEMBERS_CHUNK", chunk)

    def _wants(self, t: str, d: dict[str, Any]) -> bool:
        if t.startswith("MESSAGE_") and not t.startswith("MESSAGE_REACTION"):
            need = INTENT_GUILD_MESSAGES if "guild_id" in d else INTENT_DIRECT_MESSAGES
            return bool(self._intents & need)
        return True

    def _dispatch(
        self, t: str, d: dict[str, Any], *, conn: _Conn | None = None, replayable: bool = True
    ) -> GatewayEvent:
        """Log a DISPATCH in the current session and send it now if a connection is live."""
        if self.session_id is None:
            raise RuntimeError("no gateway session: the bot has not identified yet")
        self._seq += 1
        entry = GatewayEvent(
            seq=self._seq,
            t=t,
            d=d,
            session_id=self.session_id,
            delivered=asyncio.get_running_loop().create_future(),
            replayable=replayable,
        )
        self._log.append(entry)
        self.events.append(entry)
        if not self._wants(t, d):
            entry.filtered = True
            entry.delivered.set_result(time.monotonic())
            return entry
        target = conn or self._conn
        if target is not None and (target.live or conn is not None):
            target.send({"op": OP_DISPATCH, "d": d, "s": entry.seq, "t": t}, entry)
        return entry

    async def dispatch(self, t: str, d: dict[str, Any], timeout: float = 10.0) -> GatewayEvent:
        """Send any DISPATCH event and wait until it went over the websocket."""
        entry = self._dispatch(t, d)
        await self._delivered(entry, timeout)
        return entry

    async def _delivered(self, entry: GatewayEvent, timeout: float) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(entry.delivered), timeout)
        except TimeoutError:
            raise TimeoutError(f"{entry.t} (s={entry.seq}) not delivered within {timeout}s") from None

    async def drop_connection(self, code: int = 4000, *, abrupt: bool = False) -> None:
        """Close the current gateway websocket from the server side; the client reconnects and resumes.

        Events injected meanwhile are kept and replayed on RESUME. ``abrupt=True`` cuts the TCP
        connection without a close frame.
        """
        conn = self._conn
        if conn is None:
            raise RuntimeError("no live gateway connection")
        conn.live = False
        self._conn = None
        if abrupt:
            transport = conn.request.transport
            if transport is not None:
                transport.abort()
        else:
            await conn.ws.close(code=code, message=b"dropped by the test")
        self._notify()

    def request_reconnect(self) -> None:
        """Send op 7 RECONNECT; the client closes and resumes."""
        conn = self._conn
        if conn is None:
            raise RuntimeError("no live gateway connection")
        conn.live = False
        self._conn = None
        conn.send({"op": OP_RECONNECT, "d": None, "s": None, "t": None})

    def invalidate_session(self, resumable: bool = False) -> None:
        """Send op 9 on the current connection; ``resumable=False`` makes the client identify anew."""
        conn = self._conn
        if conn is None:
            raise RuntimeError("no live gateway connection")
        self.invalid_sessions += 1
        conn.send({"op": OP_INVALID_SESSION, "d": resumable, "s": None, "t": None})

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.live

    async def wait_until_connected(self, timeout: float = 10.0) -> None:
        """Wait until a session is live on a websocket (after IDENTIFY or RESUME)."""
        await self.wait_until(lambda: self.connected, timeout, "a live gateway session")

    # ------------------------------------------------------------------ user actions

    async def user_message(
        self,
        author_id: int,
        channel_id: int,
        content: str = "",
        attachments: Iterable[dict[str, Any]] = (),
        mentions_bot: bool = False,
        reference_message_id: int | None = None,
        *,
        ping_reply: bool = False,
        embeds: Iterable[dict[str, Any]] = (),
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        """A user posts a message; returns the stored payload once MESSAGE_CREATE went over the websocket.

        ``mentions_bot`` prefixes ``<@9000>`` (unless already in content) and lists the bot in ``mentions``;
        ``reference_message_id`` makes it a reply (``message_reference`` + ``referenced_message``);
        ``ping_reply`` also pings the replied-to author, like Discord's reply ping.
        """
        ch = self._channel(channel_id)
        bot_mention = f"<@{BOT_ID}>"
        if mentions_bot and bot_mention not in content and f"<@!{BOT_ID}>" not in content:
            content = f"{bot_mention} {content}".rstrip()
        is_guild = ch["type"] != 1
        mentions, roles, everyone = self._resolve_mentions(content, {"parse": ["users", "roles", "everyone"]}, None, is_guild)
        if not mentions_bot:
            mentions = [u for u in mentions if u["id"] != str(BOT_ID)]
        elif not any(u["id"] == str(BOT_ID) for u in mentions):
            mentions.insert(0, self._resolve_mentions(bot_mention, None, None, is_guild)[0][0])
        reference = None
        if reference_message_id is not None:
            target = self.messages.get(int(reference_message_id))
            if target is None:
                raise KeyError(f"no stored message {reference_message_id}")
            reference = {"message_id": reference_message_id, "channel_id": target["channel_id"]}
            replied = int(target["author"]["id"])
            if ping_reply and not any(u["id"] == str(replied) for u in mentions):
                mentions.append(self._resolve_mentions(f"<@{replied}>", None, None, is_guild)[0][0])
        msg = self._make_message(
            author_id=author_id,
            channel_id=channel_id,
            content=content,
            attachments=[dict(a) for a in attachments],
            embeds=list(embeds),
            mentions=mentions,
            mention_roles=roles,
            mention_everyone=everyone,
            reference=reference,
        )
        await self._delivered(self._dispatch("MESSAGE_CREATE", self._gateway_message(msg)), timeout)
        return msg

    async def user_edit(self, message_id: int, content: str, timeout: float = 10.0) -> dict[str, Any]:
        """A user edits their message -> MESSAGE_UPDATE."""
        msg = self.messages[int(message_id)]
        msg["content"] = content
        msg["edited_timestamp"] = _iso()
        await self._delivered(self._dispatch("MESSAGE_UPDATE", self._gateway_message(msg)), timeout)
        return msg

    async def user_delete(self, message_id: int, timeout: float = 10.0) -> None:
        """A user deletes a message -> MESSAGE_DELETE."""
        msg = self.messages[int(message_id)]
        entry = self._forget_message(msg, "user")
        if entry is not None:
            await self._delivered(entry, timeout)

    def _interaction_base(self, user_id: int, channel_id: int, itype: int, data: dict[str, Any], command_type: int) -> FakeInteraction:
        ch = self._channel(channel_id)
        iid = self._snowflake()
        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(48)
        payload: dict[str, Any] = {
            "id": str(iid),
            "application_id": str(APP_ID),
            "type": itype,
            "data": data,
            "channel_id": str(channel_id),
            "channel": ch,
            "token": token,
            "version": 1,
            "app_permissions": str(self.permissions(BOT_ID, channel_id)),
            "locale": "en-US",
            "entitlements": [],
            "attachment_size_limit": self.attachment_size_limit,
        }
        if ch["type"] == 1:
            payload["user"] = self.users[user_id]
            payload["context"] = 1  # BOT_DM
            payload["authorizing_integration_owners"] = {"0": str(GUILD_ID)}
        else:
            member = self.member_payload(user_id)
            member["permissions"] = str(self.permissions(user_id, channel_id))
            payload.update(
                guild_id=str(GUILD_ID),
                guild={"id": str(GUILD_ID), "locale": "en-US", "features": []},
                guild_locale="en-US",
                member=member,
                context=0,  # GUILD
                authorizing_integration_owners={"0": str(GUILD_ID)},
            )
        it = FakeInteraction(
            id=iid, token=token, payload=payload, created=time.monotonic(), channel_id=channel_id, command_type=command_type
        )
        self.interactions[iid] = it
        return it

    def _command_data(self, name: str, ctype: int, channel_id: int, guild_command: bool | None) -> dict[str, Any]:
        in_guild = not self._is_dm(channel_id)
        registered = None
        scope_guild = False
        if in_guild:
            registered = next(
                (c for c in self.guild_commands() if c["name"] == name and c.get("type", 1) == ctype), None
            )
            scope_guild = registered is not None
        if registered is None:
            registered = next((c for c in self.global_commands if c["name"] == name and c.get("type", 1) == ctype), None)
        if guild_command is not None:
            scope_guild = guild_command and in_guild
        data: dict[str, Any] = {"id": registered["id"] if registered else str(self._snowflake()), "name": name, "type": ctype}
        if scope_guild:
            data["guild_id"] = str(GUILD_ID)
        data["_registered"] = registered
        return data

    def _option(self, name: str, value: Any, spec: dict[str, Any] | None, resolved: dict[str, dict], is_guild: bool) -> dict[str, Any]:
        if spec is not None:
            otype = spec["type"]
        elif isinstance(value, dict) and "filename" in value:
            otype = 11
        elif isinstance(value, bool):
            otype = 5
        elif isinstance(value, int):
            otype = 4
        elif isinstance(value, float):
            otype = 10
        else:
            otype = 3
        if otype == 11:
            att = value if isinstance(value, dict) else None
            if att is None:
                raise TypeError(f"option {name!r} is an attachment: pass an add_attachment() dict")
            resolved.setdefault("attachments", {})[att["id"]] = dict(att)
            value = att["id"]
        elif otype in (6, 9) and (int(value) in self.users):
            uid = int(value)
            resolved.setdefault("users", {})[str(uid)] = self.users[uid]
            if is_guild and uid in self.members:
                m = self.member_payload(uid, with_user=False)
                m["permissions"] = str(self.permissions(uid))
                resolved.setdefault("members", {})[str(uid)] = m
            value = str(uid)
        elif otype in (8, 9):
            rid = int(value)
            resolved.setdefault("roles", {})[str(rid)] = self.roles[rid]
            value = str(rid)
        elif otype == 7:
            cid = int(value)
            c = self.channels[cid]
            resolved.setdefault("channels", {})[str(cid)] = {
                "id": c["id"],
                "name": c.get("name"),
                "type": c["type"],
                "permissions": str(self.permissions(BOT_ID, cid)),
                **({"guild_id": c["guild_id"]} if "guild_id" in c else {}),
            }
            value = str(cid)
        elif otype == 4:
            value = int(value)
        elif otype == 10:
            value = float(value)
        elif otype == 5:
            value = bool(value)
        elif otype == 3:
            value = str(value)
        return {"name": name, "type": otype, "value": value}

    async def slash_command(
        self,
        user_id: int,
        channel_id: int,
        name: str,
        options: dict[str, Any] | None = None,
        attachments: dict[str, dict[str, Any]] | None = None,
        *,
        guild_command: bool | None = None,
        timeout: float = 10.0,
    ) -> FakeInteraction:
        """A user runs ``/name`` -> INTERACTION_CREATE (type 2, chat input); returns the interaction once sent.

        ``name`` may be ``"group sub"`` or ``"group sub leaf"`` for subcommands. Option types come from the
        registered command when the bot synced it, else from the values (an :meth:`add_attachment` dict is an
        attachment option). ``attachments`` maps more option names to attachment dicts.
        ``data.guild_id`` is set when the command is registered for the guild (``guild_command`` overrides).
        """
        parts = name.split()
        data = self._command_data(parts[0], 1, channel_id, guild_command)
        registered = data.pop("_registered")
        values = dict(options or {})
        values.update(attachments or {})
        resolved: dict[str, dict] = {}
        is_guild = not self._is_dm(channel_id)
        spec_options = registered.get("options", []) if registered else []
        container: list[dict[str, Any]] = []
        data["options"] = container
        for sub in parts[1:]:
            spec = next((o for o in spec_options if o["name"] == sub), None)
            sub_type = spec["type"] if spec else (2 if sub != parts[-1] else 1)
            node = {"name": sub, "type": sub_type, "options": []}
            container.append(node)
            container = node["options"]
            spec_options = spec.get("options", []) if spec else []
        for opt_name, value in values.items():
            spec = next((o for o in spec_options if o["name"] == opt_name), None)
            container.append(self._option(opt_name, value, spec, resolved, is_guild))
        if resolved:
            data["resolved"] = resolved
        it = self._interaction_base(user_id, channel_id, 2, data, 1)
        await self._delivered(self._dispatch("INTERACTION_CREATE", it.payload), timeout)
        return it

    async def message_context_menu(
        self, user_id: int, channel_id: int, name: str, target_message_id: int, *, guild_command: bool | None = None, timeout: float = 10.0
    ) -> FakeInteraction:
        """A user runs the message command ``name`` on a stored message -> INTERACTION_CREATE (data.type 3)."""
        target = self.messages.get(int(target_message_id))
        if target is None:
            raise KeyError(f"no stored message {target_message_id}")
        data = self._command_data(name, 3, channel_id, guild_command)
        data.pop("_registered")
        resolved_msg = {k: v for k, v in target.items() if k not in ("member", "referenced_message")}
        data.update(target_id=str(target_message_id), resolved={"messages": {str(target_message_id): resolved_msg}})
        it = self._interaction_base(user_id, channel_id, 2, data, 3)
        await self._delivered(self._dispatch("INTERACTION_CREATE", it.payload), timeout)
        return it

    async def user_context_menu(
        self, user_id: int, channel_id: int, name: str, target_user_id: int, *, guild_command: bool | None = None, timeout: float = 10.0
    ) -> FakeInteraction:
        """A user runs the user command ``name`` on ``target_user_id`` -> INTERACTION_CREATE (data.type 2)."""
        data = self._command_data(name, 2, channel_id, guild_command)
        data.pop("_registered")
        resolved: dict[str, dict] = {}
        self._option("target", target_user_id, {"type": 6}, resolved, not self._is_dm(channel_id))
        data.update(target_id=str(target_user_id), resolved=resolved)
        it = self._interaction_base(user_id, channel_id, 2, data, 2)
        await self._delivered(self._dispatch("INTERACTION_CREATE", it.payload), timeout)
        return it
