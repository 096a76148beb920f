"""The gateway websocket: HELLO, heartbeats, IDENTIFY -> READY + GUILD_CREATE, RESUME -> replay + RESUMED, dispatching events."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

from aiohttp import WSMsgType, web

from bot.testing.fake_discord.ids import (
    APP_ID,
    BOT_ID,
    GUILD_ID,
    INTENT_DIRECT_MESSAGES,
    INTENT_GUILD_MESSAGES,
    OP_DISPATCH,
    OP_HEARTBEAT,
    OP_HEARTBEAT_ACK,
    OP_HELLO,
    OP_IDENTIFY,
    OP_INVALID_SESSION,
    OP_PRESENCE,
    OP_RECONNECT,
    OP_REQUEST_MEMBERS,
    OP_RESUME,
    OP_VOICE,
    PRIVILEGED_INTENTS,
    Perm,
)
from bot.testing.fake_discord.records import GatewayEvent
from bot.testing.fake_discord.state import Connection, FakeState


class GatewayMixin(FakeState):
    """Part of :class:`FakeDiscord`: one gateway session at a time, its event log, and the connections it runs over."""

    # ------------------------------------------------------------------ gateway

    async def _gateway_handler(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        await ws.prepare(request)
        conn = Connection(ws, request)
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

    async def _writer(self, conn: Connection) -> None:
        while True:
            frame, entry = await conn.queue.get()
            try:
                await conn.ws.send_str(frame)
            except Exception:  # noqa: BLE001 - the socket went away; undelivered events stay in the log
                return
            if entry is not None and not entry.delivered.done():
                entry.delivered.set_result(time.monotonic())
                self._notify()

    async def _on_gateway_frame(self, conn: Connection, frame: dict[str, Any]) -> None:
        op = frame.get("op")
        d: Any = frame.get("d")  # the op's payload, as sent
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

    async def _identify(self, conn: Connection, d: dict[str, Any]) -> None:
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
            "guilds": [{"id": str(gid), "unavailable": True} for gid in self.guild_ids],
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
        for gid in self.guild_ids:
            self._dispatch("GUILD_CREATE", self.guild_create_payload(gid))
        self._notify()

    def guild_create_payload(self, guild_id: int = GUILD_ID) -> dict[str, Any]:
        guild, roles, members = self._guild_parts(guild_id)
        in_guild = [c for c in self.channels.values() if c.get("guild_id") == str(guild_id)]
        channels = [{k: v for k, v in c.items() if k != "guild_id"} for c in in_guild if "thread_metadata" not in c]
        # the active threads the bot can see (with its thread member where it joined)
        threads = [
            self._thread_payload(c)
            for c in in_guild
            if "thread_metadata" in c and not c["thread_metadata"]["archived"] and self.permissions(BOT_ID, int(c["id"])) & Perm.VIEW_CHANNEL
        ]
        return dict(
            guild,
            roles=list(roles.values()),
            channels=channels,
            members=[self.member_payload(uid, guild_id=guild_id) for uid in members],
            member_count=len(members),
            large=False,
            unavailable=False,
            joined_at=members[BOT_ID]["joined_at"],
            presences=[],
            voice_states=[],
            threads=threads,
            stage_instances=[],
            guild_scheduled_events=[],
            soundboard_sounds=[],
            lazy=True,
        )

    async def _resume(self, conn: Connection, d: dict[str, Any]) -> None:
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
        guild_id = int(d.get("guild_id") or GUILD_ID)
        members = []
        for uid in self.guild_members(guild_id) if guild_id in self.guild_ids else []:
            if user_ids is not None and str(uid) not in {str(u) for u in (user_ids if isinstance(user_ids, list) else [user_ids])}:
                continue
            if query and not self.users[uid]["username"].startswith(query):
                continue
            members.append(self.member_payload(uid, guild_id=guild_id))
        limit = d.get("limit") or 0
        if limit:
            members = members[:limit]
        chunk = {"guild_id": str(guild_id), "members": members, "chunk_index": 0, "chunk_count": 1, "not_found": []}
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
        self, t: str, d: dict[str, Any], *, conn: Connection | None = None, replayable: bool = True
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
