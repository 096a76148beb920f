"""A question's whole life, from acceptance to its one reply.

Front ends (the cogs) turn Discord events into :class:`JobSpec` s, one per
image, and hand a message's specs to :meth:`Jobs.answer` together.  From
there :class:`Jobs` owns them:

1. admission, before anything costs: the queue reserves places for all the
   message's images (per-user, per-minute and queue-size limits);
2. the journal: all the message's jobs in one transaction;
3. download (bounded concurrency) and preparation (the runtime's bounded
   image pool), then the queue, in the message's order;
4. the place in line, shown at once when the job has to wait (its message id
   is journaled, so a replay edits it);
5. delivery of exactly one reply (the answer, or one short line), retried
   over network errors;
6. the journal row goes when the reply is sent or can never be; the outcome
   is counted and logged in one line.

After a crash, :meth:`Jobs.replay` answers what the previous process left, in
order and within the queue's limits; a job that was in flight during
``state.max_crashes`` crashes, or is older than Discord's attachment links
live, gets one line instead.  On a clean stop, jobs cut short stay in the
journal and are answered after the restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from bot.engine.base import Answer, EngineError
from bot.i18n import answer_instruction, guild_locale, set_locale, translate
from bot.images import ImageError
from bot.jobs.cancel import cancel_view
from bot.jobs.delivery import (
    ORIGINAL,
    InteractionReplier,
    MessageReplier,
    PartsReplier,
    Replier,
    deliver_safely,
    job_nonce,
    nonce_key,
    post_note,
    replier_for,
    typing_in,
)
from bot.jobs.in_flight import InFlight
from bot.jobs.journal import Entry, Journal
from bot.jobs.spec import ImageSource, JobKind, JobSpec, Outcome
from bot.jobs.streaming import CURSOR, ReplyStream
from bot.jobs.waiting import ChannelPace, NoteKeeper, note_text
from bot.media import PreparedMedia
from bot.queue import JobCancelled, JobHandle, Lane, QueueClosed, Refused, Reservation
from bot.reply import (
    BUSY_MARK,
    CANCELLED,
    GAVE_UP,
    NOT_RUNNING,
    ONLY_ASKER_CANCELS,
    OUR_FAULT,
    WARN,
    friendly,
    parked_line,
    render_parts,
    split_text,
)

if TYPE_CHECKING:
    import aiohttp
    import discord

    from bot.config import Settings
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

@dataclass(slots=True)
class _Step:
    """One job of a message on its way: its row, its order among its siblings."""

    spec: JobSpec
    entry_id: int | None
    note_id: int | None
    reservation: Reservation
    my_turn: asyncio.Event  # set when the previous sibling went to the queue (or ended)
    done_turn: asyncio.Event  # set when this one did
    #: only a message's first job shows a place in line (the others wait behind it)
    first: bool = True
    #: a job an earlier run left: its messages found in the channel (oldest first) become its parts
    adopted: list[Any] | None = None
    #: the picture as the model gets it (one image, or frames of a moving one), once loaded
    media: PreparedMedia | None = None
    #: the job in the queue, once submitted
    handle: JobHandle | None = None
    #: who pressed Cancel (the asker or a moderator)
    cancelled_by: int | None = None


def _question_of(spec: JobSpec) -> tuple[Any, ...]:
    """What a job answers: the same for every image of one message or interaction."""
    return (spec.kind, spec.channel_id, spec.message_id, spec.interaction_id, spec.token, spec.user_id)


class Jobs:
    """Owns every job from acceptance to reply; the cogs call :meth:`answer`."""

    def __init__(
        self,
        client: discord.Client,
        settings: Settings,
        runtime: Runtime,
        journal: Journal,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.runtime = runtime
        self.journal = journal
        self.session = session
        #: how questions ended: answered, refused, failed, undeliverable, parked, gave_up
        self.outcomes: Counter[str] = Counter()
        self._pending = InFlight()
        self._replay: asyncio.Task[None] | None = None
        #: takes a message journaled as "seen" by a killed process from the start again
        #: (set by the front end that reads messages; called with the message and its row)
        self.readmit: Callable[[discord.Message, int, bool], Coroutine[Any, Any, None]] | None = None
        #: jobs between acceptance and reply, by their key (:func:`job_nonce`): what Cancel finds
        self._live: dict[str, _Step] = {}
        #: the pace of "in line" note edits, per channel
        self._note_pace = ChannelPace()
        #: whether a user may cancel another's question here (the bot's moderators; set by the client)
        self.is_moderator: Callable[[discord.Interaction], bool] = lambda interaction: False

    # -- in flight ------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Jobs between acceptance and their reply."""
        return self._pending.count

    async def wait_idle(self) -> None:
        await self._pending.wait_idle()

    # -- the way in -------------------------------------------------------------------

    async def seen(self, message: discord.Message) -> int | None:
        """Journal a message addressed to the bot before any request is made on its
        behalf (its reply chain, the asker's roles); its jobs replace the row
        (:meth:`answer`), a refusal removes it (:meth:`refuse_message`).  A kill
        in between loses nothing: the replay reads the message again and takes it
        from the start (see :attr:`readmit`)."""
        try:
            return await self.journal.add_seen(message.channel.id, message.id, message.author.id)
        except Exception:
            log.exception("could not journal message %s as received", message.id)
            return None

    async def journal_first(self, spec: JobSpec) -> int | None:
        """Journal an interaction's job before it is deferred (a kill after the defer is
        answered by the replay, never left "thinking…"); :meth:`answer` takes the row."""
        try:
            return (await self.journal.add_group([spec.to_json()]))[0]
        except Exception:
            log.exception("could not journal an interaction's job")
            return None

    async def answer(
        self, specs: JobSpec | Sequence[JobSpec], *, seen: int | None = None, journaled: int | None = None, replayed: bool = False
    ) -> list[Outcome]:
        """Accept a message's jobs together (or refuse them at once) and answer each once.
        ``seen``: the message's row from :meth:`seen`, replaced by its jobs' rows;
        ``journaled``: the one job's row from :meth:`journal_first`; ``replayed``: a
        message an earlier run received, which waits for room in the queue like the
        other replays instead of being refused."""
        specs = [specs] if isinstance(specs, JobSpec) else list(specs)
        if not specs:
            await self._forget(seen)
            return []
        first = specs[0]
        started = time.perf_counter()
        try:
            if replayed:
                reservation = await self._room(len(specs), first.lane)
            else:
                reservation = self.runtime.reserve(first.user_id, len(specs), lane=first.lane)
        except Refused as exc:
            await self._refuse(first, str(exc), started)
            await self._forget(seen if journaled is None else journaled)
            return ["refused"]
        try:
            if journaled is not None and len(specs) == 1:
                ids: list[int | None] = [journaled]
            else:
                ids = await self.journal.add_group([spec.to_json() for spec in specs], replaces=seen)
        except Exception:
            reservation.close()
            log.exception("could not journal a job")
            await self._refuse(first, OUR_FAULT, started, outcome="failed")
            await self._forget(seen)
            return ["failed"]
        return await self._run_group(specs, ids, [None] * len(specs), reservation)

    async def refuse_message(self, message: discord.Message, reason: str, *, seen: int | None = None) -> None:
        """Refuse a question before it becomes a job: one line to the asker, one log line.
        The line's nonce comes from the message: a refusal repeated after a restart is not posted twice."""
        started = time.perf_counter()
        replier = MessageReplier(message, nonce=nonce_key("refusal", message.channel.id, message.id))
        delivered = await deliver_safely(replier, [friendly(reason, guild_locale(message))])
        await self._forget(seen)
        outcome = "refused" if delivered else "undeliverable"
        log_job(self.outcomes, "message", message.author.id, message.channel.id, outcome, None, time.perf_counter() - started)

    def record(self, kind: JobKind, user_id: int | None, channel_id: int | None, outcome: Outcome) -> None:
        """Count and log a question a front end answered itself (an ephemeral refusal)."""
        log_job(self.outcomes, kind, user_id, channel_id, outcome, None, 0.0)

    async def _refuse(self, spec: JobSpec, reason: str, started: float, outcome: Outcome = "refused") -> None:
        """A message refused before it became jobs: one line to the asker (never for captions)."""
        if spec.lane == "caption":
            log.info("caption of an image in channel %s not made: %s", spec.channel_id, reason)
            self._log(spec, outcome, None, started)
            return
        delivered = False
        try:
            replier, _ = await replier_for(self.client, spec)
            delivered = await deliver_safely(replier, [friendly(reason, spec.locale)])
        except Exception as exc:
            log.warning("cannot tell user %s that their question was refused: %s", spec.user_id, exc)
        self._log(spec, outcome if delivered else "undeliverable", None, started)

    async def _run_group(
        self,
        specs: Sequence[JobSpec],
        ids: Sequence[int | None],
        notes: Sequence[int | None],
        reservation: Reservation,
        adopted: Sequence[list[Any] | None] | None = None,
    ) -> list[Outcome]:
        turns = [asyncio.Event() for _ in range(len(specs) + 1)]
        turns[0].set()
        steps = [
            _Step(
                spec, ids[i], notes[i], reservation, my_turn=turns[i], done_turn=turns[i + 1], first=i == 0,
                adopted=adopted[i] if adopted else None,
            )
            for i, spec in enumerate(specs)
        ]
        try:
            return list(await asyncio.gather(*(self._run(step) for step in steps)))
        finally:
            reservation.close()

    # -- one job ------------------------------------------------------------------------

    async def _run(self, step: _Step) -> Outcome:
        set_locale(step.spec.locale)  # the job's lines, in this task of its own (gather's) and those it starts
        key = job_nonce(step.spec)
        self._live[key] = step
        try:
            return await self._run_live(step, key)
        finally:
            if self._live.get(key) is step:
                del self._live[key]

    async def _run_live(self, step: _Step, key: str) -> Outcome:
        spec = step.spec
        started = time.perf_counter()
        answer: Answer | None = None
        with self._pending.track():
            try:
                replier, typing_channel = await replier_for(self.client, spec, None if step.adopted else step.note_id)
                if isinstance(replier, PartsReplier):
                    if step.adopted:
                        replier.adopt(step.adopted)
                    replier.on_created = functools.partial(self.journal.set_part, step.entry_id)
                    if spec.lane == "question" and isinstance(replier, MessageReplier | InteractionReplier):
                        replier.controls = cancel_view(key)  # on the note and the streaming answer
            except Exception as exc:  # the channel is gone, no access, the network
                log.warning("cannot answer job for user %s in channel %s, dropped: %s", spec.user_id, spec.channel_id, exc)
                self._skip_turn(step)
                outcome: Outcome = "undeliverable"
            else:
                if step.adopted is not None and len(step.adopted) <= 1 and isinstance(replier, InteractionReplier):
                    original = await replier.original_text()
                    if original is not None and reply_state([original]) == "final":
                        log.info("job %s was answered before the restart (its original response is final)", step.entry_id)
                        self._skip_turn(step)
                        await self._forget(step.entry_id)
                        self._log(spec, "answered", None, started)
                        return "answered"
                outcome, parts, answer = await self._work(step, replier, typing_channel)
                if outcome == "parked":  # the bot is stopping: answered after the restart
                    if isinstance(replier, PartsReplier):
                        replier.end_controls()
                    note_id = await post_note(replier, parked_line(), over_text=True)
                    if note_id is not None and note_id != step.note_id:
                        await self.journal.set_note(step.entry_id, note_id)
                    self._log(spec, outcome, None, started)
                    return outcome
                if spec.lane == "caption" and outcome == "refused":
                    log.info("caption of an image in channel %s not made: %s", spec.channel_id, parts[0])
                elif not await deliver_safely(replier, parts):
                    outcome = "undeliverable"
            await self._forget(step.entry_id)
        self._log(spec, outcome, answer, started)
        return outcome

    def _skip_turn(self, step: _Step) -> None:
        step.reservation.release_one()
        step.done_turn.set()

    async def forget(self, entry_id: int | None) -> None:
        """Remove a row that will never be answered (an interaction that could not be deferred)."""
        await self._forget(entry_id)

    async def _forget(self, entry_id: int | None) -> None:
        try:
            await self.journal.remove(entry_id)
        except Exception:
            log.exception("could not remove journal row %s", entry_id)

    async def _work(
        self, step: _Step, replier: Replier, typing_channel: discord.abc.Messageable | None
    ) -> tuple[Outcome, list[str], Answer | None]:
        """The reply for a job: (outcome, message parts, the answer if there is one)."""
        spec = step.spec
        stream = self._stream_for(step, replier)
        try:
            try:
                handle = await self._submit(step, stream)
            except (ImageError, Refused) as exc:
                log.debug("refused a job from user %s: %s", spec.user_id, exc)
                if isinstance(exc, QueueClosed) and self.journal.enabled:
                    return "parked", [], None
                return "refused", self._line(spec, None, str(exc)), None
            return await self._answer(step, replier, handle, typing_channel, stream)
        except Exception:
            log.exception("unexpected failure answering user %s", spec.user_id)
            return "failed", self._line(spec, stream, OUR_FAULT), None

    def _stream_for(self, step: _Step, replier: Replier) -> ReplyStream | None:
        """Questions stream into their reply; captions post only the final text."""
        cfg = self.settings.discord
        if step.spec.lane != "question" or not cfg.stream:
            return None
        async def journal_note(message_id: int) -> None:
            if message_id != step.note_id:
                await self.journal.set_note(step.entry_id, message_id)

        return ReplyStream(replier, every_s=cfg.stream_edit_s, header=step.spec.label, on_first_shown=journal_note)

    async def _submit(self, step: _Step, stream: ReplyStream | None) -> JobHandle:
        """Download and prepare the image, then queue it in the message's order."""
        spec = step.spec
        try:
            await self.journal.mark_active(step.entry_id)
            step.media = await self._load_media(spec.source)
            await step.my_turn.wait()  # keep the message's order in the queue
            request = self.runtime.request(
                step.media.images, spec.question, max_tokens=spec.max_tokens, history=spec.history,
                instruction=answer_instruction(spec.answer_in, self.settings.generation.language),
            )
            handle = self.runtime.submit(
                request,
                reservation=step.reservation,
                on_text=stream.feed if stream else None,
                on_restart=stream.restart if stream else None,
            )
            step.done_turn.set()
            step.handle = handle
            if step.cancelled_by is not None:  # pressed while the picture was being read
                handle.stop()
            return handle
        finally:
            if not step.done_turn.is_set():
                self._skip_turn(step)

    async def _answer(
        self,
        step: _Step,
        replier: Replier,
        handle: JobHandle,
        typing_channel: discord.abc.Messageable | None,
        stream: ReplyStream | None,
    ) -> tuple[Outcome, list[str], Answer | None]:
        """Wait for the answer (showing the place in line, then the text as it comes)."""
        spec = step.spec
        watcher, keeper = await self._wait_in_line(step, replier, handle) if handle.position > 0 else (None, None)
        try:
            async with typing_in(typing_channel):
                answer = await handle.result()
        except QueueClosed as exc:
            if exc.parked and self.journal.enabled:
                return "parked", [], None
            return "failed", self._line(spec, stream, str(exc)), None
        except JobCancelled as exc:
            if step.cancelled_by is not None:
                log.info("user %s cancelled the question of user %s", step.cancelled_by, spec.user_id)
                return "cancelled", [translate(CANCELLED, spec.locale)], None
            log.warning("job for user %s ended without an answer: %s", spec.user_id, exc)
            return "failed", self._line(spec, stream, str(exc)), None
        except EngineError as exc:
            log.warning("job for user %s ended without an answer: %s", spec.user_id, exc)
            return "failed", self._line(spec, stream, str(exc)), None
        finally:
            if keeper is not None:
                await keeper.stop()  # an edit in flight lands before the answer, never after
            if watcher is not None:
                watcher.cancel()
            if stream is not None:
                await stream.close()  # no streamed edit may land after the final text
        media = step.media
        seen, frames = (media.describe(), media.frames) if media is not None else ("", 1)
        engine = answer.engine if len(self.runtime.engines) > 1 else ""  # the footer names it when there are several
        return "answered", render_parts(answer, header=spec.label, note=spec.note, seen=seen, frames=frames, engine=engine), answer

    @staticmethod
    def _line(spec: JobSpec, stream: ReplyStream | None, reason: str) -> list[str]:
        """One line instead of the answer: under the image's label and the text streamed so far, if any."""
        partial = stream.text.strip() if stream is not None else ""
        head = "\n".join(x for x in (spec.label, partial) if x)
        line = friendly(reason, spec.locale)
        return split_text(f"{head}\n{line}" if head else line)

    async def _wait_in_line(self, step: _Step, replier: Replier, handle: JobHandle) -> tuple[asyncio.Task[None], NoteKeeper | None]:
        """Show the place in line and about how long (the message's first job only), keep
        it up to date, and journal the note; while it waits, a crash is not this job's
        fault: it is active again once it starts."""
        await self.journal.mark_active(step.entry_id, False)
        text = note_text(handle)
        keeper = None
        if step.first and text:  # a job that has started already needs no note
            note_id = await post_note(replier, text)
            if note_id is not None and note_id != step.note_id:
                await self.journal.set_note(step.entry_id, note_id)
            keeper = NoteKeeper(replier, handle, step.spec.channel_id, self._note_pace, text)

        async def active_when_started() -> None:
            await handle.started()
            await self.journal.mark_active(step.entry_id)

        return asyncio.create_task(active_when_started()), keeper

    # -- cancel ----------------------------------------------------------------------------

    async def cancel_pressed(self, interaction: discord.Interaction, key: str) -> None:
        """Cancel, pressed on a note or a streaming answer: by the asker (or a moderator)
        the job leaves the line, or stops at its next token; its reply becomes "Cancelled."
        through its own delivery, and the journal forgets it."""
        step = self._live.get(key)
        if step is None:
            await interaction.response.send_message(friendly(NOT_RUNNING, interaction.locale), ephemeral=True)
            return
        user = interaction.user.id
        if user != step.spec.user_id and not self.is_moderator(interaction):
            log.info("user %s pressed Cancel on the question of user %s and may not", user, step.spec.user_id)
            await interaction.response.send_message(friendly(ONLY_ASKER_CANCELS, interaction.locale), ephemeral=True)
            return
        question = _question_of(step.spec)
        for other in [s for s in self._live.values() if _question_of(s.spec) == question]:  # the message's other images too
            if other.cancelled_by is None:
                other.cancelled_by = user
                if other.handle is not None:
                    other.handle.stop()
        await interaction.response.defer()  # the reply itself becomes "Cancelled."

    async def _load_media(self, source: ImageSource) -> PreparedMedia:
        if self.session is None:
            raise RuntimeError("Jobs has no HTTP session to download with")
        return await self.runtime.load_media(
            self.session, source.url, source.size, allowed_hosts=self.settings.images.allowed_hosts, content_type=source.content_type
        )

    # -- after a crash ----------------------------------------------------------------------

    def start_replay(self) -> None:
        if self._replay is None and self.journal.leftovers:
            self._replay = asyncio.create_task(self.replay(), name="llava-journal-replay")

    async def replay(self) -> None:
        """Answer the jobs the previous process accepted but never answered, in order;
        then take the messages it had received but not made into jobs from the start."""
        await self.client.wait_until_ready()
        entries, self.journal.leftovers = self.journal.leftovers, []
        if not entries:
            return
        log.info("answering %d job(s) left unanswered by the previous run", len(entries))
        received = [entry for entry in entries if entry.seen is not None]
        jobs = [entry for entry in entries if entry.seen is None]
        groups = [specs for group in _groups(jobs) if (specs := await self._readable(group))]
        targets = [_target(spec) for specs in groups for _, spec in specs]
        targets += [(int(e.seen["channel_id"]), int(e.seen["message_id"])) for e in received if e.seen]
        found = await self._own_replies([t for t in targets if t is not None])
        tasks: list[asyncio.Task[Any]] = []
        for specs in groups:
            specs, adopted = await self._reconcile(specs, found)
            task = await self._replay_group(specs, adopted) if specs else None
            if task is not None:
                tasks.append(task)
        for entry in received:
            readmitted = await self._replay_received(entry, found)
            if readmitted is not None:
                tasks.append(readmitted)
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _own_replies(self, targets: Sequence[tuple[int, int]]) -> dict[int, list[Any]]:
        """The bot's messages that answer the leftover questions, oldest first, by the
        question's id (a message's replies) or the interaction's (its responses).

        Discord forgets a nonce after minutes and a restart can take longer, so
        the replay asks Discord, not memory: one paged read per channel, from
        the oldest leftover question on (``state.replay_history_limit``
        messages at most).  ``targets``: (channel id, question or interaction id)."""
        import discord

        first: dict[int, int] = {}
        for channel_id, after in targets:
            first[channel_id] = min(first.get(channel_id, after), after)
        questions = {question for _, question in targets}
        found: dict[int, list[Any]] = {}
        me = self.client.user.id if self.client.user else None
        for channel_id, oldest in first.items():
            read = 0
            try:
                channel = self.client.get_channel(channel_id) or await self.client.fetch_channel(channel_id)
                history = channel.history(limit=self.settings.state.replay_history_limit, after=discord.Object(oldest - 1), oldest_first=True)  # type: ignore[union-attr]
                async for message in history:
                    read += 1
                    if message.author.id != me or message.type is discord.MessageType.thread_starter_message:
                        continue
                    ref = message.reference
                    if ref is not None and ref.message_id is not None:
                        found.setdefault(ref.message_id, []).append(message)
                    elif message.interaction_metadata is not None:
                        found.setdefault(message.interaction_metadata.id, []).append(message)
                    elif channel_id in questions:
                        # a thread the bot started on the question has the question's id:
                        # its answer there is no reply (the question is in the parent channel)
                        found.setdefault(channel_id, []).append(message)
            except Exception as exc:  # no access, the channel is gone, the network: answer as before
                log.warning("could not read channel %s to find replies made before the restart: %s", channel_id, exc)
            log.info("read %d message(s) of channel %s to find replies made before the restart", read, channel_id)
        return found

    async def _reconcile(
        self, specs: list[tuple[Entry, JobSpec]], found: dict[int, list[Any]]
    ) -> tuple[list[tuple[Entry, JobSpec]], list[list[Any] | None]]:
        """Cross off the jobs whose reply is already complete in Discord; give the others their messages
        (those found in the channel, else those the journal names)."""
        by_job = _assign(specs, found)
        kept: list[tuple[Entry, JobSpec]] = []
        adopted: list[list[Any] | None] = []
        for (entry, spec), messages in zip(specs, by_job):
            if messages and reply_state([m.content for m in messages]) == "final":
                log.info("job %d was answered before the restart: not answering it again", entry.id)
                for stale in messages[:-1]:  # a note or streamed text beside the final reply
                    if _stale(stale.content):
                        with contextlib.suppress(Exception):
                            await stale.delete()
                await self._forget(entry.id)
                self._log(spec, "answered", None, time.perf_counter())
                continue
            kept.append((entry, spec))
            if spec.kind == "interaction":
                # part 0 is always the original response; an empty list still marks a replay
                # (the original response is read before answering)
                later = messages[1:] if messages else [entry.parts.get(i) for i in range(1, max(entry.parts, default=0) + 1)]
                adopted.append([ORIGINAL, *later] if later else [])
            elif messages:
                adopted.append(messages)
            elif entry.parts:
                adopted.append([entry.note_id, *(entry.parts.get(i) for i in range(1, max(entry.parts) + 1))])
            else:
                adopted.append(None)
        return kept, adopted

    async def _replay_received(self, entry: Entry, found: dict[int, list[Any]]) -> asyncio.Task[None] | None:
        """A message the previous process received but had not made into jobs: read it
        again from Discord and take it from the start (refused or answered as it would
        have been), unless it was answered or refused already."""
        import discord

        seen = entry.seen or {}
        channel_id, message_id = int(seen["channel_id"]), int(seen["message_id"])
        replies = found.get(message_id, [])
        if replies and reply_state([m.content for m in replies]) == "final":
            log.info("message %s was answered before the restart: not answering it again", message_id)
            await self._forget(entry.id)
            return None
        state = self.settings.state
        age = time.time() - float(seen.get("created", 0))
        try:
            channel = self.client.get_channel(channel_id) or await self.client.fetch_channel(channel_id)
            if entry.crashes >= state.max_crashes or age > state.replay_max_age_s:
                log.error("not replaying message %s of user %s (%d crash(es), %.1f h old): telling them",
                          message_id, seen.get("user_id"), entry.crashes, age / 3600)
                message = channel.get_partial_message(message_id)  # type: ignore[union-attr]
                replier = MessageReplier(message, nonce=nonce_key("refusal", channel_id, message_id))
                await deliver_safely(replier, [friendly(GAVE_UP, guild_locale(channel))])
                await self._forget(entry.id)
                return None
            message = await channel.fetch_message(message_id)  # type: ignore[union-attr]
        except discord.NotFound:
            log.info("message %s was deleted before the restart: nothing to answer", message_id)
            await self._forget(entry.id)
            return None
        except Exception as exc:  # no access, the network: the row stays for the next start
            log.warning("could not read message %s again after the restart: %s", message_id, exc)
            return None
        if self.readmit is None:
            log.warning("message %s cannot be taken again: no front end reads messages", message_id)
            await self._forget(entry.id)
            return None
        log.info("taking message %s again: it was received but not journaled as jobs before the restart", message_id)
        return asyncio.create_task(self.readmit(message, entry.id, True))

    async def _readable(self, group: list[Entry]) -> list[tuple[Entry, JobSpec]]:
        """The group's jobs that can still be answered; the others get their one line now."""
        state = self.settings.state
        kept: list[tuple[Entry, JobSpec]] = []
        for entry in group:
            try:
                spec = JobSpec.from_json(entry.payload)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("dropping unreadable journal entry %d: %s", entry.id, exc)
                await self._forget(entry.id)
                continue
            age = time.time() - spec.created
            if entry.crashes >= state.max_crashes or age > state.replay_max_age_s:
                why = f"in flight during {entry.crashes} crash(es)" if entry.crashes >= state.max_crashes else f"{age / 3600:.1f} h old"
                log.error("not replaying job %d of user %s (%s): telling them", entry.id, spec.user_id, why)
                await self._give_up(entry, spec)
                continue
            kept.append((entry, spec))
        return kept

    async def _give_up(self, entry: Entry, spec: JobSpec) -> None:
        """One line instead of an answer (never for captions: those only get the log line)."""
        started = time.perf_counter()
        outcome: Outcome = "gave_up"
        if spec.lane != "caption":
            try:
                replier, _ = await replier_for(self.client, spec, entry.note_id)
                if not await deliver_safely(replier, self._line(spec, None, GAVE_UP)):
                    outcome = "undeliverable"
            except Exception as exc:  # the channel is gone, no access, the network
                log.warning("cannot tell user %s: %s", spec.user_id, exc)
                outcome = "undeliverable"
        await self._forget(entry.id)
        self._log(spec, outcome, None, started)

    async def _replay_group(
        self, specs: list[tuple[Entry, JobSpec]], adopted: list[list[Any] | None] | None = None
    ) -> asyncio.Task[list[Outcome]] | None:
        """Wait for room in the queue (replays go through its limits), then start the group.
        None when the bot is stopping (the rows stay for the next start)."""
        try:
            reservation = await self._room(len(specs), specs[0][1].lane)
        except QueueClosed:
            return None
        return asyncio.create_task(
            self._run_group([s for _, s in specs], [e.id for e, _ in specs], [e.note_id for e, _ in specs], reservation, adopted)
        )

    async def _room(self, count: int, lane: Lane) -> Reservation:
        """Wait for room in the queue for a replayed message's jobs (QueueClosed: the bot stops)."""
        reservation = await self.runtime.reserve_when_room(count, lane=lane)
        assert reservation is not None  # no timeout: it waits until there is room
        return reservation

    async def close(self) -> None:
        if self._replay is not None and not self._replay.done():
            self._replay.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._replay

    # -- the one log line ---------------------------------------------------------------------

    def _log(self, spec: JobSpec, outcome: str, answer: Answer | None, started: float) -> None:
        log_job(self.outcomes, spec.kind, spec.user_id, spec.channel_id, outcome, answer, time.perf_counter() - started)


def reply_state(contents: Sequence[str]) -> Literal["none", "note", "partial", "final"]:
    """How far a reply (its messages' texts, oldest first) got: a complete reply ends in
    the footer or in one warning line, with no cursor and no place-in-line note."""
    if not contents:
        return "none"
    last = contents[-1].rstrip()
    if last.startswith(BUSY_MARK):
        return "note"
    if last.endswith(CURSOR.strip()):
        return "partial"
    lines = last.split("\n")
    if any(line.startswith("-# ⏱") for line in lines) or any(line.startswith(WARN) for line in lines):
        return "final"
    return "partial"  # a part of a longer answer whose last part never came


def _stale(content: str) -> bool:
    """A message no complete reply keeps: a place-in-line note, or text still streaming."""
    content = content.rstrip()
    return content.startswith(BUSY_MARK) or content.endswith(CURSOR.strip())


def _assign(specs: Sequence[tuple[Entry, JobSpec]], found: dict[int, list[Any]]) -> list[list[Any]]:
    """Share the replies found for each question among its jobs (one per image).

    A single job takes them all.  Several jobs of one message label their
    replies: a labelled message starts that job's messages, an unlabelled
    one continues the last job seen, and place-in-line notes belong to the first."""
    out: list[list[Any]] = [[] for _ in specs]
    by_question: dict[int, list[int]] = {}
    for i, (_, spec) in enumerate(specs):
        target = _target(spec)
        if target is not None:
            by_question.setdefault(target[1], []).append(i)
    for question, indexes in by_question.items():
        messages = found.get(question, [])
        if len(indexes) == 1:
            out[indexes[0]] = list(messages)
            continue
        current = indexes[0]
        for message in messages:
            content = message.content or ""
            if content.startswith(BUSY_MARK):
                out[indexes[0]].append(message)
                continue
            for i in indexes:
                label = specs[i][1].label
                if label and content.startswith(label):
                    current = i
                    break
            out[current].append(message)
    return out


def _target(spec: JobSpec) -> tuple[int, int] | None:
    """Where a job's earlier replies are: (channel id, the question's or the interaction's id)."""
    if spec.kind == "message" and spec.message_id is not None:
        return spec.channel_id, spec.message_id
    if spec.kind == "interaction" and spec.interaction_id is not None and spec.channel_id:
        return spec.channel_id, spec.interaction_id
    return None


def _groups(entries: Sequence[Entry]) -> list[list[Entry]]:
    groups: dict[int, list[Entry]] = {}
    for entry in entries:
        groups.setdefault(entry.group, []).append(entry)
    return list(groups.values())


def log_job(
    outcomes: Counter[str], kind: str, user_id: int | None, channel_id: int | None, outcome: str, answer: Answer | None, seconds: float
) -> None:
    """One line per question: who, where, how it ended, timings. Never the content."""
    outcomes[outcome] += 1
    job: dict[str, Any] = {"kind": kind, "user": user_id, "channel": channel_id, "outcome": outcome, "seconds": round(seconds, 3)}
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
