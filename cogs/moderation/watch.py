"""Images posted in watched channels: handed to the bot's watcher (captions, rules,
alt text, kept captions); deleted messages: their kept captions go."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot.moderation.checker import WatchedImage, WatchedPost
from cogs.policy import channel_ids
from cogs.reading import addressed_to, image_attachments

if TYPE_CHECKING:
    from bot.client import LlavaBot

log = logging.getLogger(__name__)


def watched_post(message: discord.Message, addressed: bool) -> WatchedPost:
    """A message's image attachments as plain data (with whether each has alt text)."""
    images = tuple(
        WatchedImage(a.url, a.filename, a.size, a.content_type, has_alt=bool((a.description or "").strip()))
        for a in image_attachments(message.attachments)
    )
    return WatchedPost(
        message_id=message.id,
        channel_id=message.channel.id,
        guild_id=message.guild.id if message.guild else None,
        poster_id=message.author.id,
        poster_name=message.author.display_name,
        jump_url=message.jump_url,
        images=images,
        parent_id=getattr(message.channel, "parent_id", None),
        addressed=addressed,
        created=message.created_at.timestamp(),
    )


class Moderation(commands.Cog):
    """Watches the images of ``moderation`` channels."""

    def __init__(self, bot: LlavaBot) -> None:
        self.bot = bot

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot or message.guild is None or not message.attachments:
            return
        if not self.bot.moderation.watches(channel_ids(message.channel)):
            return
        post = watched_post(message, addressed_to(message, self.bot.user))
        if post.images:
            await self.bot.moderation.handle(post)

    @commands.Cog.listener()
    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        await self.bot.moderation.forget_message(payload.message_id)

    @commands.Cog.listener()
    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        for message_id in payload.message_ids:
            await self.bot.moderation.forget_message(message_id)
