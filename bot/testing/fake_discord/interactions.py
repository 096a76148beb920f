"""Interactions: users running slash and context-menu commands, and the bot answering them (callbacks, follow-ups, webhooks)."""

from __future__ import annotations

import secrets
import time
from typing import Any

from aiohttp import web

from bot.testing.fake_discord.ids import APP_ID, BOT_ID, FLAG_EPHEMERAL, FLAG_LOADING, GUILD_ID
from bot.testing.fake_discord.records import ApiError, FakeInteraction, RecordedRequest, form_error
from bot.testing.fake_discord.state import FakeState

#: what a channel option's ``resolved.channels`` entry carries (discord.py: types/interactions.py PartialChannel,
#: PartialThread), plus ``permissions``
_PARTIAL_CHANNEL_KEYS = (
    "id",
    "type",
    "guild_id",
    "name",
    "topic",
    "position",
    "nsfw",
    "flags",
    "rate_limit_per_user",
    "parent_id",
    "last_message_id",
    "last_pin_timestamp",
    "thread_metadata",
    "owner_id",
    "message_count",
    "member_count",
    "applied_tags",
    "total_message_sent",
)


class InteractionsMixin(FakeState):
    """Part of :class:`FakeDiscord`: INTERACTION_CREATE from users, and the callback/webhook routes of the answers."""

    # ------------------------------------------------------------------ interactions (server side)

    def _interaction_by_token(self, app: str, token: str) -> FakeInteraction:
        if int(app) != APP_ID:
            raise ApiError(404, 10015, "Unknown Webhook")
        for it in self.interactions.values():
            if it.token == token:
                if self.interaction_token_lifetime is not None and time.monotonic() - it.created > self.interaction_token_lifetime:
                    raise ApiError(401, 50027, "Invalid Webhook Token")
                return it
        raise ApiError(404, 10015, "Unknown Webhook")

    def _interaction_extra(self, it: FakeInteraction) -> dict[str, Any]:
        user = self.users[int((it.payload.get("member") or it.payload)["user"]["id"])]
        name = it.payload["data"].get("name") or it.payload["data"].get("custom_id", "")
        meta = {
            "id": str(it.id),
            "type": it.payload["type"],
            "user": user,
            "authorizing_integration_owners": it.payload["authorizing_integration_owners"],
            "name": name,
            "command_type": it.command_type,
        }
        return {
            "webhook_id": str(APP_ID),
            "application_id": str(APP_ID),
            "interaction_metadata": meta,
            "interaction": {"id": str(it.id), "type": it.payload["type"], "name": name, "user": user},
        }

    async def _interaction_callback(self, rec: RecordedRequest, iid: str, token: str) -> web.Response:
        it = self.interactions.get(int(iid))
        if it is None or it.token != token:
            raise ApiError(404, 10062, "Unknown interaction")
        if it.callback_type is not None:
            raise ApiError(400, 40060, "Interaction has already been acknowledged.")
        if self.interaction_ack_timeout is not None and time.monotonic() - it.created > self.interaction_ack_timeout:
            raise ApiError(404, 10062, "Unknown interaction")
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
            msg_type = {1: 20, 0: 19}.get(it.command_type, 23)  # 0: a button (its answer replies to the message)
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
        elif ctype in (6, 7):
            msg = self._component_callback(it, ctype, data, rec.files)
        elif ctype not in (1, 8, 9, 10, 12):
            raise form_error("type", "BASE_TYPE_CHOICES", f"Value must be one of (1, 4, 5, 6, 7, 8, 9, 12); got {ctype!r}.")
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
            raise ApiError(404, 10015, "Unknown Webhook")
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
            raise ApiError(404, 10008, "Unknown Message")
        msg = self.messages.get(target)
        if msg is None:
            raise ApiError(404, 10008, "Unknown Message")
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

    # ------------------------------------------------------------------ user actions: commands

    def _interaction_base(
        self, user_id: int, channel_id: int, itype: int, data: dict[str, Any], command_type: int, locale: str = "en-US"
    ) -> FakeInteraction:
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
            "locale": locale,  # the user's Discord language
            "entitlements": [],
            "attachment_size_limit": self.attachment_size_limit,
        }
        if ch["type"] == 1:
            payload["user"] = self.users[user_id]
            payload["context"] = 1  # BOT_DM
            payload["authorizing_integration_owners"] = {"0": str(GUILD_ID)}
        else:
            guild_id = int(ch.get("guild_id") or GUILD_ID)
            guild = self._guild_parts(guild_id)[0]
            # Discord: the member's permissions in the channel, overwrites included (interaction.permissions)
            member = self.member_payload(user_id, guild_id=guild_id)
            member["permissions"] = str(self.permissions(user_id, channel_id))
            payload.update(
                guild_id=str(guild_id),
                guild={"id": str(guild_id), "locale": guild.get("preferred_locale", "en-US"), "features": guild.get("features", [])},
                guild_locale=guild.get("preferred_locale", "en-US"),
                member=member,
                context=0,  # GUILD
                authorizing_integration_owners={"0": str(guild_id)},
            )
        it = FakeInteraction(
            id=iid, token=token, payload=payload, created=time.monotonic(), channel_id=channel_id, command_type=command_type
        )
        self.interactions[iid] = it
        return it

    def _command_data(self, name: str, ctype: int, channel_id: int, guild_command: bool | None) -> dict[str, Any]:
        in_guild = not self._is_dm(channel_id)
        guild_id = self.guild_of(channel_id) or GUILD_ID
        registered = None
        scope_guild = False
        if in_guild:
            registered = next(
                (c for c in self.guild_commands(guild_id) if c["name"] == name and c.get("type", 1) == ctype), None
            )
            scope_guild = registered is not None
        if registered is None:
            registered = next((c for c in self.global_commands if c["name"] == name and c.get("type", 1) == ctype), None)
        if guild_command is not None:
            scope_guild = guild_command and in_guild
        data: dict[str, Any] = {"id": registered["id"] if registered else str(self._snowflake()), "name": name, "type": ctype}
        if scope_guild:
            data["guild_id"] = str(guild_id)
        data["_registered"] = registered
        return data

    def _option(
        self,
        name: str,
        value: Any,
        spec: dict[str, Any] | None,
        resolved: dict[str, dict],
        is_guild: bool,
        *,
        user_id: int | None = None,
        channel_id: int | None = None,
    ) -> dict[str, Any]:
        """One option of ``data.options``, in Discord's shape: users, members, roles, channels and attachments
        go in ``resolved`` by id (the option's value is the id as a string), as discord.py's Namespace reads them.
        ``user_id``/``channel_id``: who runs the command where (the guild, and the resolved channels' and members'
        ``permissions``)."""
        guild_id = (self.guild_of(channel_id) if channel_id is not None else None) or GUILD_ID
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
            members = self.guild_members(guild_id)
            if is_guild and uid in members:
                m = self.member_payload(uid, with_user=False, guild_id=guild_id)
                m["permissions"] = str(self.permissions(uid, channel_id) if channel_id is not None else self.permissions(uid))
                resolved.setdefault("members", {})[str(uid)] = m
            value = str(uid)
        elif otype in (8, 9):
            rid = int(value)
            resolved.setdefault("roles", {})[str(rid)] = self.guild_roles(self._role_guild(rid))[rid]
            value = str(rid)
        elif otype == 7:
            cid = int(value)
            c = self.channels[cid]
            # Discord: a partial channel, with the invoking member's permissions in it (overwrites included)
            resolved.setdefault("channels", {})[str(cid)] = {
                **{k: c[k] for k in _PARTIAL_CHANNEL_KEYS if k in c},
                "permissions": str(self.permissions(BOT_ID if user_id is None else user_id, cid)),
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
        locale: str = "en-US",
    ) -> FakeInteraction:
        """A user runs ``/name`` -> INTERACTION_CREATE (type 2, chat input); returns the interaction once sent.
        ``locale``: the user's Discord language ("fr", "pt-BR"), the interaction's ``locale``.

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
            sub_options: list[dict[str, Any]] = []
            container.append({"name": sub, "type": sub_type, "options": sub_options})
            container = sub_options
            spec_options = spec.get("options", []) if spec else []
        for opt_name, value in values.items():
            spec = next((o for o in spec_options if o["name"] == opt_name), None)
            container.append(self._option(opt_name, value, spec, resolved, is_guild, user_id=user_id, channel_id=channel_id))
        if resolved:
            data["resolved"] = resolved
        it = self._interaction_base(user_id, channel_id, 2, data, 1, locale)
        await self._delivered(self._dispatch("INTERACTION_CREATE", it.payload), timeout)
        return it

    async def message_context_menu(
        self, user_id: int, channel_id: int, name: str, target_message_id: int, *, guild_command: bool | None = None, timeout: float = 10.0,
        locale: str = "en-US",
    ) -> FakeInteraction:
        """A user runs the message command ``name`` on a stored message -> INTERACTION_CREATE (data.type 3)."""
        target = self.messages.get(int(target_message_id))
        if target is None:
            raise KeyError(f"no stored message {target_message_id}")
        data = self._command_data(name, 3, channel_id, guild_command)
        data.pop("_registered")
        resolved_msg = {k: v for k, v in target.items() if k not in ("member", "referenced_message")}
        data.update(target_id=str(target_message_id), resolved={"messages": {str(target_message_id): resolved_msg}})
        it = self._interaction_base(user_id, channel_id, 2, data, 3, locale)
        await self._delivered(self._dispatch("INTERACTION_CREATE", it.payload), timeout)
        return it

    async def user_context_menu(
        self, user_id: int, channel_id: int, name: str, target_user_id: int, *, guild_command: bool | None = None, timeout: float = 10.0
    ) -> FakeInteraction:
        """A user runs the user command ``name`` on ``target_user_id`` -> INTERACTION_CREATE (data.type 2)."""
        data = self._command_data(name, 2, channel_id, guild_command)
        data.pop("_registered")
        resolved: dict[str, dict] = {}
        self._option("target", target_user_id, {"type": 6}, resolved, not self._is_dm(channel_id), user_id=user_id, channel_id=channel_id)
        data.update(target_id=str(target_user_id), resolved=resolved)
        it = self._interaction_base(user_id, channel_id, 2, data, 2)
        await self._delivered(self._dispatch("INTERACTION_CREATE", it.payload), timeout)
        return it
