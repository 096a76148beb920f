"""Automatic captions (alt text) for every image posted in chosen channels."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from cogs.common import LogChannelReplier, MessageReplier, Replier, answer_job, is_addressed_to_bot, split_attachments

if TYPE_CHECKING:
    from bot.client import LlavaBot

log = logging.getLogger(__name__)


class Moderation(commands.Cog):
    """Captions images in ``moderation.caption_channels``."""

    def __init__(self, bot: LlavaBot) -> None:
        self.bot = bot

    def _log_channel(self) -> discord.abc.Messageable | None:
        channel_id = self.bot.settings.moderation.log_channel
        if channel_id is None:
            return None
        channel = self.bot.get_channel(channel_id)
        if not isinstance(channel, discord.abc.Messageable):
            log.warning("moderation.log_channel %s is not a text channel I can see", channel_id)
            return None
        return channel

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
        log_channel = self._log_channel()
        for index, source in enumerate(sources[: self.bot.settings.discord.max_images], 1):
            replier: Replier
            if log_channel is not None:
                replier = LogChannelReplier(log_channel, message, f"Caption for {source.filename}")
            else:
                replier = MessageReplier(message, show_place=False)
            await answer_job(
                self.bot,
                replier,
                source,
                mod.caption_prompt,
                user_id=None,  # captions are not the poster's questions: no per-user limit
                max_tokens=mod.caption_max_tokens,
            )


async def setup(bot: LlavaBot) -> None:
    await bot.add_cog(Moderation(bot))
