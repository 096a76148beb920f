"""The :class:`FakeDiscord` server: its state, start/close, the REST route table, waiting helpers and fault
injection; the route handlers and the gateway come from the mixins next to this module (see the package docstring),
which share the state's types through :class:`~bot.testing.fake_discord.state.FakeState`."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from bot.testing.fake_discord.cdn import CdnMixin
from bot.testing.fake_discord.commands import CommandsMixin
from bot.testing.fake_discord.components import ComponentsMixin
from bot.testing.fake_discord.gateway import GatewayMixin
from bot.testing.fake_discord.ids import API_PREFIX
from bot.testing.fake_discord.interactions import InteractionsMixin
from bot.testing.fake_discord.messages import MessagesMixin
from bot.testing.fake_discord.model import ModelMixin
from bot.testing.fake_discord.records import FailureRule, RecordedRequest
from bot.testing.fake_discord.rest import RestMixin
from bot.testing.fake_discord.state import Handler, Route
from bot.testing.fake_discord.threads import ThreadsMixin

# --------------------------------------------------------------------------- the fake


class FakeDiscord(
    ModelMixin, RestMixin, MessagesMixin, ThreadsMixin, CommandsMixin, InteractionsMixin, ComponentsMixin, CdnMixin, GatewayMixin
):
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
        # the attributes' types are declared once, in FakeState (state.py)
        self.token = token
        self.heartbeat_interval = heartbeat_interval  # ms, sent in HELLO
        self.host = host
        self.port = None

        # knobs
        self.ack_heartbeats = True  # False: never answer op 1 (zombie connection)
        self.privileged_intents = True  # False: IDENTIFY asking for a privileged intent is closed with 4014
        self.reject_resumes = False  # True: answer RESUME with op 9 (session not resumable)
        self.interaction_ack_timeout = 3.0  # callback later than this: 404 10062
        self.interaction_token_lifetime = 900.0  # follow-ups after this: 401 50027
        self.attachment_size_limit = 10 * 1024 * 1024  # sent in interactions
        self.upload_limit = 10 * 1024 * 1024  # bot uploads above this: 413 40005
        #: how long Discord remembers an enforced nonce (undocumented: "a few minutes");
        #: 0 simulates a restart that took longer than that
        self.nonce_window_s = 300.0
        #: False: a server that ignores nonces (every create makes a message)
        self.honour_nonces = True

        #: send Discord's rate-limit headers (a bucket far from its limit) on successful answers
        self.ratelimit_headers = True

        # model
        self.users = {}
        self.members = {}  # guild members of GUILD_ID by user id
        self.roles = {}
        self.channels = {}  # guild and DM channels
        self.guild = {}
        self.other_guilds = {}  # the bot's other guilds: add_guild()
        self.messages = {}  # every message by id (user and bot)
        self.thread_members = {}  # thread id -> user id -> thread member
        #: enforced nonces of bot-created messages: nonce -> (message id, when)
        self.nonces = {}
        #: creates answered with the message an earlier create with the same nonce made
        self.nonce_hits = []
        #: set when the fake closes: held responses are let go
        self._closing = asyncio.Event()
        self.commands = {None: []}  # None: global; else guild id
        self.interactions = {}
        self._build_model()

        # records
        self.requests = []
        self.sent = []
        self.callbacks = []
        self.deleted = []
        self.typing = []
        self.reactions = []
        self.downloads = []
        self.events = []  # every dispatch of every session
        self.identify_payloads = []
        self.gateway_connections = []  # query of each websocket connect
        self.presence_updates = []
        self.heartbeats = 0
        self.identifies = 0
        self.resumes = 0
        self.invalid_sessions = 0

        # fault injection
        self.failures = []

        # CDN
        self._blobs = {}
        self._files = {}
        self._redirects = {}
        self._media = {}
        self._stickers = {}

        # gateway session
        self._conns = []
        self._conn = None
        self.session_id = None
        self._seq = 0
        self._log = []
        self._intents = 0
        self._shard = None

        self._snowflake_last = 0
        self._change = None
        self._runner = None
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
        self._closing.set()  # held responses go now: the server's cleanup waits for its handlers
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

    @property
    def cdn_url(self) -> str:
        """Stands for ``https://cdn.discordapp.com`` (attachments, PNG/APNG/Lottie stickers)."""
        return self.base_url

    @property
    def media_url(self) -> str:
        """Stands for ``https://media.discordapp.net`` and ``images-ext-*.discordapp.net``
        (attachment and embed media proxy, GIF stickers)."""
        return self.base_url

    # ------------------------------------------------------------------ routes

    def _build_routes(self) -> list[Route]:
        """The REST route table :meth:`RestMixin._route` answers from: handlers of every mixin."""
        ID = r"(?P<{}>\d+)"
        TOKEN = r"(?P<token>[^/]+)"
        msg = r"(?P<mid>@original|\d+)"
        table: list[tuple[str, str, Handler, bool]] = [
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
                "POST",
                r"/channels/" + ID.format("cid") + r"/messages/" + ID.format("mid") + r"/threads",
                self._start_thread_from_message,
                True,
            ),
            ("POST", r"/channels/" + ID.format("cid") + r"/threads", self._start_thread_without_message, True),
            ("GET", r"/guilds/" + ID.format("gid") + r"/threads/active", self._get_active_threads, True),
            ("GET", r"/stickers/" + ID.format("sid"), self._get_sticker, True),
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

    async def wait_for_final(
        self, predicate: Callable[[dict[str, Any]], bool] | None = None, timeout: float = 15.0, *, start: int = 0
    ) -> dict[str, Any]:
        """Like :meth:`wait_for_sent`, then wait until that message is final: the bot streams
        answers (create, edits with a cursor, a last edit), and a place-in-line note is edited
        into the answer.  Returns the message's last record, with the creating record's
        ``via`` and ``message_reference`` (an edit carries neither)."""
        created = await self.wait_for_sent(predicate, timeout, start=start)
        message_id = created["id"]

        def done() -> dict[str, Any] | None:
            latest = next((s for s in reversed(self.sent) if s["id"] == message_id), created)
            content = latest["content"]
            if content.endswith("\u258c") or content.startswith("\u23f3"):  # the cursor, a place-in-line note
                return None
            return {**latest, "via": created["via"], "message_reference": created["message_reference"], "created": created}

        return await self.wait_until(done, timeout, "a final reply")

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

    def created_in(self, channel_id: int) -> list[dict[str, Any]]:
        """The messages the bot created in a channel (each once, not its edits)."""
        return [s for s in self.sent_to(channel_id) if s["via"] != "edit"]

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

    def drop_response_next(self, method: str, path_regex: str, times: int | None = 1) -> FailureRule:
        """Carry out the next matching requests, then drop the connection before answering:
        the request landed, the client sees a network error (and may retry it)."""
        rule = FailureRule(method=method.upper(), pattern=re.compile(path_regex), status=None, times=times, drop_response=True)
        self.failures.append(rule)
        return rule

    def hold_response_next(self, method: str, path_regex: str, seconds: float = 60.0, times: int | None = 1) -> FailureRule:
        """Carry out the next matching requests at once but hold their responses ``seconds``:
        kill the bot meanwhile and the request landed without the bot learning its answer."""
        rule = FailureRule(method=method.upper(), pattern=re.compile(path_regex), status=None, times=times, hold_response_s=seconds)
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
