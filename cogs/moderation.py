"""Automatic captions (alt text) for every image posted in chosen channels."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from cogs.common import JobSpec, answer_job, is_addressed_to_bot, split_attachments

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
        if is_addressed_to_bot(self.bot, message):
            return  # a question: the Ask cog answers it
        sources, _ = split_attachments(message.attachments)
        if not sources:
            return
        log_channel = mod.log_channel
        for source in sources[: self.bot.settings.discord.max_images]:
            common = dict(
                source=source,
                question=mod.caption_prompt,
                user_id=None,  # captions are not the poster's questions: no per-user limit
                max_tokens=mod.caption_max_tokens,
            )
            if log_channel is not None:
                head = f"🖼️ Caption for {source.filename} from {message.author.display_name} in {message.jump_url}"
                spec = JobSpec(kind="channel", channel_id=log_channel, head=head, **common)
            else:
                spec = JobSpec(kind="message", channel_id=message.channel.id, message_id=message.id, show_place=False, **common)
            await answer_job(self.bot, spec)


async def setup(bot: LlavaBot) -> None:
    await bot.add_cog(Moderation(bot))
