"""REST plumbing of the fake (recording, routing, error bodies) and the plain reads: users, application, gateway, guild."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from typing import Any

from aiohttp import BodyPartReader, web

from bot.testing.fake_discord.ids import APP_ID, GUILD_ID, OWNER_ID
from bot.testing.fake_discord.records import ApiError, RecordedRequest
from bot.testing.fake_discord.state import FakeState


class RestMixin(FakeState):
    """Part of :class:`FakeDiscord`: every ``/api/v10`` request is recorded, matched against the route table and answered."""

    # ------------------------------------------------------------------ HTTP plumbing

    @staticmethod
    def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        # Exactly "application/json": discord.py's json_or_text compares the header verbatim.
        return web.Response(status=status, body=json.dumps(data).encode(), content_type="application/json", headers=headers)

    @staticmethod
    def _no_content() -> web.Response:
        return web.Response(status=204)

    def _error_response(self, err: ApiError) -> web.Response:
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
                # a nested multipart fails like any malformed body (recorded as None)
                assert isinstance(part, BodyPartReader), "nested multipart body"
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
        except ApiError as err:
            response = self._error_response(err)
        except Exception as exc:  # noqa: BLE001 - surface fake bugs as 500 with the message
            response = self._json({"message": f"fake discord error: {exc!r}", "code": 0}, status=500)
        rec.status = response.status
        if self.ratelimit_headers and response.status < 400 and "X-RateLimit-Remaining" not in response.headers:
            # as Discord sends them while a bucket is far from its limit: discord.py then lets
            # several requests to one bucket run at once (without them it sends them one by one)
            response.headers["X-RateLimit-Limit"] = "50"
            response.headers["X-RateLimit-Remaining"] = "49"
            response.headers["X-RateLimit-Reset-After"] = "1.000"
            response.headers["X-RateLimit-Bucket"] = re.sub(r"\d+", "N", f"{method} {path}")
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
            if rule.hold_response_s:
                response = await self._route(rec, request)  # it lands...
                rule.held += 1
                self._notify()
                with contextlib.suppress(TimeoutError):  # ...and its answer waits (a closing fake lets it go)
                    await asyncio.wait_for(self._closing.wait(), rule.hold_response_s)
                return response
            if rule.drop_response:
                await self._route(rec, request)  # it lands...
                rec.injected = True
                if request.transport is not None:
                    request.transport.abort()  # ...and the answer never arrives
                raise ConnectionResetError("fake discord dropped the response")
        return await self._route(rec, request)

    async def _route(self, rec: RecordedRequest, request: web.Request) -> web.StreamResponse:
        for method, pattern, handler, needs_auth in self._routes:
            if method != rec.method:
                continue
            m = pattern.fullmatch(rec.path)
            if m is None:
                continue
            if needs_auth and request.headers.get("Authorization") != f"Bot {self.token}":
                raise ApiError(401, 0, "401: Unauthorized")
            return await handler(rec, **m.groupdict())
        raise ApiError(404, 0, "404: Not Found")

    # ------------------------------------------------------------------ REST: users, app, gateway, guild

    async def _get_me(self, rec: RecordedRequest) -> web.Response:
        me = dict(self.bot_user, verified=True, mfa_enabled=False, email=None, locale="en-US", bio="")
        return self._json(me)

    async def _get_user(self, rec: RecordedRequest, uid: str) -> web.Response:
        user = self.users.get(int(uid))
        if user is None:
            raise ApiError(404, 10013, "Unknown User")
        return self._json(user)

    async def _create_dm(self, rec: RecordedRequest) -> web.Response:
        uid = int((rec.json or {}).get("recipient_id", 0))
        if uid not in self.users:
            raise ApiError(400, 50007, "Cannot send messages to this user")
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
        if int(gid) not in self.guild_ids:
            raise ApiError(404, 10004, "Unknown Guild")

    def guild_payload(self, guild_id: int = GUILD_ID) -> dict[str, Any]:
        """The guild without gateway-only fields (REST shape)."""
        guild, roles, _ = self._guild_parts(guild_id)
        return dict(guild, roles=list(roles.values()))

    async def _get_guild(self, rec: RecordedRequest, gid: str) -> web.Response:
        self._check_guild(gid)
        return self._json(self.guild_payload(int(gid)))

    async def _get_guild_channels(self, rec: RecordedRequest, gid: str) -> web.Response:
        self._check_guild(gid)
        # Discord lists a guild's channels, never its threads
        return self._json([c for c in self.channels.values() if c.get("guild_id") == gid and "thread_metadata" not in c])

    async def _get_guild_roles(self, rec: RecordedRequest, gid: str) -> web.Response:
        self._check_guild(gid)
        return self._json(list(self.guild_roles(int(gid)).values()))

    async def _get_member(self, rec: RecordedRequest, gid: str, uid: str) -> web.Response:
        self._check_guild(gid)
        if int(uid) not in self.guild_members(int(gid)):
            raise ApiError(404, 10007, "Unknown Member")
        return self._json(self.member_payload(int(uid), guild_id=int(gid)))

    def _channel(self, cid: Any) -> dict[str, Any]:
        ch = self.channels.get(int(cid))
        if ch is None:
            raise ApiError(404, 10003, "Unknown Channel")
        return ch

    async def _get_channel(self, rec: RecordedRequest, cid: str) -> web.Response:
        ch = self._channel(cid)
        # a thread comes with the bot's thread member, when it joined
        return self._json(self._thread_payload(ch) if "thread_metadata" in ch else ch)
