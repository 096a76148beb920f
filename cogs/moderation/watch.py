"""Images posted in watched channels: handed to the bot's watcher (captions, rules,
alt text, kept captions); deleted messages: their kept captions go."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot.moderation.checker import WatchedImage, WatchedPost
from cogs.policy import channel_ids
from cogs.reading import addressed_to, pictures_of

if TYPE_CHECKING:
    from bot.client import LlavaBot

log = logging.getLogger(__name__)


def watched_post(message: discord.Message, addressed: bool, *, cdn_url: str, media_url: str) -> WatchedPost:
    """A message's pictures as plain data: attachments (with whether each has alt text),
    embedded pictures, stickers, a forwarded message's (see :func:`pictures_of`)."""
    pictures = pictures_of(message, cdn_url=cdn_url, media_url=media_url)
    images = tuple(
        WatchedImage(p.url, p.filename, p.size, p.content_type, has_alt=alt) for p, alt in zip(pictures.found, pictures.has_alt)
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
        if message.author.bot or message.guild is None:
            return
        if not self.bot.moderation.watches(channel_ids(message.channel), message.guild.id):
            return
        await self._check(message)

    @commands.Cog.listener()
    async def on_message_edit(self, before: discord.Message, after: discord.Message) -> None:
        """Discord adds a link's embed in an edit after the message: check the pictures that
        came that way (the watcher checks a message once; an edit is a new chance only
        when the message had no picture before)."""
        if after.author.bot or after.guild is None or len(after.embeds) <= len(before.embeds):
            return
        if not self.bot.moderation.watches(channel_ids(after.channel), after.guild.id):
            return
        cfg = self.bot.settings.discord
        if pictures_of(before, cdn_url=cfg.cdn_url, media_url=cfg.media_url).found:
            return
        await self._check(after)

    async def _check(self, message: discord.Message) -> None:
        cfg = self.bot.settings.discord
        post = watched_post(message, addressed_to(message, self.bot.user), cdn_url=cfg.cdn_url, media_url=cfg.media_url)
        if post.images:
            await self.bot.moderation.handle(post)

    @commands.Cog.listener()
    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        await self.bot.moderation.forget_message(payload.message_id)

    @commands.Cog.listener()
    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        for message_id in payload.message_ids:
            await self.bot.moderation.forget_message(message_id)
