"""Questions in messages: mentions, replies to images, reply-chain follow-ups, DMs."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot.jobs.spec import JobSpec
from bot.reply import FIRST_IMAGES_ONLY, NO_IMAGE, NOT_AN_IMAGE, OUR_FAULT, answer_from_message
from cogs.policy import channel_ids, place_refusal
from cogs.reading import addressed_to, image_label, labelled, pick_image, question_text, roles_of, split_attachments

if TYPE_CHECKING:
    from bot.client import LlavaBot

log = logging.getLogger(__name__)


class Ask(commands.Cog):
    """Answers questions about images in messages."""

    def __init__(self, bot: LlavaBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.jobs.readmit = self.take

    async def cog_unload(self) -> None:
        if self.bot.jobs.readmit == self.take:
            self.bot.jobs.readmit = None

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

    async def context_for(self, message: discord.Message, depth: int) -> tuple[list[discord.Attachment], list[tuple[str, str]]]:
        """The images a message asks about, and the conversation before it.

        A message with images asks about them.  A reply to someone's image
        asks about that image.  A reply to one of our answers continues that
        conversation: walk back (at most ``depth`` answers) to the image; an
        answer about one of several images continues about that one (by its
        position: pasted images all have the same name).
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
        label = labelled(answer)
        if label is not None:
            position, answer = label
            attachments = pick_image(attachments, position)
        history.append((question_text(question.content, me.id), answer))
        return attachments, history

    async def _refusal(self, message: discord.Message) -> str | None:
        cfg = self.bot.settings.discord
        roles = await roles_of(self.bot, message.author, cfg.allowed_roles)
        return place_refusal(cfg, is_dm=message.guild is None, channel_ids=channel_ids(message.channel), role_ids=roles)

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot or not addressed_to(message, self.bot.user):
            return
        ctx = await self.bot.get_context(message)
        if ctx.valid:  # "@bot sync" and other text commands
            return
        # journaled before any request is made for it: a kill from here on loses nothing
        await self.take(message, await self.bot.jobs.seen(message))

    async def take(self, message: discord.Message, seen: int | None, replayed: bool = False) -> None:
        """Refuse or answer a question journaled as received (``seen``, its row);
        also what the replay calls for a message a killed process had received (``replayed``)."""
        jobs = self.bot.jobs
        try:
            refusal = await self._refusal(message)
            if refusal is not None:
                if message.guild is None and not self.bot.settings.discord.dm:
                    await jobs.forget(seen)
                    return  # DMs are off: stay silent
                await jobs.refuse_message(message, refusal, seen=seen)
                return
            specs = await self._specs(message)
        except Exception:
            log.exception("could not read the question of message %s", message.id)
            await jobs.refuse_message(message, OUR_FAULT, seen=seen)
            return
        if isinstance(specs, str):
            await jobs.refuse_message(message, specs, seen=seen)
            return
        await jobs.answer(specs, seen=seen, replayed=replayed)

    async def _specs(self, message: discord.Message) -> list[JobSpec] | str:
        """One job per image the message asks about (or why there is none)."""
        cfg = self.bot.settings.discord
        attachments, history = await self.context_for(message, cfg.reply_chain_depth)
        sources, others = split_attachments(attachments)
        if not sources:
            return NOT_AN_IMAGE if others else NO_IMAGE
        question = question_text(message.content, self.bot.user.id if self.bot.user else None)
        skipped = len(sources) - cfg.max_images
        sources = sources[: cfg.max_images]
        note = FIRST_IMAGES_ONLY.format(count=cfg.max_images) if skipped > 0 else ""
        many = len(sources) > 1
        return [
            JobSpec(
                kind="message",
                channel_id=message.channel.id,
                message_id=message.id,
                source=source,
                question=question,
                user_id=message.author.id,
                history=tuple(history),
                label=image_label(index, len(sources), source.filename) if many else "",
                note=note if index == len(sources) else "",
            )
            for index, source in enumerate(sources, 1)
        ]


async def setup(bot: LlavaBot) -> None:
    await bot.add_cog(Ask(bot))
