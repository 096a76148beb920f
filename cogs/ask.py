"""Questions in messages: mentions, replies to images, reply-chain follow-ups, DMs."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot.reply import answer_from_message
from cogs.common import (
    JobSpec,
    answer_job,
    is_addressed_to_bot,
    question_text,
    refusal_for_place,
    refuse_message,
    split_attachments,
)

if TYPE_CHECKING:
    from bot.client import LlavaBot

log = logging.getLogger(__name__)

#: the first line of an answer about one of several images: "**Image 2 of 3** (cat.png)"
IMAGE_LABEL = re.compile(r"\*\*Image \d+ of \d+\*\* \((.+?)\)\n?")

NO_IMAGE = "Attach an image (or reply to a message with one) and mention me with your question"


class Ask(commands.Cog):
    """Answers questions about images in messages."""

    def __init__(self, bot: LlavaBot) -> None:
        self.bot = bot

    async def _referenced(self, message: discord.Message) -> discord.Message | None:
        ref = message.reference
        if ref is None or ref.message_id is None:
            return None
        if isinstance(ref.resolved, discord.Message):
            return ref.resolved
        if isinstance(ref.resolved, discord.DeletedReferencedMessage):
            return None
        try:
            return await message.channel.fetch_message(ref.message_id)
        except discord.HTTPException:
            return None

    async def context_for(
        self, message: discord.Message, depth: int
    ) -> tuple[list[discord.Attachment], list[tuple[str, str]]]:
        """The images a message asks about, and the conversation before it.

        A message with images asks about them.  A reply to someone's image
        asks about that image.  A reply to one of our answers continues that
        conversation: walk back (at most ``depth`` answers) to the image.
        """
        if message.attachments:
            return list(message.attachments), []
        referenced = await self._referenced(message)
        if referenced is None or depth <= 0:
            return [], []
        me = self.bot.user
        if me is None or referenced.author.id != me.id:
            return list(referenced.attachments), []
        question = await self._referenced(referenced)
        if question is None:
            return [], []
        attachments, history = await self.context_for(question, depth - 1)
        answer = answer_from_message(referenced.content)
        label = IMAGE_LABEL.match(answer)
        if label:  # an answer about one of several images: follow up on that one
            answer = answer[label.end() :].strip()
            attachments = [a for a in attachments if a.filename == label.group(1)] or attachments
        history.append((question_text(self.bot, question), answer))
        return attachments, history

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot or not is_addressed_to_bot(self.bot, message):
            return
        ctx = await self.bot.get_context(message)
        if ctx.valid:  # "@bot sync" and other text commands
            return
        refusal = refusal_for_place(self.bot, message.channel, message.author)
        if refusal is not None:
            if message.guild is None and not self.bot.settings.discord.dm:
                return  # DMs are off: stay silent
            await refuse_message(self.bot, message, refusal)
            return
        cfg = self.bot.settings.discord
        attachments, history = await self.context_for(message, cfg.reply_chain_depth)
        sources, others = split_attachments(attachments)
        if not sources:
            await refuse_message(self.bot, message, "that file is not an image" if others else NO_IMAGE)
            return
        question = question_text(self.bot, message)
        skipped = len(sources) - cfg.max_images
        sources = sources[: cfg.max_images]
        note = f"only the first {cfg.max_images} images are answered" if skipped > 0 else ""
        many = len(sources) > 1
        for index, source in enumerate(sources, 1):
            spec = JobSpec(
                kind="message",
                channel_id=message.channel.id,
                message_id=message.id,
                source=source,
                question=question,
                user_id=message.author.id,
                history=tuple(history),
                label=f"**Image {index} of {len(sources)}** ({source.filename})" if many else "",  # see IMAGE_LABEL
                note=note if index == len(sources) else "",
            )
            await answer_job(self.bot, spec)


async def setup(bot: LlavaBot) -> None:
    await bot.add_cog(Ask(bot))
