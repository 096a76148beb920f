"""Application commands: the REST routes discord.py syncs them with, and look-ups for tests."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bot.testing.fake_discord.ids import APP_ID, GUILD_ID
from bot.testing.fake_discord.records import ApiError, RecordedRequest
from bot.testing.fake_discord.state import FakeState


class CommandsMixin(FakeState):
    """Part of :class:`FakeDiscord`: global and guild application commands, by scope (None: global)."""

    # ------------------------------------------------------------------ application commands

    def _check_app(self, app: str) -> None:
        if int(app) != APP_ID:
            raise ApiError(404, 10002, "Unknown Application")

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
        if cmd["default_member_permissions"] is not None:  # discord.py sends an int, Discord answers a string
            cmd["default_member_permissions"] = str(int(cmd["default_member_permissions"]))
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
        raise ApiError(404, 10063, "Unknown application command")

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
