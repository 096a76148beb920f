"""Automatic captions (alt text) for every image posted in chosen channels.

Captions run in the queue's caption lane: a free engine takes questions
first, at most ``queue.caption_max_size`` captions wait, and a caption that
cannot be made is logged, never answered in the channel.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot.jobs import ImageSource, JobSpec
from cogs.reading import addressed_to, split_attachments

if TYPE_CHECKING:
    from bot.client import LlavaBot

log = logging.getLogger(__name__)


class Moderation(commands.Cog):
    """Captions images in ``moderation.caption_channels``."""

    def __init__(self, bot: LlavaBot) -> None:
        self.bot = bot

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        mod = self.bot.settings.moderation
        if message.author.bot or message.guild is None or message.channel.id not in mod.caption_channels:
            return
        if addressed_to(message, self.bot.user):
            return  # a question: the Ask cog answers it
        sources, _ = split_attachments(message.attachments)
        if sources:
            await self.bot.jobs.answer([self._spec(message, s) for s in sources[: self.bot.settings.discord.max_images]])

    def _spec(self, message: discord.Message, source: ImageSource) -> JobSpec:
        mod = self.bot.settings.moderation
        common = dict(
            source=source,
            question=mod.caption_prompt,
            user_id=None,  # captions are not the poster's questions: the caption lane limits them
            max_tokens=mod.caption_max_tokens,
            lane="caption",
        )
        if mod.log_channel is not None:
            head = f"🖼️ Caption for {source.filename} from {message.author.display_name} in {message.jump_url}"
            return JobSpec(kind="channel", channel_id=mod.log_channel, head=head, **common)  # type: ignore[arg-type]
        return JobSpec(kind="message", channel_id=message.channel.id, message_id=message.id, show_place=False, **common)  # type: ignore[arg-type]


async def setup(bot: LlavaBot) -> None:
    await bot.add_cog(Moderation(bot))
