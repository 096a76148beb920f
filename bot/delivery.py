"""Where an answer goes, and getting it there: the repliers.

A :class:`Replier` shows a job's place in line at once and later posts the
final reply (the answer parts, or one refusal or error line).  Delivery is
resumable: parts already posted are not posted again when
:func:`deliver_safely` retries after a network error.  Every message allows no
mentions: model output can contain ``@everyone``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Protocol

import aiohttp
import discord

from bot.reply import DISCORD_LIMIT, late_head, split_text

if TYPE_CHECKING:
    from bot.jobs import JobSpec

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()

#: interaction tokens live 15 minutes; leave a margin for the answer itself
INTERACTION_TOKEN_LIFE_S = 14 * 60

#: errors below discord.py's HTTP layer (connection reset, DNS, timeouts): worth a retry
NETWORK_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError, OSError, asyncio.TimeoutError)


class Undeliverable(Exception):
    """There is nowhere to post this job's answer."""


class Replier(Protocol):
    async def placeholder(self, text: str) -> int | None:
        """Say at once that the job waits in line (later replaced by the answer).
        Returns the id of the message posted, if one was."""

    async def show(self, index: int, text: str) -> int | None:
        """Show ``text`` as part ``index`` of the reply while the answer streams in
        (part 0 replaces the note; later parts continue it).  Returns the message's id."""

    async def deliver(self, parts: list[str]) -> None:
        """Post the final reply: the answer parts, or one refusal or error line
        (the parts already shown are edited into it)."""


class _PartsReplier:
    """A reply made of messages, part 0 first: shown (created or edited) while the
    answer streams, then edited into the final parts.  Resumable: a retried
    ``deliver`` does not post again what it already finished."""

    def __init__(self) -> None:
        self._messages: list[object | None] = []
        self._final = 0

    async def _create(self, index: int, text: str) -> object: ...

    async def _edit(self, handle: object, index: int, text: str) -> None: ...

    async def _put(self, index: int, text: str, *, recreate: bool = True) -> object:
        handle = self._messages[index] if index < len(self._messages) else None
        if handle is not None:
            try:
                await self._edit(handle, index, text)
                return handle
            except discord.NotFound:
                if not recreate:
                    raise
                log.info("part %d of a reply was deleted; posting it again", index)
        handle = await self._create(index, text)
        while len(self._messages) <= index:
            self._messages.append(None)
        self._messages[index] = handle
        return handle

    async def show(self, index: int, text: str) -> int | None:
        # a deleted message is not posted again while streaming (NotFound): the final text is
        return getattr(await self._put(index, text, recreate=False), "id", None)

    async def deliver(self, parts: list[str]) -> None:
        while self._final < len(parts):
            await self._put(self._final, parts[self._final])
            self._final += 1


class MessageReplier(_PartsReplier):
    """Replies to a message: the place-in-line note becomes the answer's first part."""

    def __init__(
        self,
        message: discord.Message | discord.PartialMessage,
        *,
        show_place: bool = True,
        note_id: int | None = None,
    ) -> None:
        super().__init__()
        self.message = message
        self.show_place = show_place
        if note_id is not None:  # a replayed job: its old note becomes the answer
            self._messages.append(message.channel.get_partial_message(note_id))  # type: ignore[union-attr]

    async def _create(self, index: int, text: str) -> discord.Message:
        # fail_if_not_exists=False: if the question was deleted meanwhile,
        # Discord posts the answer without the reference instead of failing.
        reference = self.message.to_reference(fail_if_not_exists=False)
        return await self.message.channel.send(text, reference=reference, mention_author=False, allowed_mentions=NO_MENTIONS)

    async def _edit(self, handle: object, index: int, text: str) -> None:
        await handle.edit(content=text, allowed_mentions=NO_MENTIONS)  # type: ignore[attr-defined]

    async def placeholder(self, text: str) -> int | None:
        if not self.show_place:
            return None
        note = await self._put(0, text)
        return note.id  # type: ignore[attr-defined]


class ChannelReplier(_PartsReplier):
    """Posts the answer as new messages in a channel, the first starting with ``head``
    (moderation log captions; answers to interactions too old to follow up).
    Only the final text goes here: no notes, no streaming."""

    def __init__(self, channel: discord.abc.Messageable, head: str) -> None:
        super().__init__()
        self.channel = channel
        self.head = head

    async def placeholder(self, text: str) -> int | None:
        return None

    async def show(self, index: int, text: str) -> int | None:
        return None

    async def _create(self, index: int, text: str) -> discord.Message:
        return await self.channel.send(text, allowed_mentions=NO_MENTIONS)

    async def _edit(self, handle: object, index: int, text: str) -> None:
        raise AssertionError("a channel reply is never edited")

    async def deliver(self, parts: list[str]) -> None:
        if self.head:
            # the head may push the first part over the limit: split again, never cut
            parts = [*split_text(f"{self.head}\n{parts[0]}", DISCORD_LIMIT), *parts[1:]]
        await super().deliver(parts)


ORIGINAL = "@original"


class InteractionReplier(_PartsReplier):
    """Answers a deferred interaction: part 0 is its original response, later parts follow-ups.

    The token's age is checked whenever something is posted: once it is too
    old, the rest of the answer goes to the channel instead, headed with who asked."""

    def __init__(self, client: discord.Client, spec: JobSpec, note_id: int | None = None) -> None:
        super().__init__()
        assert spec.application_id is not None and spec.token is not None
        self.client = client
        self.spec = spec
        self.webhook = discord.Webhook.partial(spec.application_id, spec.token, client=client)
        if note_id is not None:  # the original response shows a note that the answer replaces
            self._messages.append(ORIGINAL)
        self._fallback: ChannelReplier | None = None
        self.original_id: int | None = None

    def expired(self) -> bool:
        return time.time() - self.spec.created >= INTERACTION_TOKEN_LIFE_S

    async def _create(self, index: int, text: str) -> object:
        if index == 0 and self._messages:  # streamed into the original response before
            await self._edit(ORIGINAL, 0, text)
            return ORIGINAL
        # the first follow-up fills in the deferred ("thinking…") response
        return await self.webhook.send(text, allowed_mentions=NO_MENTIONS, wait=True)

    async def _edit(self, handle: object, index: int, text: str) -> None:
        target = ORIGINAL if handle == ORIGINAL else handle.id  # type: ignore[attr-defined]
        message = await self.webhook.edit_message(target, content=text, allowed_mentions=NO_MENTIONS)  # type: ignore[arg-type]
        if handle == ORIGINAL:
            self.original_id = message.id

    async def placeholder(self, text: str) -> int | None:
        return await self.show(0, text)

    async def show(self, index: int, text: str) -> int | None:
        if self.expired():
            return None
        if index == 0:  # the deferred response (or its note) becomes part 0
            await self._edit(ORIGINAL, 0, text)
            self._messages[:1] = [ORIGINAL]
            return self.original_id
        return await super().show(index, text)

    async def deliver(self, parts: list[str]) -> None:
        if self._fallback is None and self.expired():
            log.info("interaction of user %s is too old to follow up; answering in the channel", self.spec.user_id)
            channel = await messageable(self.client, self.spec.channel_id)
            head = late_head(self.spec.user_id, self.spec.source.filename) if self._final == 0 else ""
            self._fallback = ChannelReplier(channel, head)
        if self._fallback is not None:
            await self._fallback.deliver(parts[self._final :])
            return
        await super().deliver(parts)


async def messageable(client: discord.Client, channel_id: int) -> discord.abc.Messageable:
    channel = client.get_channel(channel_id) or await client.fetch_channel(channel_id)
    if not isinstance(channel, discord.abc.Messageable):
        raise Undeliverable(f"channel {channel_id} is not a text channel")
    return channel


async def replier_for(
    client: discord.Client, spec: JobSpec, note_id: int | None = None
) -> tuple[Replier, discord.abc.Messageable | None]:
    """The replier for a job, and the channel to show "typing…" in (if any)."""
    if spec.kind == "interaction":
        return InteractionReplier(client, spec, note_id), None
    channel = await messageable(client, spec.channel_id)
    if spec.kind == "message" and spec.message_id is not None:
        message = channel.get_partial_message(spec.message_id)  # type: ignore[attr-defined]
        return MessageReplier(message, show_place=spec.show_place, note_id=note_id), channel
    return ChannelReplier(channel, spec.head), None


async def deliver_safely(replier: Replier, parts: list[str], *, retries: int = 3, backoff_s: float = 0.5) -> bool:
    """Deliver, or log why it cannot be done; never raises.  True if delivered.

    Rate limits (429) and server errors (5xx) are retried with back-off by
    discord.py itself; what reaches us as an HTTP error is final.  Network
    errors below it (reset connections, timeouts) are retried here, with
    back-off, ``retries`` times; the replier posts only what it has not
    posted yet.
    """
    for attempt in range(retries + 1):
        try:
            await replier.deliver(parts)
            return True
        except discord.Forbidden as exc:
            log.warning("no permission to reply there, job closed: %s", exc)
        except discord.NotFound as exc:
            log.warning("the channel or interaction is gone, answer dropped: %s", exc)
        except discord.HTTPException as exc:
            log.error("could not deliver a reply, job closed: %s", exc)
        except NETWORK_ERRORS as exc:
            if attempt < retries:
                delay = backoff_s * 2**attempt
                log.warning("network error delivering a reply (%s); retrying in %.1f s", exc or type(exc).__name__, delay)
                await asyncio.sleep(delay)
                continue
            log.error("could not deliver a reply after %d attempts, job closed: %s", retries + 1, exc or type(exc).__name__)
        except Undeliverable as exc:
            log.warning("cannot deliver a reply, job closed: %s", exc)
        except Exception:
            log.exception("delivering a reply failed, job closed")
        return False
    return False


async def post_note(replier: Replier, text: str) -> int | None:
    """Show a place-in-line (or restarting) note; a failure to do so is never fatal."""
    try:
        return await replier.placeholder(text)
    except (discord.HTTPException, *NETWORK_ERRORS) as exc:
        log.info("could not post a note (%s): %s", text, exc)
        return None


@contextlib.asynccontextmanager
async def typing_in(channel: discord.abc.Messageable | None) -> AsyncIterator[None]:
    """Show "typing…" while the job runs; a failure to do so is never fatal."""

    async def keep_typing(where: discord.abc.Messageable) -> None:
        while True:
            try:
                await where.typing()
            except (discord.HTTPException, *NETWORK_ERRORS) as exc:
                log.debug("typing indicator failed: %s", exc)
                return
            await asyncio.sleep(8)

    task = asyncio.create_task(keep_typing(channel)) if channel is not None else None
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
