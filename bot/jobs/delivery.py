"""Where an answer goes, and getting it there: the repliers.

A :class:`Replier` shows a job's place in line at once and later posts the
final reply (the answer parts, or one refusal or error line).  Every message
allows no mentions: model output can contain ``@everyone``.

Exactly one set of messages per reply, by design rather than by timing:

* **One message per part.**  The note, the streamed words and the final
  text of a part are the same message.  Every create and edit of a reply
  runs under the reply's lock, so a part's create in flight is awaited, not
  raced, by the next edit; a note never overwrites words already shown.
* **Idempotent creates.**  Each message the bot creates for a job carries a
  nonce derived from the job and the part (:func:`nonce_key`), the same on
  every retry and after a restart: Discord answers a repeated create within
  its nonce window with the message already made, which is then edited to
  the text wanted.  A 404 "Unknown Message" for such a nonce means that
  message was deleted: the part is posted again under a fresh nonce.
* **Controls while it waits.**  A reply may carry buttons (``controls``: the
  Cancel button) on its first message while it is a note or streams; the
  final reply takes them away (and stops the view).
* **Resumable.**  Parts already delivered are not posted again when
  :func:`deliver_safely` retries; parts left over from a longer reply (or
  adopted from an earlier run, see :meth:`PartsReplier.adopt`) are deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
import discord

from bot.reply import DISCORD_LIMIT, late_head, split_text

if TYPE_CHECKING:
    from bot.jobs.spec import JobSpec

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()

#: interaction tokens live 15 minutes; leave a margin for the answer itself
INTERACTION_TOKEN_LIFE_S = 14 * 60

#: errors below discord.py's HTTP layer (connection reset, DNS, timeouts): worth a retry
NETWORK_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError, OSError, asyncio.TimeoutError)
#: what a request to Discord may end in that is not a bug: its answer, or the network's
DISCORD_OR_NETWORK_ERRORS: tuple[type[BaseException], ...] = (discord.HTTPException, *NETWORK_ERRORS)


def nonce_key(*parts: object) -> str:
    """16 characters naming one reply (a job, a refusal): its messages' nonces start with it."""
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:16]


def _or_random(nonce: str | None) -> str | int:
    """A create's nonce: the reply's, or (no dedup key) a random one, as discord.py would pick."""
    return nonce if nonce is not None else secrets.randbits(64)


class Undeliverable(Exception):
    """There is nowhere to post this job's answer."""


class Replier(Protocol):
    async def placeholder(self, text: str, *, over_text: bool = False) -> int | None:
        """Say at once that the job waits in line (later replaced by the answer).
        Returns the id of the message posted, if one was.  A note never replaces
        streamed text unless ``over_text`` (the bot stops: the partial answer
        gives way to the "restarting" note)."""

    async def show(self, index: int, text: str) -> int | None:
        """Show ``text`` as part ``index`` of the reply while the answer streams in
        (part 0 replaces the note; later parts continue it).  Returns the message's id."""

    async def deliver(self, parts: list[str]) -> None:
        """Post the final reply: the answer parts, or one refusal or error line
        (the parts already shown are edited into it)."""


class PartsReplier:
    """A reply made of messages, part 0 first: shown (created or edited) while the
    answer streams, then edited into the final parts (see the module docstring)."""

    def __init__(self, nonce: str = "") -> None:
        self._messages: list[object | None] = []
        self._final = 0
        self._lock = asyncio.Lock()
        #: the reply's nonce key ("": Discord.py's random nonces, no dedup)
        self._nonce = nonce
        self._nonce_gen: dict[int, int] = {}
        #: the streamed text has been shown (a note must not replace it)
        self.shown_text = False
        #: called with (part index, message id) as each message of the reply is created
        #: (under the reply's lock, before anything else is posted): the job journals it
        self.on_created: Callable[[int, int], Awaitable[None]] | None = None
        #: buttons on the first message while the reply is a note or streams (Cancel)
        self.controls: discord.ui.View | None = None
        #: the final reply (or a "restarting" note) is being posted: the controls go
        self.final = False

    def view_for(self, index: int) -> Any:
        """The ``view`` argument for part ``index``'s create or edit: the controls while
        waiting or streaming, None (take them away) once final; MISSING (leave it) for
        later parts and replies without controls."""
        if index != 0 or self.controls is None:
            return discord.utils.MISSING
        return None if self.final else self.controls

    def end_controls(self) -> None:
        """From now on the first message carries no buttons (the final reply, or a
        "restarting" note); the view stops listening."""
        self.final = True
        if self.controls is not None and not self.controls.is_finished():
            self.controls.stop()

    async def _create(self, index: int, text: str, nonce: str | None) -> object: ...

    async def _edit(self, handle: object, index: int, text: str) -> None: ...

    async def _delete(self, handle: object) -> None: ...

    def nonce_for(self, index: int) -> str | None:
        """Part ``index``'s nonce (at most 25 characters, as Discord allows)."""
        if not self._nonce:
            return None
        gen = self._nonce_gen.get(index, 0)
        return f"{self._nonce}{index:x}" + (f"r{gen}" if gen else "")

    def adopt(self, handles: list[object]) -> None:
        """Take messages an earlier run posted for this reply as its parts, in order
        (messages, or ids journaled as they were created; None: a part not made)."""
        for index, handle in enumerate(handles):
            while len(self._messages) <= index:
                self._messages.append(None)
            if self._messages[index] is None and handle is not None:
                self._messages[index] = self._handle(handle) if isinstance(handle, int) else handle

    def _handle(self, message_id: int) -> object:
        """A message of this reply, by id, to edit or delete."""
        raise NotImplementedError

    @property
    def message_ids(self) -> list[int]:
        return [m.id for m in self._messages if m is not None and isinstance(getattr(m, "id", None), int)]  # type: ignore[attr-defined]

    async def _create_part(self, index: int, text: str) -> object:
        try:
            handle = await self._create(index, text, self.nonce_for(index))
        except discord.NotFound as exc:
            if exc.code != 10008 or not self._nonce:
                raise
            # the message an earlier create with this nonce made was deleted: a fresh nonce
            log.info("part %d of a reply was deleted; posting it again", index)
            self._nonce_gen[index] = self._nonce_gen.get(index, 0) + 1
            handle = await self._create(index, text, self.nonce_for(index))
        content = getattr(handle, "content", None)
        if isinstance(content, str) and content != text:
            # Discord returned the message an earlier create with this nonce made
            # (a note, partial text): make it this text
            await self._edit(handle, index, text)
        return handle

    async def _put(self, index: int, text: str, *, recreate: bool = True, keep_shown: bool = False) -> object:
        async with self._lock:
            handle = self._messages[index] if index < len(self._messages) else None
            if handle is not None:
                if keep_shown and self.shown_text:
                    return handle
                try:
                    await self._edit(handle, index, text)
                    return handle
                except discord.NotFound:
                    if not recreate:
                        raise
                    log.info("part %d of a reply was deleted; posting it again", index)
            handle = await self._create_part(index, text)
            while len(self._messages) <= index:
                self._messages.append(None)
            self._messages[index] = handle
            message_id = getattr(handle, "id", None)
            if self.on_created is not None and isinstance(message_id, int):
                try:
                    await self.on_created(index, message_id)
                except Exception:
                    log.exception("could not journal part %d of a reply", index)
            return handle

    async def show(self, index: int, text: str) -> int | None:
        # a deleted message is not posted again while streaming (NotFound): the final text is
        handle = await self._put(index, text, recreate=False)
        self.shown_text = True
        return getattr(handle, "id", None)

    async def deliver(self, parts: list[str]) -> None:
        self.end_controls()
        while self._final < len(parts):
            await self._put(self._final, parts[self._final])
            self._final += 1
        await self._trim(len(parts))

    async def _trim(self, keep: int) -> None:
        """Delete the messages beyond the final reply's parts (a longer partial or an earlier run's)."""
        async with self._lock:
            extra, self._messages = self._messages[keep:], self._messages[:keep]
        for handle in extra:
            if handle is None:
                continue
            try:
                await self._delete(handle)
            except discord.NotFound:
                pass
            except DISCORD_OR_NETWORK_ERRORS as exc:
                log.warning("could not delete a left-over part of a reply: %s", exc)


class MessageReplier(PartsReplier):
    """Replies to a message: the place-in-line note becomes the answer's first part."""

    def __init__(
        self,
        message: discord.Message | discord.PartialMessage,
        *,
        show_place: bool = True,
        note_id: int | None = None,
        nonce: str = "",
    ) -> None:
        super().__init__(nonce)
        self.message = message
        self.show_place = show_place
        if note_id is not None:  # a replayed job: its old note becomes the answer
            self._messages.append(message.channel.get_partial_message(note_id))  # type: ignore[union-attr]

    async def _create(self, index: int, text: str, nonce: str | None) -> discord.Message:
        # fail_if_not_exists=False: if the question was deleted meanwhile,
        # Discord posts the answer without the reference instead of failing.
        # In a thread started on the question (it has the question's id) the answer is no reply:
        # the question is in the parent channel.
        in_its_thread = self.message.id == self.message.channel.id
        reply: dict[str, Any] = {} if in_its_thread else {"reference": self.message.to_reference(fail_if_not_exists=False)}
        view = self.view_for(index)
        return await self.message.channel.send(
            text, **reply, mention_author=False, allowed_mentions=NO_MENTIONS, nonce=_or_random(nonce),
            view=view if view is not None else discord.utils.MISSING,
        )

    async def _edit(self, handle: object, index: int, text: str) -> None:
        await handle.edit(content=text, allowed_mentions=NO_MENTIONS, view=self.view_for(index))  # type: ignore[attr-defined]

    async def _delete(self, handle: object) -> None:
        await handle.delete()  # type: ignore[attr-defined]

    def _handle(self, message_id: int) -> object:
        return self.message.channel.get_partial_message(message_id)  # type: ignore[union-attr]

    async def placeholder(self, text: str, *, over_text: bool = False) -> int | None:
        if not self.show_place:
            return None
        note = await self._put(0, text, keep_shown=not over_text)  # never over words streamed meanwhile
        return note.id  # type: ignore[attr-defined]


class ChannelReplier(PartsReplier):
    """Posts the answer as new messages in a channel, the first starting with ``head``
    (moderation log captions; answers to interactions too old to follow up).
    Only the final text goes here: no notes, no streaming."""

    def __init__(self, channel: discord.abc.Messageable, head: str, nonce: str = "") -> None:
        super().__init__(nonce)
        self.channel = channel
        self.head = head

    async def placeholder(self, text: str, *, over_text: bool = False) -> int | None:
        return None

    async def show(self, index: int, text: str) -> int | None:
        return None

    async def _create(self, index: int, text: str, nonce: str | None) -> discord.Message:
        return await self.channel.send(text, allowed_mentions=NO_MENTIONS, nonce=_or_random(nonce))

    async def _edit(self, handle: object, index: int, text: str) -> None:
        # only when Discord answered a repeated create (same nonce) with the message made before
        await handle.edit(content=text, allowed_mentions=NO_MENTIONS)  # type: ignore[attr-defined]

    async def _delete(self, handle: object) -> None:
        await handle.delete()  # type: ignore[attr-defined]

    def _handle(self, message_id: int) -> object:
        return self.channel.get_partial_message(message_id)  # type: ignore[attr-defined]

    async def deliver(self, parts: list[str]) -> None:
        if self.head:
            # the head may push the first part over the limit: split again, never cut
            parts = [*split_text(f"{self.head}\n{parts[0]}", DISCORD_LIMIT), *parts[1:]]
        await super().deliver(parts)


ORIGINAL = "@original"


class InteractionReplier(PartsReplier):
    """Answers a deferred interaction: part 0 is its original response, later parts follow-ups.

    Part 0 is always the original response, edited (``PATCH @original`` is
    idempotent: a replay edits it again, never adds a second answer); later
    parts are follow-ups (webhooks take no nonce).  The token's age is checked
    whenever something is posted: once it is too old, the rest of the answer
    goes to the channel instead, headed with who asked."""

    def __init__(self, client: discord.Client, spec: JobSpec, note_id: int | None = None, nonce: str = "") -> None:
        super().__init__(nonce)
        assert spec.application_id is not None and spec.token is not None
        self.client = client
        self.spec = spec
        self.webhook = discord.Webhook.partial(spec.application_id, spec.token, client=client)
        self._messages.append(ORIGINAL)
        self._fallback: ChannelReplier | None = None
        self.original_id: int | None = None

    def expired(self) -> bool:
        return time.time() - self.spec.created >= INTERACTION_TOKEN_LIFE_S

    async def _create(self, index: int, text: str, nonce: str | None) -> object:
        if index == 0:
            await self._edit(ORIGINAL, 0, text)
            return ORIGINAL
        return await self.webhook.send(text, allowed_mentions=NO_MENTIONS, wait=True)  # later parts carry no controls

    async def _delete(self, handle: object) -> None:
        if handle != ORIGINAL:
            await self.webhook.delete_message(handle.id)  # type: ignore[attr-defined]

    def _handle(self, message_id: int) -> object:
        return discord.Object(message_id)

    async def original_text(self) -> str | None:
        """What the original response says now (None if it cannot be read)."""
        try:
            message = await self.webhook.fetch_message(ORIGINAL)  # type: ignore[arg-type]
        except DISCORD_OR_NETWORK_ERRORS as exc:
            log.info("could not read an interaction's original response: %s", exc)
            return None
        return message.content

    async def _edit(self, handle: object, index: int, text: str) -> None:
        target = ORIGINAL if handle == ORIGINAL else handle.id  # type: ignore[attr-defined]
        message = await self.webhook.edit_message(
            target, content=text, allowed_mentions=NO_MENTIONS, view=self.view_for(index)  # type: ignore[arg-type]
        )
        if handle == ORIGINAL:
            self.original_id = message.id

    async def placeholder(self, text: str, *, over_text: bool = False) -> int | None:
        if self.expired():
            return None
        await self._put(0, text, keep_shown=not over_text)  # never over words streamed meanwhile
        return self.original_id

    async def show(self, index: int, text: str) -> int | None:
        if self.expired():
            return None
        shown = await super().show(index, text)
        return self.original_id if index == 0 else shown

    async def deliver(self, parts: list[str]) -> None:
        if self._fallback is None and self.expired():
            log.info("interaction of user %s is too old to follow up; answering in the channel", self.spec.user_id)
            channel = await messageable(self.client, self.spec.channel_id)
            head = late_head(self.spec.user_id, self.spec.source.filename) if self._final == 0 else ""
            self._fallback = ChannelReplier(channel, head, nonce_key(self._nonce, "late") if self._nonce else "")
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
    nonce = job_nonce(spec)
    if spec.kind == "interaction":
        return InteractionReplier(client, spec, note_id, nonce), None
    channel = await messageable(client, spec.channel_id)
    if spec.kind == "message" and spec.message_id is not None:
        message = channel.get_partial_message(spec.message_id)  # type: ignore[attr-defined]
        return MessageReplier(message, show_place=spec.show_place, note_id=note_id, nonce=nonce), channel
    return ChannelReplier(channel, spec.head, nonce), None


def job_nonce(spec: JobSpec) -> str:
    """The nonce key of a job's reply: the same for the job in every run (it comes from the journaled spec)."""
    return nonce_key("job", spec.kind, spec.channel_id, spec.message_id, spec.token and spec.token[:16], spec.source.url, spec.lane, spec.created)


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


async def post_note(replier: Replier, text: str, *, over_text: bool = False) -> int | None:
    """Show a place-in-line (or restarting) note; a failure to do so is never fatal."""
    try:
        return await replier.placeholder(text, over_text=over_text)
    except DISCORD_OR_NETWORK_ERRORS as exc:
        log.info("could not post a note (%s): %s", text, exc)
        return None


@contextlib.asynccontextmanager
async def typing_in(channel: discord.abc.Messageable | None) -> AsyncIterator[None]:
    """Show "typing…" while the job runs; a failure to do so is never fatal."""

    async def keep_typing(where: discord.abc.Messageable) -> None:
        while True:
            try:
                await where.typing()
            except DISCORD_OR_NETWORK_ERRORS as exc:
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
