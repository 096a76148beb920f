"""The inference queue: bounded, fair per user, one consumer per engine.

``submit()`` either refuses at once (:class:`Refused`, with a reason fit for
the user) or returns a :class:`JobHandle` that knows its place in line and
whose ``result()`` is the :class:`~bot.engine.base.Answer`.

Each engine gets exactly one consumer task and one dedicated worker thread, so
an engine is never called twice at once and the event loop never blocks on
the model.  An exception in one job goes to that job's caller only; the
consumer carries on with the next job.
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

from bot.engine.base import Answer, EndpointDown, Engine, EngineError, VisionRequest

log = logging.getLogger(__name__)


class Refused(Exception):
    """The queue will not take this job.  ``str(exc)`` is fit for the user."""


class QueueClosed(Refused):
    """The queue is shutting down; raised by ``submit`` and by waiting jobs' results."""


class JobCancelled(Exception):
    """``result()`` of a job that was cancelled before it ran."""


@dataclass(eq=False)
class _Job:
    id: int
    user_id: int | str | None
    request: VisionRequest
    future: asyncio.Future[Answer]
    submitted: float = field(default_factory=time.perf_counter)
    attempts: int = 0  # engines that went down while running it


class JobHandle:
    """The caller's view of one accepted job."""

    def __init__(self, queue: InferenceQueue, job: _Job, position: int) -> None:
        self._queue = queue
        self._job = job
        self.id = job.id
        #: Jobs ahead of this one when it was accepted (running ones included);
        #: 0 means an engine was free and it starts at once.
        self.position = position

    def current_position(self) -> int | None:
        """Jobs ahead of this one now; None once it has started or finished."""
        return self._queue._position_of(self._job)

    @property
    def done(self) -> bool:
        return self._job.future.done()

    async def result(self) -> Answer:
        """Wait for the answer.  Raises the engine's error, JobCancelled or QueueClosed."""
        return await asyncio.shield(self._job.future)

    def cancel(self) -> bool:
        """Drop the job if it has not started yet.  True if it was dropped."""
        return self._queue._cancel(self._job)


@dataclass(frozen=True, slots=True)
class QueueStats:
    depth: int  # waiting, not yet started
    busy: int  # engines working right now
    engines: int
    served: int
    failed: int
    cancelled: int
    refused: int
    p50_s: float | None
    p95_s: float | None


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


class InferenceQueue:
    def __init__(
        self,
        engines: Engine | Sequence[Engine],
        *,
        max_size: int,
        per_user: int,
        per_user_per_minute: int = 0,
        latency_window: int = 200,
        clock: Callable[[], float] = time.monotonic,
        max_attempts: int = 3,
        retry_s: float = 2.0,
    ) -> None:
        self._engines: list[Engine] = [engines] if isinstance(engines, Engine) else list(engines)
        if not self._engines:
            raise ValueError("an InferenceQueue needs at least one engine")
        self.max_size = max_size
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
        self._waiting: deque[_Job] = deque()
        self._running: set[_Job] = set()
        self._per_user: Counter[int | str | None] = Counter()
        self._ids = itertools.count(1)
        self._wakeup: asyncio.Event | None = None
        self._consumers: list[asyncio.Task[None]] = []
        self._executors: list[ThreadPoolExecutor] = []
        self._closed = False
        self.served = 0
        self.failed = 0
        self.cancelled = 0
        self.refused = 0
        self.latencies: deque[float] = deque(maxlen=latency_window)
        #: seconds an engine sat idle between two jobs while the next one was already waiting
        self.idle_gaps: deque[float] = deque(maxlen=latency_window)

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Start one consumer per engine (the engines must already be loaded)."""
        if self._consumers:
            return
        self._wakeup = asyncio.Event()
        self._closing = asyncio.Event()
        for index, engine in enumerate(self._engines):
            executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"engine-{index}")
            self._executors.append(executor)
            task = asyncio.create_task(self._consume(engine, executor), name=f"llava-consumer-{index}")
            self._consumers.append(task)

    async def close(self, reason: str = "the bot is restarting, please ask again in a minute") -> None:
        """Refuse new jobs, fail waiting ones with ``reason``, let running ones finish."""
        self._closed = True
        if self._consumers:
            self._closing.set()
        while self._waiting:
            job = self._waiting.popleft()
            self._forget(job)
            if not job.future.done():
                job.future.set_exception(QueueClosed(reason))
        if self._wakeup is not None:
            self._wakeup.set()
        if self._consumers:
            await asyncio.gather(*self._consumers, return_exceptions=True)
        for executor in self._executors:
            executor.shutdown(wait=True)
        self._consumers.clear()
        self._executors.clear()

    # -- producer side ----------------------------------------------------------

    def submit(self, request: VisionRequest, *, user_id: int | str | None = None) -> JobHandle:
        """Accept a job or raise :class:`Refused` at once."""
        if self._closed:
            raise QueueClosed("the bot is restarting, please ask again in a minute")
        if self._wakeup is None:
            raise RuntimeError("InferenceQueue.start() was not called")
        if user_id is not None and self._per_user[user_id] >= self.per_user:
            self.refused += 1
            raise Refused(
                f"you already have {self._per_user[user_id]} question(s) waiting; "
                "please wait for an answer first"
            )
        if user_id is not None and self.per_user_per_minute:
            self._check_rate(user_id)
        if len(self._waiting) >= self.max_size:
            self.refused += 1
            raise Refused(f"the queue is full ({self.max_size} waiting), please try again in a minute")
        loop = asyncio.get_running_loop()
        job = _Job(next(self._ids), user_id, request, loop.create_future())
        position = len(self._waiting) + len(self._running)
        self._waiting.append(job)
        self._per_user[user_id] += 1
        if user_id is not None and self.per_user_per_minute:
            self._recent.setdefault(user_id, deque()).append(self._clock())
        self._wakeup.set()
        return JobHandle(self, job, position)

    def _check_rate(self, user_id: int | str) -> None:
        now = self._clock()
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
            raise Refused(
                f"you can ask {self.per_user_per_minute} questions a minute; please wait {wait} s"
            )

    def _position_of(self, job: _Job) -> int | None:
        try:
            return self._waiting.index(job) + len(self._running)
        except ValueError:
            return None

    def _cancel(self, job: _Job) -> bool:
        try:
            self._waiting.remove(job)
        except ValueError:
            return False
        self._forget(job)
        self.cancelled += 1
        if not job.future.done():
            job.future.set_exception(JobCancelled(f"job {job.id} was cancelled"))
        return True

    def _forget(self, job: _Job) -> None:
        self._per_user[job.user_id] -= 1
        if self._per_user[job.user_id] <= 0:
            del self._per_user[job.user_id]

    # -- consumer side ----------------------------------------------------------

    async def _next_job(self) -> _Job | None:
        wakeup = self._wakeup
        if wakeup is None:
            raise RuntimeError("InferenceQueue.start() was not called")
        # Single event loop: nothing runs between the check and clear(), so a
        # submit cannot be missed.  Every idle consumer wakes; one takes the job.
        while not self._waiting and not self._closed:
            wakeup.clear()
            await wakeup.wait()
        if not self._waiting:
            return None
        job = self._waiting.popleft()
        self._running.add(job)
        return job

    async def _consume(self, engine: Engine, executor: ThreadPoolExecutor) -> None:
        loop = asyncio.get_running_loop()
        # When the engine thread last finished a job (perf_counter seconds).
        last_end: list[float] = []

        def run(job: _Job) -> Answer:  # in the engine's thread
            begin = time.perf_counter()
            if last_end and job.submitted < last_end[0]:
                # This job was already waiting: the engine sat idle for this long.
                self.idle_gaps.append(begin - last_end[0])
            try:
                return engine.generate(job.request)
            finally:
                last_end[:] = [time.perf_counter()]

        while True:
            job = await self._next_job()
            if job is None:
                return
            started = time.perf_counter()
            try:
                answer = await loop.run_in_executor(executor, run, job)
            except asyncio.CancelledError:
                self._finish(job, error=QueueClosed("the bot stopped before answering"))
                raise
            except EndpointDown as exc:
                self._put_back(job, engine, exc)
                await self._recover(engine)
                continue
            except Exception as exc:  # an engine error belongs to this job only
                # EngineError is expected (the request cannot be served); anything else is a bug: traceback
                log.warning("job %d failed on %s: %s", job.id, engine.info.name, exc, exc_info=not isinstance(exc, EngineError))
                self._finish(job, error=exc)
                continue
            answer.timings.queue_wait_s = started - job.submitted
            self._finish(job, answer=answer)

    def _put_back(self, job: _Job, engine: Engine, exc: Exception) -> None:
        """An engine went down under this job: give it to the next free engine, at the front."""
        job.attempts += 1
        name = engine.info.name
        self.down.setdefault(name, time.perf_counter())
        if job.attempts >= self.max_attempts:
            log.error("job %d failed on %d engines in a row; giving up: %s", job.id, job.attempts, exc)
            self._finish(job, error=EngineError("the model servers are not answering, please try again later"))
            return
        log.warning("engine %s is down (%s); job %d goes back to the front of the queue", name, exc, job.id)
        self._running.discard(job)
        self._waiting.appendleft(job)
        if self._wakeup is not None:
            self._wakeup.set()

    async def _recover(self, engine: Engine) -> None:
        """Wait until a downed engine answers again (probing with back-off)."""
        name = engine.info.name
        probe = getattr(engine, "probe", None)
        delay = self.retry_s
        while not self._closed:
            try:
                await asyncio.wait_for(self._closing.wait(), delay)
                return  # closing: stop probing
            except TimeoutError:
                pass
            if probe is None or await asyncio.to_thread(probe):
                break
            delay = min(delay * 2, 30.0)
        if name in self.down:
            log.info("engine %s is back after %.1f s", name, time.perf_counter() - self.down.pop(name))

    def _finish(self, job: _Job, *, answer: Answer | None = None, error: BaseException | None = None) -> None:
        self._running.discard(job)
        self._forget(job)
        if answer is not None:
            self.served += 1
            self.latencies.append(time.perf_counter() - job.submitted)
            for listener in self.listeners:
                try:
                    listener(answer)
                except Exception:
                    log.exception("queue listener failed")
            if not job.future.done():
                job.future.set_result(answer)
        else:
            self.failed += 1
            if not job.future.done():
                job.future.set_exception(error or RuntimeError("job failed"))

    # -- status -------------------------------------------------------------

    def stats(self) -> QueueStats:
        lat = sorted(self.latencies)
        return QueueStats(
            depth=len(self._waiting),
            busy=len(self._running),
            engines=len(self._engines),
            served=self.served,
            failed=self.failed,
            cancelled=self.cancelled,
            refused=self.refused,
            p50_s=_percentile(lat, 50),
            p95_s=_percentile(lat, 95),
        )
