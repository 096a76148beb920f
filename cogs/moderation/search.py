"""/find and /forget: the kept captions of watched images, for moderators.

(No ``from __future__ import annotations``: discord.py reads the option types
from the annotations.)
"""

import logging
import time
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.i18n import N_
from bot.jobs.delivery import NO_MENTIONS
from bot.moderation.alerts import may_moderate
from bot.moderation.captions import CaptionRow, match_expression
from bot.reply import DISCORD_LIMIT, friendly

if TYPE_CHECKING:
    from bot.client import LlavaBot

log = logging.getLogger(__name__)

FIND_ONLY_MODERATORS = N_("only moderators can search captions")
FORGET_ONLY_MODERATORS = N_("only moderators can forget another member's images")
NOT_KEPT = N_("captions are not kept on this bot (no watched channel, or moderation.keep_days is 0)")
NO_WORDS = N_("give at least one word to look for")
RESULTS = 10


def result_line(n: int, row: CaptionRow) -> str:
    caption = " ".join(row.caption.split())
    if len(caption) > 160:
        caption = caption[:159].rstrip() + "…"
    rules = f" · 🚩 {', '.join(row.rules)}" if row.rules else ""
    return f"{n}. <t:{int(row.created)}:d> <#{row.channel_id}> <@{row.poster_id}>{rules} — {caption} · [jump]({row.link})"


def results_text(query: str, rows: list[CaptionRow]) -> str:
    if not rows:
        return f"No kept caption matches “{query}”."
    lines = [f"**{len(rows)} best match(es) for “{query}”**"]
    for n, row in enumerate(rows, 1):
        line = result_line(n, row)
        if sum(len(x) + 1 for x in lines) + len(line) > DISCORD_LIMIT:
            break
        lines.append(line)
    return "\n".join(lines)


class Search(commands.Cog):
    """Search and forget kept captions."""

    def __init__(self, bot: "LlavaBot") -> None:
        self.bot = bot

    @app_commands.command(name="find", description="Search the captions of watched images (moderators)")
    @app_commands.describe(
        query="Words to look for in captions and rule names",
        days="Only images from the last N days",
        member="Only images this member posted",
    )
    @app_commands.guild_only()
    async def find(
        self,
        interaction: discord.Interaction,
        query: app_commands.Range[str, 1, 200],
        days: app_commands.Range[int, 1, 3650] | None = None,
        member: discord.User | None = None,
    ) -> None:
        """Search the kept captions of watched images; moderators only, answered privately."""
        watcher = self.bot.moderation
        if not may_moderate(watcher.mod_for(interaction.guild_id), interaction):
            await interaction.response.send_message(friendly(FIND_ONLY_MODERATORS), ephemeral=True)
            return
        if not watcher.store.enabled or watcher.mod.keep_days <= 0:
            await interaction.response.send_message(friendly(NOT_KEPT), ephemeral=True)
            return
        if match_expression(query) is None:
            await interaction.response.send_message(friendly(NO_WORDS), ephemeral=True)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        since = time.time() - days * 86400 if days else None
        rows = await watcher.store.search(
            query, since=since, poster_id=member.id if member else None, limit=RESULTS, guild_id=interaction.guild_id
        )
        await interaction.followup.send(results_text(query, rows), ephemeral=True, allowed_mentions=NO_MENTIONS)

    @app_commands.command(name="forget", description="Remove the kept captions and remembered images of a member's posts")
    @app_commands.describe(member="Whose images to forget (moderators: anyone; everyone else: themselves)")
    @app_commands.guild_only()
    async def forget(self, interaction: discord.Interaction, member: discord.User) -> None:
        """In this server: remove every kept caption of a member's images and what the decision
        memory holds of them (moderators, or members about themselves)."""
        watcher = self.bot.moderation
        if member.id != interaction.user.id and not may_moderate(watcher.mod_for(interaction.guild_id), interaction):
            await interaction.response.send_message(friendly(FORGET_ONLY_MODERATORS), ephemeral=True)
            return
        assert interaction.guild_id is not None  # guild_only
        captions, images = await watcher.forget_member(interaction.guild_id, member.id)
        log.info("user %s had user %s forgotten: %d caption(s), %d remembered image(s)", interaction.user.id, member.id, captions, images)
        await interaction.response.send_message(
            f"Forgot {captions} kept caption(s) and {images} remembered image(s) of <@{member.id}>'s posts in this server.",
            ephemeral=True, allowed_mentions=NO_MENTIONS,
        )
