"""The fake's model: users, guild members, roles, channels, permissions and snowflakes."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from bot.testing.fake_discord.ids import (
    ALICE_ID,
    BOB_ID,
    BOT_ID,
    BOT_ROLE_ID,
    CAPTIONS_ID,
    DISCORD_EPOCH_MS,
    DM_CHANNEL_ID,
    EVERYONE_ROLE_ID,
    GENERAL_ID,
    GUILD_ID,
    MOD_LOG_ID,
    MOD_ROLE_ID,
    OTHER_BOT_ID,
    OWNER_ID,
    Perm,
    iso,
)
from bot.testing.fake_discord.state import FakeState


class ModelMixin(FakeState):
    """Part of :class:`FakeDiscord`: the guilds' users, members, roles and channels, and Discord's permission algorithm."""

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
        self.guild = self._guild_dict(GUILD_ID, "Test guild", OWNER_ID, GENERAL_ID)

    @staticmethod
    def _guild_dict(guild_id: int, name: str, owner_id: int, system_channel_id: int | None) -> dict[str, Any]:
        return {
            "id": str(guild_id),
            "name": name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(owner_id),
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
            "system_channel_id": None if system_channel_id is None else str(system_channel_id),
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "vanity_url_code": None,
            "application_id": None,
            "max_members": 500000,
        }

    # ------------------------------------------------------------------ more guilds

    def add_guild(
        self,
        guild_id: int,
        name: str,
        *,
        channels: Mapping[int, str] | Iterable[int] = (),
        members: Mapping[int, Iterable[int]] | Iterable[int] = (),
        owner_id: int = OWNER_ID,
    ) -> dict[str, Any]:
        """Put the bot in another guild (call before the bot connects: READY lists it, GUILD_CREATE follows).

        ``channels``: its text channels, ``{id: name}`` (or ids, named ``channel-<id>``); ``members``: user ids
        (added with :meth:`add_user` first, e.g. ``member=False`` to keep them out of the first guild), or
        ``{user id: role ids}``. The bot is always a member. Its @everyone role has the guild's id; more roles
        with ``add_role(..., guild_id=)``, given with ``give_role(user, role)``. Messages and interactions in its
        channels carry its ``guild_id``; ``guild_commands(guild_id)`` holds commands synced to it."""
        if guild_id == GUILD_ID or guild_id in self.other_guilds:
            raise ValueError(f"guild {guild_id} exists")
        chans = dict(channels) if isinstance(channels, Mapping) else {int(c): f"channel-{c}" for c in channels}
        mems = {int(k): list(v) for k, v in members.items()} if isinstance(members, Mapping) else {int(u): [] for u in members}
        mems.setdefault(BOT_ID, [])
        guild = self._guild_dict(guild_id, name, owner_id, next(iter(chans), None))
        roles = {guild_id: self._role(guild_id, "@everyone", Perm.EVERYONE_DEFAULT, 0)}
        self.other_guilds[guild_id] = {"guild": guild, "roles": roles, "members": {}}
        for uid, role_ids in mems.items():
            self.add_member(uid, guild_id, roles=role_ids)
        for position, (cid, cname) in enumerate(chans.items()):
            self.add_text_channel(cid, cname, position=position, guild_id=guild_id)
        return guild

    def add_member(self, user_id: int, guild_id: int = GUILD_ID, *, roles: Iterable[int] = ()) -> dict[str, Any]:
        """Make an existing user (:meth:`add_user`) a member of ``guild_id``."""
        if user_id not in self.users:
            raise KeyError(f"no user {user_id}: add_user() first")
        member = self._member_dict(roles)
        self._guild_parts(guild_id)[2][user_id] = member
        return member

    @property
    def guild_ids(self) -> list[int]:
        """The guilds the bot is in: GUILD_ID first."""
        return [GUILD_ID, *self.other_guilds]

    def guild_of(self, channel_id: int) -> int | None:
        """The guild a channel belongs to (None: a DM)."""
        gid = self.channels[int(channel_id)].get("guild_id")
        return None if gid is None else int(gid)

    def _guild_parts(self, guild_id: int) -> tuple[dict[str, Any], dict[int, dict[str, Any]], dict[int, dict[str, Any]]]:
        """A guild's payload, roles and members by id."""
        if guild_id == GUILD_ID:
            return self.guild, self.roles, self.members
        g = self.other_guilds[guild_id]
        return g["guild"], g["roles"], g["members"]

    def guild_roles(self, guild_id: int = GUILD_ID) -> dict[int, dict[str, Any]]:
        return self._guild_parts(guild_id)[1]

    def guild_members(self, guild_id: int = GUILD_ID) -> dict[int, dict[str, Any]]:
        return self._guild_parts(guild_id)[2]

    def _role_guild(self, role_id: int) -> int:
        """The guild a role belongs to."""
        for gid in self.guild_ids:
            if role_id in self._guild_parts(gid)[1]:
                return gid
        raise KeyError(f"no role {role_id}")

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
        """Add a user (and, by default, a member of the first guild, GUILD_ID). Call before the bot connects."""
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
            self.members[user_id] = self._member_dict(roles)
        return user

    @staticmethod
    def _member_dict(roles: Iterable[int]) -> dict[str, Any]:
        return {
            "roles": [str(r) for r in roles],
            "nick": None,
            "avatar": None,
            "banner": None,
            "joined_at": iso(),
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "communication_disabled_until": None,
        }

    def add_text_channel(
        self,
        channel_id: int,
        name: str,
        *,
        position: int = 0,
        overwrites: list[dict[str, Any]] | None = None,
        guild_id: int = GUILD_ID,
        **extra: Any,
    ) -> dict[str, Any]:
        """Add a guild text channel (of ``guild_id``: see :meth:`add_guild`). Call before the bot connects."""
        self._guild_parts(guild_id)  # KeyError: no such guild
        channel = {
            "id": str(channel_id),
            "type": 0,
            "guild_id": str(guild_id),
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

    def member_payload(self, user_id: int, *, with_user: bool = True, guild_id: int = GUILD_ID) -> dict[str, Any]:
        m = dict(self._guild_parts(guild_id)[2][user_id])
        if with_user:
            m["user"] = self.users[user_id]
        return m

    def permissions(self, user_id: int, channel_id: int | None = None, *, guild_id: int | None = None) -> int:
        """Effective permissions of ``user_id`` (in ``channel_id`` when given, else guild-wide in ``guild_id``,
        default GUILD_ID), Discord's algorithm: the owner and administrators have all."""
        if channel_id is not None:
            if self._is_dm(channel_id):
                return Perm.DM_DEFAULT
            channel_id = self._parent_of(channel_id)  # a thread has its parent's permissions
            guild_id = self.guild_of(channel_id)
        gid = GUILD_ID if guild_id is None else guild_id
        guild, roles, members = self._guild_parts(gid)
        if str(user_id) == guild["owner_id"]:
            return Perm.ALL
        member = members.get(user_id)
        role_ids = [int(r) for r in member["roles"]] if member else []
        perms = int(roles[gid]["permissions"])  # @everyone: the role's id is the guild's
        for rid in role_ids:
            perms |= int(roles[rid]["permissions"])
        if perms & Perm.ADMINISTRATOR:
            return Perm.ALL
        if channel_id is None:
            return perms
        ows = {(int(o["id"]), o["type"]): o for o in self.channels[channel_id].get("permission_overwrites", [])}
        ev = ows.get((gid, 0))
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
