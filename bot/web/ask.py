"""``POST /api/ask``: one question, answered as server-sent events.

The steps, in order: hold a place in line for the client (its address is
the user, so the per-user limits apply before anything is read), read the
form with every part capped, prepare the image (or take the conversation's),
queue the job, then stream ``queued`` / ``delta`` events and end with
exactly one ``done`` or ``error``.  A client that goes away while its job
waits drops the job; a running job finishes and only its reply is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from bot.engine.base import Answer, EngineError, StageTimings, VisionRequest
from bot.images import ImageError
from bot.media import PreparedMedia
from bot.queue import JobCancelled, JobHandle, Refused, Reservation
from bot.reply import CONVERSATION_EXPIRED, OUR_FAULT, WEB_NO_IMAGE, answer_body, friendly
from bot.runtime import Runtime
from bot.timing import footer
from bot.web.conversations import Conversation, Conversations
from bot.web.form import FormError, read_form
from bot.web.sse import EventStream

log = logging.getLogger(__name__)

#: how often a waiting request looks at its place in line and at its client
POLL_S = 0.2
#: a comment line this often while nothing else is sent
PING_S = 10.0


class UserError(Exception):
    """Ends the request with one ``error`` event; ``str(exc)`` is the raw reason,
    ``code`` a word for scripts (sent beside the message when set)."""

    def __init__(self, reason: str, code: str | None = None) -> None:
        super().__init__(reason)
        self.code = code


@dataclass(slots=True)
class Job:
    """What a request asks once its form is read."""

    request: VisionRequest
    image: PreparedMedia
    conversation: Conversation | None


@dataclass(slots=True)
class _Progress:
    """What a waiting request last told its client."""

    shown: int  # the place in line last sent (0: none)
    quiet_since: float  # when something was last sent


class TextBuffer:
    """The answer's text as the engine hands it out, waiting to be sent."""

    def __init__(self) -> None:
        self.pending: list[str] = []
        self.restarted = False
        self.changed = asyncio.Event()

    def add(self, text: str) -> None:
        self.pending.append(text)
        self.changed.set()

    def restart(self) -> None:
        """The job went to another engine: its text starts again."""
        self.pending.clear()
        self.restarted = True
        self.changed.set()

    def take(self) -> tuple[bool, str]:
        """(restarted since the last take, text since the last take)."""
        restarted, text = self.restarted, "".join(self.pending)
        self.pending.clear()
        self.restarted = False
        self.changed.clear()
        return restarted, text


def client_id(request: web.Request) -> str:
    """The user a request counts against: its address."""
    return request.remote or "web"


def timings_dict(timings: StageTimings) -> dict[str, float | int]:
    """Stage seconds and token counts, rounded for people."""
    values: dict[str, float | int] = {
        f.name: (round(v, 4) if isinstance(v, float) else v)
        for f in dataclasses.fields(timings)
        for v in [getattr(timings, f.name)]
    }
    values["tokens_per_s"] = round(timings.tokens_per_s, 2)
    return values


class AskHandler:
    """The ``/api/ask`` route over one :class:`~bot.runtime.Runtime`."""

    def __init__(self, runtime: Runtime, conversations: Conversations) -> None:
        self.runtime = runtime
        self.conversations = conversations
        #: waiters that close a job's reservation when it ends (kept referenced)
        self._closers: set[asyncio.Task[None]] = set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The route: always an event stream, with exactly one ``done`` or ``error``."""
        stream = EventStream(request)
        await stream.open()
        try:
            await self._answer(request, stream)
        finally:
            await stream.close()
        return stream.response

    async def _answer(self, request: web.Request, stream: EventStream) -> None:
        who = client_id(request)
        try:
            reservation = self.runtime.reserve(who, 1)  # before anything is read
        except Refused as exc:  # queue full, too many from this client, stopping
            await self._error(stream, str(exc), who)
            return
        queued = await self._queue(request, stream, reservation, who)
        if queued is not None:
            handle, text, job = queued
            self._close_when_done(handle, reservation)
            await self._stream(stream, handle, text, job, who)

    async def _queue(
        self, request: web.Request, stream: EventStream, reservation: Reservation, who: str
    ) -> tuple[JobHandle, TextBuffer, Job] | None:
        """Read the form, prepare the image and queue the job; on any failure give
        the place back and say why (None)."""
        failure: tuple[str, str | None] | None
        try:
            job = await self._read_job(request)
            text = TextBuffer()
            handle = self.runtime.submit(job.request, reservation=reservation, on_text=text.add, on_restart=text.restart)
            return handle, text, job
        except (UserError, FormError, ImageError, Refused) as exc:
            failure = (str(exc), getattr(exc, "code", None))
        except ConnectionError as exc:  # the client left during the upload: nobody to tell
            log.info("web question from %s: the client went away during the upload (%s)", who, exc)
            failure = None
        except Exception:  # a bug: the traceback to the log, one line to the client
            log.exception("web question from %s failed before reaching the queue", who)
            failure = (OUR_FAULT, None)
        except BaseException:
            reservation.close()
            raise
        reservation.close()
        if failure is not None:
            await self._error(stream, failure[0], who, failure[1])
        return None

    async def _read_job(self, request: web.Request) -> Job:
        """The form, the image (prepared, or the conversation's) and the request to queue."""
        gen = self.runtime.settings.generation
        form = await read_form(request, self.runtime.limits, gen.max_question_chars)
        conversation: Conversation | None = None
        if form.image is not None:  # a new image starts a new conversation
            image = await self.runtime.prepare_media(form.image)  # an animation: its frames
        elif form.conversation is not None:
            conversation = self.conversations.get(form.conversation)
            if conversation is None:
                raise UserError(CONVERSATION_EXPIRED, code="conversation_expired")
            image = conversation.image
        else:
            raise UserError(WEB_NO_IMAGE)
        history = conversation.history() if conversation is not None else ()
        vision = self.runtime.request(image.images, form.question, max_tokens=form.max_tokens, history=history)
        return Job(vision, image, conversation)

    def _close_when_done(self, handle: JobHandle, reservation: Reservation) -> None:
        """Give the client's place back once the job has ended, however it ends."""

        async def close() -> None:
            with contextlib.suppress(Exception):
                await handle.result()
            reservation.close()

        task = asyncio.create_task(close(), name=f"web-job-{handle.id}")
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    async def _stream(self, stream: EventStream, handle: JobHandle, text: TextBuffer, job: Job, who: str) -> None:
        """Follow the job to its end and send the one ``done`` or ``error``."""
        try:
            answer = await self._follow(stream, handle, text)
        except JobCancelled:
            return  # its client went away while it waited
        except Refused as exc:  # the queue closed under it
            await self._error(stream, str(exc), who)
            return
        except EngineError as exc:
            await self._error(stream, str(exc), who)
            return
        except Exception:
            log.exception("web question from %s failed", who)
            await self._error(stream, OUR_FAULT, who)
            return
        if answer is not None:
            await self._done(stream, answer, job, who)

    async def _follow(self, stream: EventStream, handle: JobHandle, text: TextBuffer) -> Answer | None:
        """Send the place in line and the text until the answer is there.
        None when the client went away (a waiting job is dropped)."""
        result = asyncio.ensure_future(handle.result())
        progress = _Progress(shown=handle.position, quiet_since=asyncio.get_running_loop().time())
        if progress.shown:
            await stream.send("queued", {"position": progress.shown})
        try:
            while not result.done():
                waker = asyncio.ensure_future(text.changed.wait())
                await asyncio.wait({result, waker}, timeout=POLL_S, return_when=asyncio.FIRST_COMPLETED)
                waker.cancel()
                await self._report(stream, handle, text, progress)
                if stream.gone:
                    if handle.cancel():
                        log.info("web job %d dropped: its client went away while it waited", handle.id)
                    return None
            await self._flush(stream, text)
            return result.result()
        except asyncio.CancelledError:  # the server is stopping this handler
            handle.cancel()
            raise
        finally:
            result.cancel()  # only this waiter: the job itself is shielded

    async def _report(self, stream: EventStream, handle: JobHandle, text: TextBuffer, progress: _Progress) -> None:
        """One look at the job: new text, a new place in line, or a ping after a quiet while."""
        now = asyncio.get_running_loop().time()
        if await self._flush(stream, text):
            progress.quiet_since = now
        position = handle.current_position()
        if position and position != progress.shown:
            progress.shown = position
            await stream.send("queued", {"position": position})
            progress.quiet_since = now
        elif now - progress.quiet_since >= PING_S:
            await stream.ping()
            progress.quiet_since = now

    async def _flush(self, stream: EventStream, text: TextBuffer) -> bool:
        """Send the text that arrived since the last flush; True if anything was sent."""
        restarted, piece = text.take()
        if restarted:
            await stream.send("reset", {})
        if piece:
            await stream.send("delta", {"text": piece})
        return restarted or bool(piece)

    async def _done(self, stream: EventStream, answer: Answer, job: Job, who: str) -> None:
        conversation = self.conversations.record(job.conversation, job.image, job.request.question, answer.text.strip())
        data: dict[str, Any] = {
            "conversation": conversation.id,
            "text": answer_body(answer),
            "footer": footer(answer.timings),
            "timings": timings_dict(answer.timings),
            "finish_reason": answer.finish_reason,
        }
        await stream.send("done", data)
        log.info("web question from %s answered: %s", who, data["footer"])

    async def _error(self, stream: EventStream, reason: str, who: str, code: str | None = None) -> None:
        line = friendly(reason)
        data = {"message": line} if code is None else {"message": line, "code": code}
        await stream.send("error", data)
        log.info("web question from %s not answered: %s", who, line)
