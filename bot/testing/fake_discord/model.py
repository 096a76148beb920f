"""The fake's model: users, guild members, roles, channels, permissions and snowflakes."""

from __future__ import annotations

import time
from collections.abc import Iterable
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
    """Part of :class:`FakeDiscord`: the one guild's users, members, roles and channels, and Discord's permission algorithm."""

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
                "joined_at": iso(),
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
