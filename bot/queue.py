"""The inference queue: bounded, fair per user, one supervised consumer per engine.

Admission comes first and costs nothing: :meth:`InferenceQueue.reserve`
checks the per-user, per-minute and queue-size limits and holds places in
line for a whole message (all its images) before anything is downloaded or
decoded; it raises :class:`Refused` (``str(exc)`` is fit for the user).
``submit(request, reservation=...)`` then turns one held place into a job and
returns a :class:`JobHandle` that knows its place in line and whose
``result()`` is the :class:`~bot.engine.base.Answer`.  A place that is not
used (the download failed) goes back with ``reservation.release_one()``; the
user's count goes back with ``reservation.close()``.

Two lanes: ``question`` (people asking) and ``caption`` (automatic captions),
each with its own size cap.  A free engine always takes a waiting question
before a caption, so captions cannot starve questions.

Each engine gets one consumer task and one dedicated worker thread, so an
engine is never called twice at once and the event loop never blocks on the
model.  An engine with ``slots`` > 1 (the local engine with
``model.parallel``) gets that many consumers: it decodes their answers
together in its own single thread, and a job waits in line until a slot is
free.  An exception in one job goes to that job's caller only; a
consumer that dies anyway is logged and restarted (its job goes back to the
front of the line).  A probe that raises counts as "still down".

A job can be stopped by its asker (:meth:`JobHandle.stop`): a waiting one
leaves the line at once, a running one ends at its next token and its engine
takes the next job.  :meth:`JobHandle.eta_s` estimates how long a waiting job
still waits, from each engine's recent service times (its slots and every
engine that is up included).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import statistics
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

from bot.engine.base import Answer, EndpointDown, Engine, EngineError, VisionRequest
from bot.reply import ENGINES_DOWN, QUEUE_FULL, RESTARTING, STOPPED, TOO_FAST, TOO_MANY_PENDING

log = logging.getLogger(__name__)

Lane = Literal["question", "caption"]
LANES: tuple[Lane, ...] = ("question", "caption")  # in the order a free engine looks at them


class Refused(Exception):
    """The queue will not take this job.  ``str(exc)`` is fit for the user."""


class QueueClosed(Refused):
    """The queue is shutting down; raised by ``submit`` and by unfinished jobs' results.

    ``parked``: the job was not answered because the bot is stopping, and it
    may be answered after the restart (it stays in the journal).
    """

    def __init__(self, reason: str, *, parked: bool = False) -> None:
        super().__init__(reason)
        self.parked = parked


class JobCancelled(Exception):
    """``result()`` of a job that was cancelled before it ran."""


class Reservation:
    """Places in line held for one message's jobs, and the asker's count."""

    def __init__(self, queue: InferenceQueue, user_id: int | str | None, lane: Lane, slots: int) -> None:
        self._queue = queue
        self.user_id = user_id
        self.lane = lane
        self.slots = slots
        self.closed = False

    def take_one(self) -> None:
        if self.slots <= 0:
            raise RuntimeError("this reservation has no place left")
        self.slots -= 1
        self._queue._reserved[self.lane] -= 1

    def release_one(self) -> None:
        """Give back one unused place (its job ended before reaching the queue)."""
        if self.slots > 0:
            self.take_one()

    def close(self) -> None:
        """The message's jobs are all over: give back what is left, and the asker's count."""
        if self.closed:
            return
        self.closed = True
        while self.slots:
            self.take_one()
        self._queue._release_user(self.user_id)


@dataclass(eq=False)
class _Job:
    id: int
    reservation: Reservation
    request: VisionRequest
    future: asyncio.Future[Answer]
    #: the reservation belongs to this job alone (submit without one): closed when it ends
    owns_reservation: bool = False
    submitted: float = field(default_factory=time.perf_counter)
    attempts: int = 0  # engines that went down while running it
    #: set when an engine takes it
    started: asyncio.Event = field(default_factory=asyncio.Event)
    #: called on the event loop with each piece of text as it is generated
    on_text: Callable[[str], None] | None = None
    #: called on the event loop when the job starts again on another engine (drop the text so far)
    on_restart: Callable[[], None] | None = None
    #: its asker stopped it: a running generation ends at its next token
    stop_requested: bool = False
    #: the engine that runs it, and since when (perf_counter)
    engine: str = ""
    began: float = 0.0

    @property
    def lane(self) -> Lane:
        return self.reservation.lane


class JobHandle:
    """The caller's view of one accepted job."""

    def __init__(self, queue: InferenceQueue, job: _Job, position: int) -> None:
        self._queue = queue
        self._job = job
        self.id = job.id
        #: Jobs ahead of this one when it was accepted (running ones included)
        #: when it has to wait; 0 means an engine was free and it starts at once.
        self.position = position

    def current_position(self) -> int | None:
        """Jobs ahead of this one now; None once it has started or finished."""
        return self._queue._position_of(self._job)

    @property
    def done(self) -> bool:
        return self._job.future.done()

    async def started(self) -> None:
        """Return once an engine has taken the job (never, if it ends first)."""
        await self._job.started.wait()

    async def result(self) -> Answer:
        """Wait for the answer.  Raises the engine's error, JobCancelled or QueueClosed."""
        return await asyncio.shield(self._job.future)

    def cancel(self) -> bool:
        """Drop the job if it has not started yet.  True if it was dropped."""
        return self._queue._cancel(self._job)

    def stop(self) -> bool:
        """The asker cancels: a waiting job is dropped at once, a running one ends at its
        next token (``result()`` raises :class:`JobCancelled` either way).  False when
        it had already finished."""
        if self._job.future.done():
            return False
        if self.cancel():
            return True
        self._job.stop_requested = True
        return True

    def eta_s(self) -> float | None:
        """About how long until an engine takes this waiting job (None: started, or no
        service time measured yet)."""
        return self._queue._eta_of(self._job)


@dataclass(frozen=True, slots=True)
class QueueStats:
    depth: int  # waiting, not yet started (both lanes)
    busy: int  # jobs being answered right now (one per engine, or per slot with model.parallel)
    engines: int
    served: int
    failed: int
    cancelled: int
    refused: int
    p50_s: float | None
    p95_s: float | None
    captions_waiting: int = 0


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


def _slots(engine: Engine) -> int:
    """Answers an engine decodes at once (``slots``, from ``model.parallel``); 1 for most."""
    slots = getattr(engine, "slots", 1)
    return slots if isinstance(slots, int) and slots > 1 else 1


class InferenceQueue:
    def __init__(
        self,
        engines: Engine | Sequence[Engine],
        *,
        max_size: int,
        per_user: int,
        per_user_per_minute: int = 0,
        caption_max_size: int | None = None,
        latency_window: int = 200,
        clock: Callable[[], float] = time.monotonic,
        max_attempts: int = 3,
        retry_s: float = 2.0,
    ) -> None:
        self._engines: list[Engine] = [engines] if isinstance(engines, Engine) else list(engines)
        if not self._engines:
            raise ValueError("an InferenceQueue needs at least one engine")
        self.max_size = max_size
        self.caption_max_size = caption_max_size if caption_max_size is not None else max_size
        self.per_user = per_user
        self.per_user_per_minute = per_user_per_minute
        self._clock = clock
        self.max_attempts = max_attempts
        self.retry_s = retry_s
        #: engine name -> since when it has been out (perf_counter seconds)
        self.down: dict[str, float] = {}
        #: called with every answer (metrics); must not raise or block
        self.listeners: list[Callable[[Answer], None]] = []
        self._recent: dict[int | str, deque[float]] = {}
        self._last_sweep = clock()
        self._waiting: dict[Lane, deque[_Job]] = {lane: deque() for lane in LANES}
        self._reserved: Counter[Lane] = Counter()
        self._running: set[_Job] = set()
        self._per_user: Counter[int | str] = Counter()
        self._ids = itertools.count(1)
        self._wakeup: asyncio.Event | None = None
        self._closing: asyncio.Event | None = None
        self._consumers: list[asyncio.Task[None]] = []
        self._executors: list[ThreadPoolExecutor] = []
        self._closed = False
        self._parking = False
        #: set when stopping: running generations end at their next token
        self._stop_now = False
        self.served = 0
        self.failed = 0
        self.cancelled = 0
        self.refused = 0
        self.restarts = 0
        self.latencies: deque[float] = deque(maxlen=latency_window)
        #: seconds an engine sat idle between two jobs while the next one was already waiting
        self.idle_gaps: deque[float] = deque(maxlen=latency_window)
        #: engine name -> its recent service times (a job's start to its end), for estimates
        self.service_s: dict[str, deque[float]] = {}

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Start one supervised consumer per engine (the engines must already be loaded)."""
        if self._consumers:
            return
        self._wakeup = asyncio.Event()
        self._closing = asyncio.Event()
        for index, engine in enumerate(self._engines):
            # An engine with N slots (model.parallel) decodes N answers together in its
            # own thread: N consumers hand it jobs, each waiting for its answer in a thread.
            slots = _slots(engine)
            executor = ThreadPoolExecutor(max_workers=slots, thread_name_prefix=f"engine-{index}")
            self._executors.append(executor)
            for slot in range(slots):
                name = f"llava-consumer-{index}" + (f"-{slot}" if slots > 1 else "")
                self._consumers.append(asyncio.create_task(self._supervise(engine, executor), name=name))

    async def close(self, reason: str = RESTARTING, *, park: bool = False) -> None:
        """Refuse new jobs, end waiting ones with ``QueueClosed(reason, parked=park)``,
        let running ones finish (or stop them with :meth:`stop_running`)."""
        self._closed = True
        self._parking = park
        if self._closing is not None:
            self._closing.set()
        for lane in LANES:
            waiting = self._waiting[lane]
            while waiting:
                self._end(waiting.popleft(), QueueClosed(reason, parked=park))
        if self._wakeup is not None:
            self._wakeup.set()
        if self._consumers:
            await asyncio.gather(*self._consumers, return_exceptions=True)
        for executor in self._executors:
            executor.shutdown(wait=True)
        self._consumers.clear()
        self._executors.clear()

    def stop_running(self) -> None:
        """Stop the running generations at their next token (a bounded shutdown).
        Their jobs end with ``QueueClosed(parked=...)`` as set by :meth:`close`."""
        self._stop_now = True

    @property
    def closed(self) -> bool:
        return self._closed

    # -- producer side ----------------------------------------------------------

    def reserve(self, user_id: int | str | None, count: int = 1, *, lane: Lane = "question") -> Reservation:
        """Hold ``count`` places for one message's jobs, or raise :class:`Refused` at once.

        ``user_id`` None skips the per-user limits (captions, replayed jobs)."""
        if self._closed:
            raise QueueClosed(RESTARTING)
        if count < 1:
            raise ValueError("count must be at least 1")
        if user_id is not None:
            self._check_user(user_id)
        cap = self.max_size if lane == "question" else self.caption_max_size
        if len(self._waiting[lane]) + self._reserved[lane] + count > cap:
            self.refused += 1
            raise Refused(QUEUE_FULL.format(cap=cap))
        self._reserved[lane] += count
        if user_id is not None:
            self._per_user[user_id] += 1
            if self.per_user_per_minute:
                self._recent.setdefault(user_id, deque()).append(self._clock())
        return Reservation(self, user_id, lane, count)

    def _check_user(self, user_id: int | str) -> None:
        if self._per_user[user_id] >= self.per_user:
            self.refused += 1
            raise Refused(TOO_MANY_PENDING.format(count=self._per_user[user_id]))
        if self.per_user_per_minute:
            self._check_rate(user_id)

    def _release_user(self, user_id: int | str | None) -> None:
        if user_id is None:
            return
        self._per_user[user_id] -= 1
        if self._per_user[user_id] <= 0:
            del self._per_user[user_id]

    def submit(
        self,
        request: VisionRequest,
        *,
        user_id: int | str | None = None,
        reservation: Reservation | None = None,
        on_text: Callable[[str], None] | None = None,
        on_restart: Callable[[], None] | None = None,
    ) -> JobHandle:
        """Turn a held place into a job (without ``reservation``: reserve one now).

        ``on_text`` is called on the event loop with each piece of the answer as the
        engine generates it, in order, all before ``result()`` resolves; the engine
        never waits for it.  ``on_restart``: the job went to another engine after its
        first one went down, and its text starts again."""
        if self._closed:
            raise QueueClosed(RESTARTING)
        if self._wakeup is None:
            raise RuntimeError("InferenceQueue.start() was not called")
        owns = reservation is None
        if reservation is None:
            reservation = self.reserve(user_id, 1)
        reservation.take_one()
        job = _Job(next(self._ids), reservation, request, asyncio.get_running_loop().create_future(), owns_reservation=owns)
        job.on_text, job.on_restart = on_text, on_restart
        position = self._ahead(job.lane)
        self._waiting[job.lane].append(job)
        self._wakeup.set()
        return JobHandle(self, job, position if self._must_wait(position) else 0)

    def _ahead(self, lane: Lane) -> int:
        """Jobs that start before a new job of ``lane`` (running ones included)."""
        waiting = len(self._waiting["question"])
        if lane == "caption":
            waiting += len(self._waiting["caption"])
        return waiting + len(self._running)

    def _must_wait(self, ahead: int) -> bool:
        """Whether a job with ``ahead`` jobs before it waits: every slot of every engine that is up is taken."""
        up = [e for e in self._engines if e.info.name not in self.down] or self._engines
        return ahead >= sum(_slots(e) for e in up)

    def _check_rate(self, user_id: int | str) -> None:
        now = self._clock()
        if now - self._last_sweep >= 60.0:
            self._sweep_rates(now)
        recent = self._recent.get(user_id)
        if recent is None:
            return
        while recent and now - recent[0] >= 60.0:
            recent.popleft()
        if not recent:
            del self._recent[user_id]  # keeps the table as small as the active users
            return
        if len(recent) >= self.per_user_per_minute:
            self.refused += 1
            wait = max(1, round(60.0 - (now - recent[0])))
            raise Refused(TOO_FAST.format(limit=self.per_user_per_minute, wait=wait))

    def _sweep_rates(self, now: float) -> None:
        """Forget users who asked nothing in the last minute (the table stays bounded)."""
        self._last_sweep = now
        for user_id in [u for u, times in self._recent.items() if not times or now - times[-1] >= 60.0]:
            del self._recent[user_id]

    @property
    def rate_table_size(self) -> int:
        return len(self._recent)

    def _position_of(self, job: _Job) -> int | None:
        waiting = self._waiting[job.lane]
        try:
            index = waiting.index(job)
        except ValueError:
            return None
        if job.lane == "caption":
            index += len(self._waiting["question"])
        return index + len(self._running)

    def _eta_of(self, job: _Job) -> float | None:
        """When the job would start if each engine slot keeps its recent pace: the running
        jobs' remaining time, then the jobs ahead of it handed to whichever slot frees first."""
        ahead = self._position_of(job)
        if ahead is None:
            return None
        pace = {name: statistics.fmean(times) for name, times in self.service_s.items() if times}
        if not pace:
            return None
        default = statistics.fmean(pace.values())
        now = time.perf_counter()
        up = [e for e in self._engines if e.info.name not in self.down] or self._engines
        free: list[tuple[float, float]] = []  # (when a slot is free, the pace of its engine)
        for engine in up:
            name = engine.info.name
            mean = pace.get(name, default)
            running = [j for j in self._running if j.engine == name]
            free += [(max(0.0, mean - (now - j.began)), mean) for j in running[: _slots(engine)]]
            free += [(0.0, mean)] * max(0, _slots(engine) - len(running))
        waiting_ahead = ahead - len(self._running)
        for _ in range(max(0, waiting_ahead)):
            free.sort()
            at, mean = free[0]
            free[0] = (at + mean, mean)
        return min(at for at, _ in free)

    def _cancel(self, job: _Job) -> bool:
        try:
            self._waiting[job.lane].remove(job)
        except ValueError:
            return False
        self.cancelled += 1
        self._settle(job, error=JobCancelled(f"job {job.id} was cancelled"))
        return True

    # -- consumer side ----------------------------------------------------------

    async def _next_job(self) -> _Job | None:
        wakeup = self._wakeup
        if wakeup is None:
            raise RuntimeError("InferenceQueue.start() was not called")
        # Single event loop: nothing runs between the check and clear(), so a
        # submit cannot be missed.  Every idle consumer wakes; one takes the job.
        while not self._closed and not any(self._waiting.values()):
            wakeup.clear()
            await wakeup.wait()
        for lane in LANES:
            if self._waiting[lane]:
                job = self._waiting[lane].popleft()
                self._running.add(job)
                job.started.set()
                return job
        return None

    async def _supervise(self, engine: Engine, executor: ThreadPoolExecutor) -> None:
        """Run the engine's consumer; if it dies of a bug, log it and start it again."""
        current: list[_Job] = []
        while True:
            try:
                await self._consume(engine, executor, current)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                self.restarts += 1
                log.exception("the consumer of engine %s died; restarting it", engine.info.name)
                for job in current:
                    if job in self._running and not job.future.done():
                        self._running.discard(job)
                        self._waiting[job.lane].appendleft(job)
                current.clear()
                if self._wakeup is not None:
                    self._wakeup.set()
                await asyncio.sleep(0.5)

    async def _consume(self, engine: Engine, executor: ThreadPoolExecutor, current: list[_Job]) -> None:
        run = self._runner(engine)
        while True:
            job = await self._next_job()
            if job is None:
                return
            current[:] = [job]  # until it is settled: the supervisor puts it back if we die
            await self._run_job(engine, executor, run, job)
            current.clear()

    async def _run_job(self, engine: Engine, executor: ThreadPoolExecutor, run: Callable[[_Job], Answer], job: _Job) -> None:
        started = time.perf_counter()
        job.engine, job.began = engine.info.name, started
        try:
            answer = await asyncio.get_running_loop().run_in_executor(executor, run, job)
        except asyncio.CancelledError:
            self._finish(job, error=QueueClosed(STOPPED, parked=self._parking))
            raise
        except EndpointDown as exc:
            self._put_back(job, engine, exc)
            await self._recover(engine)
            return
        except Exception as exc:  # an engine error belongs to this job only
            # EngineError is expected (the request cannot be served); anything else is a bug: traceback
            log.warning("job %d failed on %s: %s", job.id, engine.info.name, exc, exc_info=not isinstance(exc, EngineError))
            self._finish(job, error=exc)
            return
        if self._stop_now and answer.finish_reason == "cancelled":
            self._finish(job, error=QueueClosed(STOPPED, parked=self._parking))
            return
        if job.stop_requested and answer.finish_reason == "cancelled":
            self.cancelled += 1
            self._finish(job, error=JobCancelled(f"job {job.id} was cancelled by its asker"))
            return
        answer.timings.queue_wait_s = started - job.submitted
        answer.engine = engine.info.name
        self.service_s.setdefault(engine.info.name, deque(maxlen=20)).append(time.perf_counter() - started)
        self._finish(job, answer=answer)

    def _runner(self, engine: Engine) -> Callable[[_Job], Answer]:
        """The function the engine's thread runs for one job."""
        loop = asyncio.get_running_loop()
        last_end: list[float] = []  # when the engine thread last finished a job

        def run(job: _Job) -> Answer:
            def should_stop() -> bool:
                return self._stop_now or job.stop_requested

            begin = time.perf_counter()
            if last_end and job.submitted < last_end[0]:
                # This job was already waiting: the engine sat idle for this long.
                self.idle_gaps.append(begin - last_end[0])
            on_text: Callable[[str], None] | None = None
            if job.on_text is not None:
                receiver = job.on_text
                # to the loop, in order; the engine thread never waits for the receiver
                def on_text(text: str) -> None:
                    loop.call_soon_threadsafe(receiver, text)
            try:
                return engine.generate(job.request, should_stop=should_stop, on_text=on_text)
            finally:
                last_end[:] = [time.perf_counter()]

        return run

    def _put_back(self, job: _Job, engine: Engine, exc: Exception) -> None:
        """An engine went down under this job: give it to the next free engine, at the front."""
        job.attempts += 1
        name = engine.info.name
        self.down.setdefault(name, time.perf_counter())
        if job.attempts >= self.max_attempts or self._closed:
            log.error("job %d failed on %d engine(s); giving up: %s", job.id, job.attempts, exc)
            self._finish(job, error=EngineError(ENGINES_DOWN))
            return
        log.warning("engine %s is down (%s); job %d goes back to the front of the queue", name, exc, job.id)
        if job.on_restart is not None:
            try:
                job.on_restart()
            except Exception:
                log.exception("a restart callback failed")
        self._running.discard(job)
        self._waiting[job.lane].appendleft(job)
        if self._wakeup is not None:
            self._wakeup.set()

    async def _probe(self, engine: Engine) -> bool:
        probe = getattr(engine, "probe", None)
        if probe is None:
            return True
        try:
            return bool(await asyncio.to_thread(probe))
        except Exception as exc:  # a probe that raises: the engine is still down
            log.warning("probing engine %s failed: %s", engine.info.name, exc)
            return False

    async def _recover(self, engine: Engine) -> None:
        """Wait until a downed engine answers again (probing with back-off)."""
        name = engine.info.name
        delay = self.retry_s
        closing = self._closing
        while not self._closed and closing is not None:
            try:
                await asyncio.wait_for(closing.wait(), delay)
                return  # closing: stop probing
            except TimeoutError:
                pass
            if await self._probe(engine):
                break
            delay = min(delay * 2, 30.0)
        if name in self.down:
            log.info("engine %s is back after %.1f s", name, time.perf_counter() - self.down.pop(name))

    def _finish(self, job: _Job, *, answer: Answer | None = None, error: BaseException | None = None) -> None:
        self._running.discard(job)
        if answer is not None:
            self.served += 1
            self.latencies.append(time.perf_counter() - job.submitted)
            for listener in self.listeners:
                try:
                    listener(answer)
                except Exception:
                    log.exception("queue listener failed")
        elif not isinstance(error, JobCancelled):  # a cancel is counted where it happens
            self.failed += 1
        self._settle(job, answer=answer, error=error)

    def _end(self, job: _Job, error: BaseException) -> None:
        """A waiting job ends without running (the queue closes)."""
        self._settle(job, error=error)

    def _settle(self, job: _Job, *, answer: Answer | None = None, error: BaseException | None = None) -> None:
        if job.owns_reservation:
            job.reservation.close()
        if job.future.done():
            return
        if answer is not None:
            job.future.set_result(answer)
        else:
            job.future.set_exception(error or RuntimeError("job failed"))

    # -- status -------------------------------------------------------------

    def stats(self) -> QueueStats:
        lat = sorted(self.latencies)
        return QueueStats(
            depth=sum(len(w) for w in self._waiting.values()),
            busy=len(self._running),
            engines=len(self._engines),
            served=self.served,
            failed=self.failed,
            cancelled=self.cancelled,
            refused=self.refused,
            p50_s=_percentile(lat, 50),
            p95_s=_percentile(lat, 95),
            captions_waiting=len(self._waiting["caption"]),
        )
