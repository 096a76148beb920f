"""What every way of asking shares (not an extension: it has no ``setup``).

``answer_job`` is the one path from a :class:`JobSpec` (an image and a
question, and where the answer goes) to exactly one reply: journal the job,
download and prepare the image, queue it, show its place in line, wait for
the model, and deliver the answer (or one short refusal or error line)
through a :class:`Replier`.  A ``JobSpec`` is plain data, so the same job can
be replayed from the journal after a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import discord

from bot.engine.base import Answer, EngineError
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


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One accepted question, as plain data (it goes into the journal).

    ``kind`` says where the answer goes: ``message`` (a reply to
    ``message_id`` in ``channel_id``), ``interaction`` (the follow-up of a
    deferred interaction, by ``application_id`` and ``token``) or
    ``channel`` (a new message in ``channel_id`` starting with ``head``).
    """

    kind: str
    channel_id: int
    source: ImageSource
    question: str | None
    user_id: int | None
    message_id: int | None = None
    application_id: int | None = None
    token: str | None = None
    head: str = ""
    show_place: bool = True
    max_tokens: int | None = None
    history: tuple[tuple[str, str], ...] = ()
    label: str = ""
    note: str = ""
    created: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["history"] = [list(turn) for turn in self.history]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobSpec:
        data = dict(data)
        data["source"] = ImageSource(**data["source"])
        data["history"] = tuple(tuple(turn) for turn in data.get("history", ()))
        return cls(**data)


def _looks_like_image(attachment: discord.Attachment) -> bool:
    # The declared type only decides what is worth downloading; the bytes are
    # checked by content afterwards.  No declared type: download and look.
    kind = (attachment.content_type or "").split(";")[0].strip().lower()
    return not kind or kind.startswith("image/")


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

    def __init__(self, message: discord.Message | discord.PartialMessage, *, show_place: bool = True) -> None:
        self.message = message
        self.show_place = show_place
        self._note: discord.Message | None = None

    async def _reply(self, text: str) -> discord.Message:
        # fail_if_not_exists=False: if the question was deleted meanwhile,
        # Discord posts the answer without the reference instead of failing.
        reference = self.message.to_reference(fail_if_not_exists=False)
        return await self.message.channel.send(
            text, reference=reference, mention_author=False, allowed_mentions=NO_MENTIONS
        )

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


class WebhookReplier:
    """Follows up a deferred interaction through its webhook (``interaction.followup``)."""

    def __init__(self, webhook: discord.Webhook) -> None:
        self.webhook = webhook
        self._edited = False

    async def placeholder(self, text: str) -> None:
        await self.webhook.edit_message("@original", content=text, allowed_mentions=NO_MENTIONS)  # type: ignore[arg-type]
        self._edited = True

    async def deliver(self, parts: list[str]) -> None:
        first, rest = parts[0], parts[1:]
        if self._edited:
            await self.webhook.edit_message("@original", content=first, allowed_mentions=NO_MENTIONS)  # type: ignore[arg-type]
        else:
            await self.webhook.send(first, allowed_mentions=NO_MENTIONS)
        for part in rest:
            await self.webhook.send(part, allowed_mentions=NO_MENTIONS)


class ChannelReplier:
    """Posts the answer as new messages in a channel, the first starting with ``head``
    (moderation log captions; answers to interactions too old to follow up)."""

    def __init__(self, channel: discord.abc.Messageable, head: str) -> None:
        self.channel = channel
        self.head = head

    async def placeholder(self, text: str) -> None:
        return None  # only results go here

    async def deliver(self, parts: list[str]) -> None:
        if self.head:
            parts = [f"{self.head}\n{parts[0]}", *parts[1:]]
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


class Undeliverable(Exception):
    """There is nowhere to post this job's answer."""


#: interaction tokens live 15 minutes; leave a margin for the answer itself
INTERACTION_TOKEN_LIFE_S = 14 * 60


async def replier_for(bot: LlavaBot, spec: JobSpec) -> tuple[Replier, discord.abc.Messageable | None]:
    """The replier for a job, and the channel to show "typing…" in (if any)."""
    if spec.kind == "interaction" and time.time() - spec.created < INTERACTION_TOKEN_LIFE_S:
        assert spec.application_id is not None and spec.token is not None
        webhook = discord.Webhook.partial(spec.application_id, spec.token, client=bot)
        return WebhookReplier(webhook), None
    channel = bot.get_channel(spec.channel_id) or await bot.fetch_channel(spec.channel_id)
    if not isinstance(channel, discord.abc.Messageable):
        raise Undeliverable(f"channel {spec.channel_id} is not a text channel")
    if spec.kind == "message" and spec.message_id is not None:
        message = channel.get_partial_message(spec.message_id)  # type: ignore[union-attr]
        return MessageReplier(message, show_place=spec.show_place), channel
    head = spec.head
    if spec.kind == "interaction":  # its token expired: answer in the channel instead
        who = f"<@{spec.user_id}>" if spec.user_id else "someone"
        head = f"Answer to {who}'s question ({spec.source.filename}), sorry for the delay:"
    return ChannelReplier(channel, head), None


async def answer_job(bot: LlavaBot, spec: JobSpec, *, journal_id: int | None = None) -> bool:
    """Answer one image question with exactly one reply.  True if it was answered.

    The job is journaled (unless it is being replayed from the journal with
    ``journal_id``) and leaves the journal only once its reply was sent or
    can never be.
    """
    if journal_id is None:
        journal_id = await bot.journal.add(spec.to_json())
    started = time.perf_counter()
    answer: Answer | None = None
    with bot.track_job():
        try:
            replier, typing_channel = await replier_for(bot, spec)
        except (discord.HTTPException, Undeliverable) as exc:
            log.warning("cannot answer job for user %s in channel %s, dropped: %s", spec.user_id, spec.channel_id, exc)
            outcome = "undeliverable"
        else:
            parts, outcome, answer = await _run_job(bot, spec, replier, typing_channel)
            if not await deliver_safely(replier, parts):
                outcome = "undeliverable"
    await bot.journal.remove(journal_id)
    _log_job(bot, spec, outcome, answer, time.perf_counter() - started)
    return outcome == "answered"


async def refuse_message(bot: LlavaBot, message: discord.Message, reason: str) -> None:
    """Refuse a question before it becomes a job: one line to the asker, one log line."""
    started = time.perf_counter()
    delivered = await deliver_safely(MessageReplier(message), [friendly(reason)])
    log_job(bot, "message", message.author.id, message.channel.id, "refused" if delivered else "undeliverable", None, time.perf_counter() - started)


def _log_job(bot: LlavaBot, spec: JobSpec, outcome: str, answer: Answer | None, seconds: float) -> None:
    log_job(bot, spec.kind, spec.user_id, spec.channel_id, outcome, answer, seconds)


def log_job(
    bot: LlavaBot, kind: str, user_id: int | None, channel_id: int | None, outcome: str, answer: Answer | None, seconds: float
) -> None:
    """One line per question: who, where, how it ended, timings. Never the content."""
    bot.outcomes[outcome] += 1
    job: dict[str, Any] = {
        "kind": kind,
        "user": user_id,
        "channel": channel_id,
        "outcome": outcome,
        "seconds": round(seconds, 3),
    }
    if answer is not None:
        t = answer.timings
        job.update(
            queue_s=round(t.queue_wait_s, 3),
            image_s=round(t.image_encode_s, 3),
            prompt_s=round(t.prompt_eval_s, 3),
            generation_s=round(t.generation_s, 3),
            tokens=t.completion_tokens,
            tokens_per_s=round(t.tokens_per_s, 1),
        )
    log.info("job %s", " ".join(f"{k}={v}" for k, v in job.items()), extra={"job": job})


async def _run_job(
    bot: LlavaBot, spec: JobSpec, replier: Replier, typing_channel: discord.abc.Messageable | None
) -> tuple[list[str], str, Answer | None]:
    """The reply for a job: (message parts, outcome, the answer if there is one)."""
    prefix = f"{spec.label}\n" if spec.label else ""
    try:
        try:
            prepared = await load_image(bot, spec.source)
            request = bot.runtime.request(
                [prepared], spec.question, max_tokens=spec.max_tokens, history=spec.history
            )
            handle = bot.runtime.submit(request, spec.user_id)
        except (ImageError, Refused) as exc:
            log.debug("refused a job from user %s: %s", spec.user_id, exc)
            return [prefix + friendly(str(exc))], "refused", None
        if handle.position > 0:
            try:
                await replier.placeholder(f"{BUSY_MARK} #{handle.position} in line")
            except discord.HTTPException as exc:
                log.info("could not post the place in line: %s", exc)
        try:
            async with typing_in(typing_channel):
                answer = await handle.result()
        except (QueueClosed, JobCancelled, EngineError) as exc:
            log.warning("job for user %s ended without an answer: %s", spec.user_id, exc)
            return [prefix + friendly(str(exc))], "failed", None
        return render_parts(answer, header=spec.label, note=spec.note), "answered", answer
    except Exception:
        log.exception("unexpected failure answering user %s", spec.user_id)
        return [prefix + friendly("something went wrong on my side, sorry; please try again")], "failed", None


async def deliver_safely(replier: Replier, parts: list[str]) -> bool:
    """Deliver, or log why it cannot be done; never raises for Discord errors.

    Rate limits (429) and server errors (5xx) are retried with back-off by
    discord.py itself; what reaches us here is final.  True if delivered.
    """
    try:
        await replier.deliver(parts)
        return True
    except discord.Forbidden as exc:
        log.warning("no permission to reply there, job closed: %s", exc)
    except discord.NotFound as exc:
        log.warning("the channel or interaction is gone, answer dropped: %s", exc)
    except discord.HTTPException as exc:
        log.error("could not deliver a reply, job closed: %s", exc)
    return False
