"""What every way of asking shares (not an extension: it has no ``setup``).

``answer_job`` is the one path from images + a question to exactly one reply:
download and prepare the images, queue the job, show its place in line, wait
for the model, and deliver the answer (or one short refusal or error line)
through a :class:`Replier`, which knows whether it talks to a message, an
interaction or a log channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import discord

from bot.engine.base import EngineError
from bot.images import ImageError, check_declared_size
from bot.queue import JobCancelled, QueueClosed, Refused
from bot.reply import render_parts

if TYPE_CHECKING:
    from bot.client import LlavaBot

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()
BUSY_MARK = "⏳"
WARN = "⚠️"


def friendly(reason: str) -> str:
    """One short line for the user: capitalised, ending in a full stop."""
    reason = reason.strip()
    if not reason:
        reason = "something went wrong"
    reason = reason[0].upper() + reason[1:]
    if reason[-1] not in ".!?)":
        reason += "."
    return f"{WARN} {reason}"


# -- images in messages ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImageSource:
    """An attachment to answer about (not downloaded yet)."""

    url: str
    filename: str
    size: int | None
    content_type: str | None

    @classmethod
    def of(cls, attachment: discord.Attachment) -> ImageSource:
        return cls(attachment.url, attachment.filename, attachment.size, attachment.content_type)


def _looks_like_image(attachment: discord.Attachment) -> bool:
    # The declared type only decides what is worth downloading; the bytes are
    # checked by content afterwards.  No declared type: download and look.
    kind = (attachment.content_type or "").split(";")[0].strip().lower()
    return not kind or kind.startswith("image/")


def attachments_of(message: discord.Message) -> list[discord.Attachment]:
    return list(message.attachments)


def split_attachments(
    attachments: Sequence[discord.Attachment],
) -> tuple[list[ImageSource], list[discord.Attachment]]:
    """(image candidates, attachments that are plainly not images)."""
    images = [ImageSource.of(a) for a in attachments if _looks_like_image(a)]
    others = [a for a in attachments if not _looks_like_image(a)]
    return images, others


def question_text(bot: LlavaBot, message: discord.Message) -> str:
    """The message text without the mention of the bot."""
    text = message.content or ""
    if bot.user is not None:
        text = re.sub(rf"<@!?{bot.user.id}>", "", text)
    return text.strip()


def is_reply_to_bot(bot: LlavaBot, message: discord.Message) -> bool:
    ref = message.reference
    resolved = ref.resolved if ref is not None else None
    return isinstance(resolved, discord.Message) and bot.user is not None and resolved.author.id == bot.user.id


def is_addressed_to_bot(bot: LlavaBot, message: discord.Message) -> bool:
    """A DM, a mention of the bot, or a reply to one of its answers."""
    if bot.user is None:
        return False
    if message.guild is None:
        return True
    return bot.user in message.mentions or is_reply_to_bot(bot, message)


# -- permissions ------------------------------------------------------------------


def refusal_for_place(bot: LlavaBot, channel: object, member: object) -> str | None:
    """Why the bot does not answer here (None: it does)."""
    cfg = bot.settings.discord
    if isinstance(channel, discord.DMChannel):
        return None if cfg.dm else "I don't answer in direct messages here"
    if cfg.allowed_channels:
        ids = {getattr(channel, "id", None), getattr(channel, "parent_id", None)}
        if not ids & set(cfg.allowed_channels):
            return "I don't answer in this channel"
    if cfg.allowed_roles and isinstance(member, discord.Member):
        if not {r.id for r in member.roles} & set(cfg.allowed_roles):
            return "you need one of the allowed roles to ask me"
    return None


# -- delivering replies ---------------------------------------------------------------


class Replier(Protocol):
    async def placeholder(self, text: str) -> None:
        """Say at once that the job waits in line (later replaced by the answer)."""

    async def deliver(self, parts: list[str]) -> None:
        """Post the final reply: the answer parts, or one refusal or error line."""


class MessageReplier:
    """Replies to a message: one reply (the place-in-line note becomes the answer)."""

    def __init__(self, message: discord.Message, *, show_place: bool = True) -> None:
        self.message = message
        self.show_place = show_place
        self._note: discord.Message | None = None

    async def _reply(self, text: str) -> discord.Message | None:
        try:
            return await self.message.reply(text, mention_author=False, allowed_mentions=NO_MENTIONS)
        except discord.NotFound:
            # The question was deleted meanwhile: answer in the channel.
            log.info("message %s is gone; answering without a reference", self.message.id)
            return await self.message.channel.send(text, allowed_mentions=NO_MENTIONS)

    async def placeholder(self, text: str) -> None:
        if self.show_place and self._note is None:
            self._note = await self._reply(text)

    async def deliver(self, parts: list[str]) -> None:
        first, rest = parts[0], parts[1:]
        if self._note is not None:
            try:
                await self._note.edit(content=first, allowed_mentions=NO_MENTIONS)
            except discord.NotFound:
                await self._reply(first)
        else:
            await self._reply(first)
        for part in rest:
            await self._reply(part)


class InteractionReplier:
    """Follows up a deferred interaction (slash command or context menu)."""

    def __init__(self, interaction: discord.Interaction) -> None:
        self.interaction = interaction
        self._edited = False

    async def placeholder(self, text: str) -> None:
        await self.interaction.edit_original_response(content=text, allowed_mentions=NO_MENTIONS)
        self._edited = True

    async def deliver(self, parts: list[str]) -> None:
        first, rest = parts[0], parts[1:]
        if self._edited:
            await self.interaction.edit_original_response(content=first, allowed_mentions=NO_MENTIONS)
        else:
            await self.interaction.followup.send(first, allowed_mentions=NO_MENTIONS)
        for part in rest:
            await self.interaction.followup.send(part, allowed_mentions=NO_MENTIONS)


class LogChannelReplier:
    """Posts a caption in the moderation log channel with a link to the image."""

    def __init__(self, channel: discord.abc.Messageable, original: discord.Message, label: str) -> None:
        self.channel = channel
        self.original = original
        self.label = label

    async def placeholder(self, text: str) -> None:
        return None  # the log channel only gets results

    async def deliver(self, parts: list[str]) -> None:
        head = f"🖼️ {self.label} from {self.original.author.display_name} in {self.original.jump_url}"
        parts = [f"{head}\n{parts[0]}", *parts[1:]]
        for part in parts:
            if len(part) > 2000:
                part = part[:1999] + "…"
            await self.channel.send(part, allowed_mentions=NO_MENTIONS)


@contextlib.asynccontextmanager
async def typing_in(channel: discord.abc.Messageable | None) -> AsyncIterator[None]:
    """Show "typing…" while the job runs; a failure to do so is never fatal."""

    async def keep_typing() -> None:
        assert channel is not None
        while True:
            try:
                await channel.typing()
            except discord.HTTPException as exc:
                log.debug("typing indicator failed: %s", exc)
                return
            await asyncio.sleep(8)

    task = asyncio.create_task(keep_typing()) if channel is not None else None
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


# -- the one path ------------------------------------------------------------------------


async def load_image(bot: LlavaBot, source: ImageSource):
    """Declared size first (never download an oversized file), then fetch, then prepare."""
    from bot.fetch import fetch_bytes

    limits = bot.runtime.limits
    check_declared_size(source.size, limits)
    data = await fetch_bytes(
        bot.session,
        source.url,
        allowed_hosts=bot.settings.images.allowed_hosts,
        limits=limits,
        timeout_s=bot.settings.images.download_timeout_s,
    )
    return await bot.runtime.prepare(data)


async def answer_job(
    bot: LlavaBot,
    replier: Replier,
    source: ImageSource,
    question: str | None,
    *,
    user_id: int | None,
    max_tokens: int | None = None,
    history: Sequence[tuple[str, str]] = (),
    typing_channel: discord.abc.Messageable | None = None,
    note: str = "",
    label: str = "",
) -> bool:
    """Answer one image question with exactly one reply.  True if answered."""
    prefix = f"{label}\n" if label else ""
    parts: list[str]
    answered = False
    try:
        try:
            prepared = await load_image(bot, source)
            request = bot.runtime.request([prepared], question, max_tokens=max_tokens, history=history)
            handle = bot.runtime.submit(request, user_id)
        except (ImageError, Refused) as exc:
            log.info("refused %s from user %s: %s", source.filename, user_id, exc)
            parts = [prefix + friendly(str(exc))]
        else:
            if handle.position > 0:
                await replier.placeholder(f"{BUSY_MARK} #{handle.position} in line")
            try:
                async with typing_in(typing_channel):
                    answer = await handle.result()
            except (QueueClosed, JobCancelled) as exc:
                parts = [prefix + friendly(str(exc))]
            except EngineError as exc:
                log.warning("job for user %s failed: %s", user_id, exc)
                parts = [prefix + friendly(str(exc))]
            else:
                parts = render_parts(answer, header=label, note=note)
                answered = True
    except Exception:
        log.exception("unexpected failure answering user %s", user_id)
        parts = [prefix + friendly("something went wrong on my side, sorry; please try again")]
    await deliver_safely(replier, parts)
    return answered


async def deliver_safely(replier: Replier, parts: list[str]) -> None:
    try:
        await replier.deliver(parts)
    except discord.Forbidden as exc:
        log.warning("no permission to reply: %s", exc)
    except discord.HTTPException as exc:
        log.error("could not deliver a reply: %s", exc)
