"""Questions in messages: mentions, replies to images, reply-chain follow-ups, DMs, and the
asker's messages in a conversation thread the bot started (see :mod:`cogs.threads`)."""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import replace
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot.i18n import QUESTION_LANGUAGE, guild_locale
from bot.jobs.spec import JobSpec
from bot.media import MSG_NO_PICTURE
from bot.reply import FIRST_IMAGES_ONLY, NO_IMAGE, NOT_AN_IMAGE, OUR_FAULT, answer_from_message
from cogs.policy import channel_ids, place_refusal
from cogs.reading import (
    Pictures,
    addressed_to,
    image_label,
    labelled,
    pick_image,
    pictures_of,
    question_text,
    replies_to,
    roles_of,
)
from cogs.threads import Threads, thread_name

if TYPE_CHECKING:
    from bot.client import LlavaBot

log = logging.getLogger(__name__)

#: a link in a question: Discord adds its embed in an edit a moment later
LINK = re.compile(r"https?://\S+")
#: how long a question with a link but no embed yet waits for Discord's embed
LINK_EMBED_WAIT_S = 3.0


class Ask(commands.Cog):
    """Answers questions about images in messages."""

    def __init__(self, bot: LlavaBot) -> None:
        self.bot = bot
        #: the conversation threads the bot started
        self.threads = Threads(bot)

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

    def pictures(self, message: discord.Message) -> Pictures:
        cfg = self.bot.settings.discord
        return pictures_of(message, cdn_url=cfg.cdn_url, media_url=cfg.media_url)

    async def _with_link_embeds(self, message: discord.Message) -> Pictures:
        """The message's pictures; a message with a link but no embed yet waits a moment
        for Discord to add the link's embed (it comes in an edit after the message)."""
        found = self.pictures(message)
        if found.found or not LINK.search(message.content or ""):
            return found
        with contextlib.suppress(TimeoutError):
            await self.bot.wait_for(
                "message_edit", check=lambda _, after: after.id == message.id and bool(after.embeds), timeout=LINK_EMBED_WAIT_S
            )
        if not message.embeds:  # the cached message is updated in place; else ask Discord once
            with contextlib.suppress(discord.HTTPException):
                message = await message.channel.fetch_message(message.id)
        return self.pictures(message)

    async def context_for(self, message: discord.Message, depth: int) -> tuple[Pictures, list[tuple[str, str]]]:
        """The pictures a message asks about, and the conversation before it.

        A message with pictures (attachments, embeds, stickers, a forward) asks
        about them.  A reply to someone's message asks about its pictures.  A
        reply to one of our answers continues that conversation: walk back (at
        most ``depth`` answers) to the pictures; an answer about one of several
        continues about that one (by its position: pasted images all have the
        same name).
        """
        own = await self._with_link_embeds(message)
        if own.found or own.others or own.skipped:
            return own, []
        referenced = await self._referenced(message)
        if referenced is None or depth <= 0:
            return Pictures(), []
        me = self.bot.user
        if me is None or referenced.author.id != me.id:
            return self.pictures(referenced), []
        question = await self._referenced(referenced)
        if question is None:
            return Pictures(), []
        pictures, history = await self.context_for(question, depth - 1)
        answer = answer_from_message(referenced.content)
        label = labelled(answer)
        if label is not None:
            position, answer = label
            pictures.found = pick_image(pictures.found, position)
        history.append((question_text(question.content, me.id), answer))
        return pictures, history

    async def _context(self, message: discord.Message, depth: int) -> tuple[Pictures, list[list[tuple[str, str]]]]:
        """The pictures a message asks about and, for each, the conversation before it: in one of our
        threads, the thread's (see :mod:`cogs.threads`); elsewhere, its reply chain's."""
        thread = await self.threads.ours(message.channel)
        if thread is None:
            pictures, history = await self.context_for(message, depth)
            return pictures, [history for _ in pictures.found]
        own = await self._with_link_embeds(message)
        if own.found or own.others or own.skipped:
            return own, [[] for _ in own.found]  # a new picture in the thread: a new topic
        return await self.threads.conversation(message, thread, depth, self.pictures)

    async def _refusal(self, message: discord.Message) -> str | None:
        cfg = self.bot.settings.discord
        allowed = self.bot.moderation.allowed_roles(message.guild.id if message.guild else None)
        roles = await roles_of(self.bot, message.author, allowed)
        return place_refusal(
            cfg, is_dm=message.guild is None, channel_ids=channel_ids(message.channel), role_ids=roles, allowed_roles=allowed
        )

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot:
            return
        # a mention, a reply to the bot, a DM; or, with none of these, the asker in one of our threads
        if not addressed_to(message, self.bot.user) and not await self.threads.follows_up(message):
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
        await jobs.answer(await self._in_thread(message, specs), seen=seen, replayed=replayed)

    async def _in_thread(self, message: discord.Message, specs: list[JobSpec]) -> list[JobSpec]:
        """With ``discord.threads``, a mention starts a thread on the question and is answered there
        (where a thread cannot be started: in place).  A reply to one of our answers goes on in place."""
        me = self.bot.user
        if not self.bot.settings.discord.threads or me is None or message.guild is None:
            return specs
        if not any(u.id == me.id for u in message.mentions) or replies_to(message, me.id):
            return specs
        if not self.threads.can_start_in(message.channel, f"a mention from user {message.author.id}"):
            return specs
        first = specs[0]
        thread = await self.threads.start_on(message, thread_name(first.question or "", first.source.filename), message.author.id)
        if thread is None:
            return specs
        # the answer goes in the thread (the thread has the question's id: the reply is no reply there)
        return [replace(spec, channel_id=thread.id) for spec in specs]

    async def _specs(self, message: discord.Message) -> list[JobSpec] | str:
        """One job per image the message asks about (or why there is none)."""
        cfg = self.bot.settings.discord
        pictures, histories = await self._context(message, cfg.reply_chain_depth)
        sources = pictures.found
        if not sources:
            if pictures.skipped:
                return pictures.skipped[0]
            if any((getattr(o, "content_type", None) or "").startswith("audio/") for o in pictures.others):
                return MSG_NO_PICTURE  # a voice message, a sound file
            return NOT_AN_IMAGE if pictures.others else NO_IMAGE
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
                history=tuple(histories[index - 1]),
                label=image_label(index, len(sources), source.filename, guild_locale(message)) if many else "",
                note=note if index == len(sources) else "",
                locale=guild_locale(message),  # the server's language for the bot's lines; a DM: English
                answer_in=QUESTION_LANGUAGE,
            )
            for index, source in enumerate(sources, 1)
        ]


async def setup(bot: LlavaBot) -> None:
    await bot.add_cog(Ask(bot))
