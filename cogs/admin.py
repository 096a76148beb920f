"""/status for everyone; command sync for the owner and admins."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.jobs.delivery import NO_MENTIONS

if TYPE_CHECKING:
    from bot.client import LlavaBot


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s"


def _secs(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} s"


def status_text(bot: LlavaBot, *, show_urls: bool = False) -> str:
    """The status for anyone; engine URLs (servers, ports) only with ``show_urls`` (admins)."""
    stats = bot.runtime.queue.stats()
    engines = []
    for engine in bot.runtime.engines:
        info = engine.info
        down = " · **down**" if info.name in bot.runtime.queue.down else ""
        url = getattr(info, "url", "")
        where = f" · <{url}>" if show_urls and url else ""
        template = getattr(info, "template", "") or info.chat_format
        engines.append(
            f"engine `{info.name}`{where}: model `{info.model}` · chat template: {template} · "
            f"text model on: {info.text_backend} · CLIP on: {info.clip_backend}{down}"
        )
    return "\n".join(
        [
            "**llava-bot status**",
            *engines,
            f"queue: {stats.depth} waiting · {stats.busy} running · {stats.served} served · "
            f"{stats.failed} failed · {stats.refused} refused",
            f"latency (last {len(bot.runtime.queue.latencies)}): p50 {_secs(stats.p50_s)} · p95 {_secs(stats.p95_s)}",
            f"uptime: {_duration(time.monotonic() - bot.started_at)}",
        ]
    )


class Admin(commands.Cog):
    """Status and administration."""

    def __init__(self, bot: LlavaBot) -> None:
        self.bot = bot

    @app_commands.command(name="status", description="Model, queue and latency of this bot")
    async def status(self, interaction: discord.Interaction) -> None:
        """Show the model, where it runs, the queue and recent latency."""
        if await self.bot.is_admin(interaction.user):  # with the engines' URLs: for the admin's eyes only
            await interaction.response.send_message(status_text(self.bot, show_urls=True), ephemeral=True, allowed_mentions=NO_MENTIONS)
            return
        await interaction.response.send_message(status_text(self.bot), allowed_mentions=NO_MENTIONS)

    async def cog_check(self, ctx: commands.Context[Any]) -> bool:  # text commands below
        return await self.bot.is_admin(ctx.author)

    @commands.command(name="sync")
    async def sync(self, ctx: commands.Context[LlavaBot]) -> None:
        """Register the slash commands with Discord (owner and admins only): `@bot sync`."""
        synced = await self.bot.tree.sync()
        await ctx.reply(f"Synced {len(synced)} application commands.", mention_author=False)


async def setup(bot: LlavaBot) -> None:
    await bot.add_cog(Admin(bot))
