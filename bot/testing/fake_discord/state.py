"""What the parts of :class:`FakeDiscord` share: its state, typed, the helpers one part calls on another, and a
gateway :class:`Connection`.

Every mixin (:class:`ModelMixin`, :class:`RestMixin`, ...) inherits from :class:`FakeState`, so a type checker
knows ``self.messages`` or ``self._dispatch(...)`` in each of them. The attributes are set in
:meth:`FakeDiscord.__init__`; the helpers are declared for the type checker only (``TYPE_CHECKING``) and
implemented by the mixin or :class:`FakeDiscord` named beside each, so :class:`FakeState` holds nothing at
run time but its annotations.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bot.testing.fake_discord.ids import GENERAL_ID, GUILD_ID
from bot.testing.fake_discord.records import FailureRule, FakeInteraction, GatewayEvent, RecordedRequest

#: a REST route's handler: called with the RecordedRequest and the path pattern's groups as keywords
Handler = Callable[..., Awaitable[web.StreamResponse]]
#: one REST route: method, path pattern (relative to /api/v10), handler, needs auth
Route = tuple[str, re.Pattern[str], Handler, bool]


class Connection:
    """One gateway websocket connection (server side)."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.ws = ws
        self.request = request
        self.query = dict(request.query)
        self.queue: asyncio.Queue[tuple[str, GatewayEvent | None]] = asyncio.Queue()
        self.live = False  # session events flow to this connection
        self.writer: asyncio.Task[None] | None = None
        self.close_code: int | None = None

    def send(self, frame: dict[str, Any], entry: GatewayEvent | None = None) -> None:
        self.queue.put_nowait((json.dumps(frame), entry))


class FakeState:
    """The state of a :class:`FakeDiscord`, shared by its mixins (see the module docstring)."""

    token: str
    heartbeat_interval: int  # ms, sent in HELLO
    host: str
    port: int | None

    # knobs
    ack_heartbeats: bool
    privileged_intents: bool
    reject_resumes: bool
    interaction_ack_timeout: float | None
    interaction_token_lifetime: float | None
    attachment_size_limit: int
    upload_limit: int
    nonce_window_s: float
    honour_nonces: bool
    ratelimit_headers: bool

    # model
    users: dict[int, dict[str, Any]]
    members: dict[int, dict[str, Any]]
    roles: dict[int, dict[str, Any]]
    channels: dict[int, dict[str, Any]]
    guild: dict[str, Any]
    #: the bot's other guilds (:meth:`ModelMixin.add_guild`): guild id -> {"guild", "roles", "members"}
    other_guilds: dict[int, dict[str, Any]]
    messages: dict[int, dict[str, Any]]
    #: each thread's members: thread id -> user id -> thread member object
    thread_members: dict[int, dict[int, dict[str, Any]]]
    nonces: dict[str, tuple[int, float]]
    nonce_hits: list[dict[str, Any]]
    _closing: asyncio.Event
    commands: dict[int | None, list[dict[str, Any]]]
    interactions: dict[int, FakeInteraction]

    # records
    requests: list[RecordedRequest]
    sent: list[dict[str, Any]]
    callbacks: list[dict[str, Any]]
    deleted: list[dict[str, Any]]
    typing: list[dict[str, Any]]
    reactions: list[dict[str, Any]]
    downloads: list[dict[str, Any]]
    events: list[GatewayEvent]
    identify_payloads: list[dict[str, Any]]
    gateway_connections: list[dict[str, str]]
    presence_updates: list[dict[str, Any]]
    heartbeats: int
    identifies: int
    resumes: int
    invalid_sessions: int

    # fault injection
    failures: list[FailureRule]

    # CDN
    _blobs: dict[int, dict[str, Any]]
    _files: dict[str, dict[str, Any]]
    _redirects: dict[str, tuple[str, int]]
    _media: dict[str, dict[str, Any]]  # media proxy path -> blob (embed pictures, GIF videos)
    _stickers: dict[int, dict[str, Any]]  # sticker id -> blob

    # gateway session
    _conns: list[Connection]
    _conn: Connection | None
    session_id: str | None
    _seq: int
    _log: list[GatewayEvent]
    _intents: int
    _shard: list[int] | None

    _snowflake_last: int
    _change: asyncio.Event | None
    _runner: web.AppRunner | None
    _routes: list[Route]

    if TYPE_CHECKING:
        # FakeDiscord (server.py)

        @property
        def base_url(self) -> str: ...

        @property
        def gateway_url(self) -> str: ...

        @property
        def cdn_url(self) -> str: ...

        @property
        def media_url(self) -> str: ...

        def _notify(self) -> None: ...

        async def wait_until(self, condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any: ...

        def _take_rule(self, method: str, path: str) -> FailureRule | None: ...

        def _failure_response(self, rule: FailureRule) -> web.Response: ...

        # ModelMixin (model.py)

        @staticmethod
        def _role(role_id: int, name: str, perms: int, position: int, **extra: Any) -> dict[str, Any]: ...

        def add_user(
            self, user_id: int, name: str, *, bot: bool = False, roles: Iterable[int] = (), member: bool = True
        ) -> dict[str, Any]: ...

        def add_dm_channel(self, user_id: int, channel_id: int | None = None) -> dict[str, Any]: ...

        def _is_dm(self, channel_id: int) -> bool: ...

        @property
        def guild_ids(self) -> list[int]: ...

        def guild_of(self, channel_id: int) -> int | None: ...

        def _guild_parts(self, guild_id: int) -> tuple[dict[str, Any], dict[int, dict[str, Any]], dict[int, dict[str, Any]]]: ...

        def _role_guild(self, role_id: int) -> int: ...

        def guild_members(self, guild_id: int = GUILD_ID) -> dict[int, dict[str, Any]]: ...

        def guild_roles(self, guild_id: int = GUILD_ID) -> dict[int, dict[str, Any]]: ...

        @property
        def bot_user(self) -> dict[str, Any]: ...

        def member_payload(self, user_id: int, *, with_user: bool = True, guild_id: int = GUILD_ID) -> dict[str, Any]: ...

        def permissions(self, user_id: int, channel_id: int | None = None, *, guild_id: int | None = None) -> int: ...

        def _snowflake(self) -> int: ...

        # RestMixin (rest.py)

        @staticmethod
        def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response: ...

        @staticmethod
        def _no_content() -> web.Response: ...

        def app_info(self) -> dict[str, Any]: ...

        def _check_guild(self, gid: str) -> None: ...

        def _channel(self, cid: Any) -> dict[str, Any]: ...

        # MessagesMixin (messages.py)

        def _rest_message(self, msg: dict[str, Any]) -> dict[str, Any]: ...

        def _gateway_message(self, msg: dict[str, Any]) -> dict[str, Any]: ...

        @staticmethod
        def _validate_message(
            data: dict[str, Any], files: list[dict[str, Any]], *, creating: bool, kept_attachments: int = 0
        ) -> None: ...

        def _make_message(
            self,
            *,
            author_id: int,
            channel_id: int,
            content: str,
            attachments: Iterable[dict[str, Any]] = (),
            embeds: Iterable[dict[str, Any]] = (),
            mentions: Iterable[dict[str, Any]] = (),
            mention_roles: Iterable[str] = (),
            mention_everyone: bool = False,
            reference: dict[str, Any] | None = None,
            msg_type: int = 0,
            flags: int = 0,
            extra: dict[str, Any] | None = None,
        ) -> dict[str, Any]: ...

        def _bot_message_from_payload(
            self,
            channel_id: int,
            data: dict[str, Any],
            files: list[dict[str, Any]],
            *,
            msg_type: int = 0,
            flags: int = 0,
            extra: dict[str, Any] | None = None,
        ) -> dict[str, Any]: ...

        def _record_sent(
            self, msg: dict[str, Any], via: str, payload: dict[str, Any] | None, files: list[dict[str, Any]], **extra: Any
        ) -> dict[str, Any]: ...

        def _echo(self, t: str, msg: dict[str, Any]) -> None: ...

        def _apply_edit(self, msg: dict[str, Any], data: dict[str, Any], files: list[dict[str, Any]]) -> None: ...

        def _forget_message(self, msg: dict[str, Any], via: str) -> GatewayEvent | None: ...

        def _stored(self, cid: Any, mid: Any) -> dict[str, Any]: ...

        # ThreadsMixin (threads.py)

        def _thread_of_message(self, msg: dict[str, Any]) -> dict[str, Any] | None: ...

        def _thread_payload(self, thread: dict[str, Any], for_user: int | None = ...) -> dict[str, Any]: ...

        def _parent_of(self, channel_id: int) -> int: ...

        def _count_in_thread(self, ch: dict[str, Any], msg: dict[str, Any]) -> None: ...

        def _open_for_posting(self, channel_id: int, user_id: int) -> None: ...

        def _check_editable(self, channel_id: int) -> None: ...

        # GatewayMixin (gateway.py)

        def _dispatch(
            self, t: str, d: dict[str, Any], *, conn: Connection | None = None, replayable: bool = True
        ) -> GatewayEvent: ...

        async def _delivered(self, entry: GatewayEvent, timeout: float) -> None: ...

        # CdnMixin (cdn.py)

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
            description: str | None = None,
        ) -> dict[str, Any]: ...

        # CommandsMixin (commands.py)

        @property
        def global_commands(self) -> list[dict[str, Any]]: ...

        def guild_commands(self, guild_id: int = GUILD_ID) -> list[dict[str, Any]]: ...

        # InteractionsMixin (interactions.py)

        def _interaction_base(
            self, user_id: int, channel_id: int, itype: int, data: dict[str, Any], command_type: int
        ) -> FakeInteraction: ...

        # ComponentsMixin (components.py)

        def _component_callback(
            self, it: FakeInteraction, ctype: int, data: dict[str, Any], files: list[dict[str, Any]]
        ) -> dict[str, Any]: ...
