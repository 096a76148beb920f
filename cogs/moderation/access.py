"""Who may change or read a server's settings, and how settings are shown.

Changing anything (``/settings channel|role|import``, ``/rule add|remove|trial``)
needs Manage Server in that server, or the operator's ``discord.admin_roles`` /
``admin_users``.  Reading (``/settings show|export``, ``/rule list|test``) is for
moderators too: the server's moderator roles, or Manage Messages.  The commands
declare Manage Messages as their default member permissions (so Discord shows
them to moderators, and a server can widen or narrow that in its Integrations
settings); the bot checks again itself on every use.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import discord

from bot.i18n import N_
from bot.moderation.alerts import may_moderate
from bot.reply import friendly

if TYPE_CHECKING:
    from bot.client import LlavaBot

MANAGERS_ONLY = N_("only members with Manage Server (or the bot's admins) can change my settings here")
MODERATORS_ONLY = N_("only moderators can see my settings and rules here")
NOT_HERE = "{what} is not in this server"

#: the default member permissions the /settings and /rule commands declare
DEFAULT_PERMISSIONS = discord.Permissions(manage_messages=True)


async def may_change(bot: LlavaBot, interaction: discord.Interaction) -> bool:
    if interaction.guild_id is None:
        return False
    if interaction.permissions.manage_guild:
        return True
    return await bot.is_admin(interaction.user)


async def may_read(bot: LlavaBot, interaction: discord.Interaction) -> bool:
    if interaction.guild_id is None:
        return False
    if may_moderate(bot.moderation.mod_for(interaction.guild_id), interaction):
        return True
    return await may_change(bot, interaction)


async def refuse(interaction: discord.Interaction, line: str) -> None:
    await interaction.response.send_message(friendly(line), ephemeral=True)


def channels_here(guild: discord.Guild | None, ids: Iterable[int]) -> list[int]:
    """The ids that are channels (or threads) of this server: a default from the file
    names another server's channels, which do nothing here."""
    if guild is None:
        return []
    return [c for c in ids if guild.get_channel_or_thread(c) is not None]


def roles_here(guild: discord.Guild | None, ids: Iterable[int]) -> list[int]:
    if guild is None:
        return []
    return [r for r in ids if guild.get_role(r) is not None]


def mentions(ids: Iterable[int], fmt: str, none: str = "none") -> str:
    text = ", ".join(fmt.format(i) for i in ids)
    return text or none
