"""InferenceQueue with a fake engine: ordering, exclusivity, refusals, faults."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque

import pytest

from bot.engine.base import Answer, EngineError, EngineInfo, StageTimings, VisionRequest
from bot.queue import InferenceQueue, JobCancelled, QueueClosed, Refused


class FakeEngine:
    """Blocking engine that records calls; ``gate`` lets a test hold a job."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: list[str] = []
        self.active = 0
        self.max_active = 0
        self.threads: set[str] = set()
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(name="fake", model="fake", chat_format="none")

    def load(self) -> None: ...

    def close(self) -> None: ...

    def generate(self, request: VisionRequest, *, should_stop=None, on_text=None) -> Answer:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            self.threads.add(threading.current_thread().name)
            self.gate.wait(5)
            if self.delay:
                time.sleep(self.delay)
            self.calls.append(request.question)
            if request.question.startswith("boom"):
                raise EngineError(f"engine failed on {request.question}")
            return Answer(request.question.upper(), "stop", 1, 1, StageTimings(total_s=self.delay))
        finally:
            with self._lock:
                self.active -= 1


def req(q: str) -> VisionRequest:
    return VisionRequest(images=(), question=q, max_tokens=8)


async def started(engine: FakeEngine, n: int = 1) -> None:
    for _ in range(500):
        if engine.active >= n:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("engine never started")


@pytest.fixture
async def setup():
    engine = FakeEngine()
    queue = InferenceQueue(engine, max_size=3, per_user=2)
    await queue.start()
    yield engine, queue
    engine.gate.set()
    await queue.close()


async def test_answers_in_order_one_at_a_time_in_one_thread():
    engine = FakeEngine(delay=0.01)
    queue = InferenceQueue(engine, max_size=50, per_user=50)
    await queue.start()
    handles = [queue.submit(req(f"q{i}"), user_id=1) for i in range(20)]
    answers = [await h.result() for h in handles]
    await queue.close()
    assert [a.text for a in answers] == [f"Q{i}" for i in range(20)]
    assert engine.calls == [f"q{i}" for i in range(20)]
    assert engine.max_active == 1
    assert len(engine.threads) == 1 and next(iter(engine.threads)).startswith("engine-")
    assert queue.stats().served == 20


async def test_positions_and_queue_wait(setup):
    engine, queue = setup
    engine.gate.clear()
    first = queue.submit(req("a"), user_id=1)
    assert first.position == 0
    await started(engine)
    second = queue.submit(req("b"), user_id=2)
    third = queue.submit(req("c"), user_id=3)
    assert (second.position, third.position) == (1, 2)
    assert third.current_position() == 2
    assert queue.stats().depth == 2 and queue.stats().busy == 1
    await asyncio.sleep(0.05)
    engine.gate.set()
    await first.result()
    assert third.current_position() in (0, 1, None)
    answer = await third.result()
    assert answer.timings.queue_wait_s >= 0.05
    assert third.current_position() is None


async def test_full_queue_refuses_at_once_and_earlier_jobs_complete(setup):
    engine, queue = setup
    engine.gate.clear()
    running = queue.submit(req("r"), user_id="u0")
    await started(engine)
    waiting = [queue.submit(req(f"w{i}"), user_id=f"u{i + 1}") for i in range(3)]
    with pytest.raises(Refused, match=r"the queue is full \(3 waiting\)"):
        queue.submit(req("late"), user_id="u9")
    engine.gate.set()
    texts = [(await h.result()).text for h in [running, *waiting]]
    assert texts == ["R", "W0", "W1", "W2"]
    assert "late" not in engine.calls
    assert queue.stats().refused == 1


async def test_per_user_limit_counts_pending_jobs(setup):
    engine, queue = setup
    engine.gate.clear()
    a = queue.submit(req("a"), user_id=7)
    b = queue.submit(req("b"), user_id=7)
    with pytest.raises(Refused, match="you already have 2 question"):
        queue.submit(req("c"), user_id=7)
    queue.submit(req("other"), user_id=8)  # someone else is not affected
    engine.gate.set()
    await a.result()
    await b.result()
    # once answered, the user may ask again
    assert (await queue.submit(req("d"), user_id=7).result()).text == "D"


async def test_cancel_waiting_job(setup):
    engine, queue = setup
    engine.gate.clear()
    running = queue.submit(req("run"), user_id=1)
    await started(engine)
    doomed = queue.submit(req("doomed"), user_id=2)
    kept = queue.submit(req("kept"), user_id=3)
    assert doomed.cancel() is True
    assert kept.current_position() == 1
    assert running.cancel() is False  # already running
    engine.gate.set()
    with pytest.raises(JobCancelled):
        await doomed.result()
    assert (await kept.result()).text == "KEPT"
    assert "doomed" not in engine.calls
    assert queue.stats().cancelled == 1


async def test_engine_error_reaches_only_its_caller(setup):
    engine, queue = setup
    bad = queue.submit(req("boom 1"), user_id=1)
    good = queue.submit(req("fine"), user_id=2)
    with pytest.raises(EngineError, match="engine failed on boom 1"):
        await bad.result()
    assert (await good.result()).text == "FINE"
    stats = queue.stats()
    assert (stats.served, stats.failed) == (1, 1)


async def test_event_loop_stays_free_while_engine_works():
    engine = FakeEngine(delay=0.5)
    queue = InferenceQueue(engine, max_size=5, per_user=5)
    await queue.start()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    await queue.submit(req("slow"), user_id=1).result()
    task.cancel()
    await queue.close()
    # time.sleep in the engine thread must not stop the loop: 0.5 s of 10 ms ticks
    assert ticks >= 10


async def test_close_tells_waiting_jobs_and_finishes_running(setup):
    engine, queue = setup
    engine.gate.clear()
    running = queue.submit(req("run"), user_id=1)
    await started(engine)
    waiting = queue.submit(req("wait"), user_id=2)
    closing = asyncio.create_task(queue.close("restarting"))
    await asyncio.sleep(0.02)
    with pytest.raises(QueueClosed, match="restarting"):
        await waiting.result()
    with pytest.raises(QueueClosed):
        queue.submit(req("new"), user_id=3)
    engine.gate.set()
    await closing
    assert (await running.result()).text == "RUN"


async def test_two_engines_each_get_one_consumer():
    engines = [FakeEngine(delay=0.05), FakeEngine(delay=0.05)]
    queue = InferenceQueue(engines, max_size=20, per_user=20)
    await queue.start()
    handles = [queue.submit(req(f"q{i}"), user_id=1) for i in range(8)]
    for h in handles:
        await h.result()
    await queue.close()
    assert all(e.max_active == 1 for e in engines)
    assert all(e.calls for e in engines)
    assert sorted(engines[0].calls + engines[1].calls) == sorted(f"q{i}" for i in range(8))


async def test_an_engine_with_slots_gets_that_many_jobs_at_once_and_no_more():
    engine = FakeEngine()
    engine.slots = 3  # model.parallel = 3
    queue = InferenceQueue(engine, max_size=20, per_user=20)
    await queue.start()
    engine.gate.clear()
    handles = [queue.submit(req(f"q{i}"), user_id=i) for i in range(5)]
    await started(engine, 3)
    await asyncio.sleep(0.05)
    assert engine.active == 3  # three slots busy, the rest wait in line
    assert [h.position for h in handles] == [0, 0, 0, 3, 4]  # jobs ahead, running ones included
    assert [h.current_position() for h in handles[3:]] == [3, 4]
    assert queue.stats().busy == 3 and queue.stats().depth == 2
    engine.gate.set()
    answers = [await h.result() for h in handles]
    assert [a.text for a in answers] == [f"Q{i}" for i in range(5)]
    assert engine.max_active == 3
    await queue.close()


async def test_latency_percentiles():
    engine = FakeEngine()
    queue = InferenceQueue(engine, max_size=20, per_user=20)
    await queue.start()
    assert queue.stats().p50_s is None
    for i in range(5):
        await queue.submit(req(f"q{i}"), user_id=1).result()
    stats = queue.stats()
    await queue.close()
    assert stats.p50_s is not None and stats.p95_s is not None
    assert 0 <= stats.p50_s <= stats.p95_s


def test_max_tokens_must_be_set():
    with pytest.raises(ValueError, match="max_tokens"):
        VisionRequest(images=(), question="q", max_tokens=0)


async def test_per_user_rate_per_minute():
    now = [1000.0]
    engine = FakeEngine()
    queue = InferenceQueue(engine, max_size=50, per_user=50, per_user_per_minute=3, clock=lambda: now[0])
    await queue.start()
    for i in range(3):
        await queue.submit(req(f"q{i}"), user_id=1).result()
    now[0] += 20
    with pytest.raises(Refused, match="you can ask 3 questions a minute; please wait 40 s"):
        queue.submit(req("too fast"), user_id=1)
    await queue.submit(req("other user"), user_id=2).result()  # others are not affected
    await queue.submit(req("unlimited"), user_id=None).result()  # captions have no user
    now[0] += 41
    assert (await queue.submit(req("later"), user_id=1).result()).text == "LATER"
    await queue.close()
    assert "too fast" not in engine.calls


async def test_idle_gaps_are_measured_only_with_a_backlog():
    engine = FakeEngine(delay=0.02)
    queue = InferenceQueue(engine, max_size=50, per_user=50)
    await queue.start()
    handles = [queue.submit(req(f"q{i}"), user_id=1) for i in range(5)]  # a backlog
    for h in handles:
        await h.result()
    assert len(queue.idle_gaps) == 4
    assert all(0 <= gap < 0.5 for gap in queue.idle_gaps)
    await asyncio.sleep(0.05)
    await queue.submit(req("alone"), user_id=1).result()  # nothing was waiting: not a gap
    assert len(queue.idle_gaps) == 4
    await queue.close()


class FlakyEngine(FakeEngine):
    """Goes down (EndpointDown) after ``ok_calls`` answers until ``up`` is set."""

    def __init__(self, name: str, ok_calls: int = 0, delay: float = 0.01) -> None:
        super().__init__(delay=delay)
        self.name = name
        self.ok_calls = ok_calls
        self.up = threading.Event()
        self.probes = 0

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(name=self.name, model="fake", chat_format="none")

    def probe(self) -> bool:
        self.probes += 1
        return self.up.is_set()

    def generate(self, request: VisionRequest, *, should_stop=None, on_text=None) -> Answer:
        from bot.engine.base import EndpointDown

        if len(self.calls) >= self.ok_calls and not self.up.is_set():
            raise EndpointDown(f"{self.name} is gone")
        return super().generate(request, should_stop=should_stop, on_text=on_text)


async def test_a_downed_engine_hands_its_job_to_another_and_comes_back():
    flaky = FlakyEngine("flaky", ok_calls=1)
    steady = FakeEngine(delay=0.01)
    queue = InferenceQueue([flaky, steady], max_size=50, per_user=50, retry_s=0.05)
    await queue.start()
    handles = [queue.submit(req(f"q{i}"), user_id=1) for i in range(10)]
    answers = [await h.result() for h in handles]
    assert [a.text for a in answers] == [f"Q{i}" for i in range(10)]  # none lost
    assert len(flaky.calls) == 1 and len(steady.calls) == 9
    assert "flaky" in queue.down and flaky.probes >= 1
    flaky.up.set()
    for _ in range(100):
        if "flaky" not in queue.down:
            break
        await asyncio.sleep(0.02)
    assert "flaky" not in queue.down
    more = [queue.submit(req(f"r{i}"), user_id=1) for i in range(6)]
    for h in more:
        await h.result()
    assert len(flaky.calls) > 1  # it took jobs again
    await queue.close()


async def test_a_job_that_every_engine_drops_fails_with_a_clear_line():
    engines = [FlakyEngine("a"), FlakyEngine("b"), FlakyEngine("c")]
    queue = InferenceQueue(engines, max_size=5, per_user=5, retry_s=0.05, max_attempts=3)
    await queue.start()
    with pytest.raises(EngineError, match="the model servers are not answering"):
        await queue.submit(req("doomed"), user_id=1).result()
    await queue.close()  # returns although every engine is still down


# -- admission before cost, lanes, supervision, bounded tables, stopping ---------------


async def test_reservations_hold_places_before_any_job_exists(setup):
    engine, queue = setup  # max_size=3, per_user=2
    engine.gate.clear()
    running = queue.submit(req("run"), user_id="u0")
    await started(engine)
    held = queue.reserve("u1", 3)  # a message with three images, none downloaded yet
    with pytest.raises(Refused, match=r"the queue is full \(3 waiting\)"):
        queue.reserve("u2", 1)
    held.release_one()  # one download failed: its place goes back
    other = queue.reserve("u2", 1)
    handles = [queue.submit(req(f"m{i}"), reservation=held) for i in range(2)]
    with pytest.raises(RuntimeError):
        queue.submit(req("too many"), reservation=held)
    held.close()
    other.close()
    engine.gate.set()
    assert [(await h.result()).text for h in [running, *handles]] == ["RUN", "M0", "M1"]


async def test_a_message_is_one_question_for_the_per_user_limit(setup):
    engine, queue = setup  # per_user=2
    first = queue.reserve(7, 2)
    second = queue.reserve(7, 1)
    with pytest.raises(Refused, match="you already have 2 question"):
        queue.reserve(7, 1)
    first.close()
    queue.reserve(7, 1).close()
    second.close()
    assert queue.stats().depth == 0


async def test_questions_go_before_captions_and_captions_have_their_own_cap():
    engine = FakeEngine()
    queue = InferenceQueue(engine, max_size=10, per_user=10, caption_max_size=2)
    await queue.start()
    engine.gate.clear()
    blocker = queue.submit(req("blocker"), user_id=1)
    await started(engine)
    captions = queue.reserve(None, 2, lane="caption")
    with pytest.raises(Refused):
        queue.reserve(None, 1, lane="caption")
    queue.reserve("asker", 1).close()  # the question lane is not full because of captions
    caption_jobs = [queue.submit(req(f"caption{i}"), reservation=captions) for i in range(2)]
    question = queue.submit(req("question"), user_id=2)
    assert caption_jobs[0].position == 1
    assert question.position == 1 and caption_jobs[0].current_position() == 2  # the question went ahead of the captions
    engine.gate.set()
    for handle in [blocker, question, *caption_jobs]:
        await handle.result()
    assert engine.calls == ["blocker", "question", "caption0", "caption1"]
    captions.close()
    await queue.close()


async def test_no_place_in_line_when_another_engine_is_idle():
    busy, idle = FakeEngine(), FakeEngine()
    queue = InferenceQueue([busy, idle], max_size=10, per_user=10)
    await queue.start()
    busy.gate.clear()
    idle.gate.clear()
    first = queue.submit(req("a"), user_id=1)
    for _ in range(500):
        if busy.active + idle.active == 1:
            break
        await asyncio.sleep(0.005)
    second = queue.submit(req("b"), user_id=2)
    assert (first.position, second.position) == (0, 0)  # the second engine is free: no "#1 in line"
    third = queue.submit(req("c"), user_id=3)
    assert third.position == 2
    busy.gate.set()
    idle.gate.set()
    for h in (first, second, third):
        await h.result()
    await queue.close()


async def test_a_consumer_that_dies_is_restarted_and_loses_no_job(setup, caplog):
    engine, queue = setup
    original = queue._finish
    broken = [True]

    def finish_once_broken(job, **kw):
        if broken[0] and kw.get("answer") is not None:
            broken[0] = False
            raise RuntimeError("a bug in the consumer")
        original(job, **kw)

    queue._finish = finish_once_broken
    answer = await asyncio.wait_for(queue.submit(req("survivor"), user_id=1).result(), 10)
    assert answer.text == "SURVIVOR" and queue.restarts == 1
    assert engine.calls == ["survivor", "survivor"]  # put back and answered again
    assert "died; restarting it" in caplog.text


async def test_a_probe_that_raises_keeps_the_engine_down_without_killing_its_consumer():
    class RaisingProbe(FlakyEngine):
        def probe(self) -> bool:
            self.probes += 1
            if not self.up.is_set():
                raise ConnectionResetError("not an HTTP server")
            return True

    bad, good = RaisingProbe("bad"), FakeEngine(delay=0.01)
    queue = InferenceQueue([bad, good], max_size=20, per_user=20, retry_s=0.02)
    await queue.start()
    assert [(await queue.submit(req(f"q{i}"), user_id=1).result()).text for i in range(4)] == ["Q0", "Q1", "Q2", "Q3"]
    for _ in range(100):
        if bad.probes >= 2:
            break
        await asyncio.sleep(0.02)
    assert bad.probes >= 2 and "bad" in queue.down  # probed again and again: the consumer is alive
    bad.up.set()
    for _ in range(200):
        if "bad" not in queue.down:
            break
        await asyncio.sleep(0.02)
    assert "bad" not in queue.down
    await queue.close()


async def test_the_rate_table_forgets_idle_users():
    now = [0.0]
    engine = FakeEngine()
    queue = InferenceQueue(engine, max_size=50, per_user=50, per_user_per_minute=3, clock=lambda: now[0])
    await queue.start()
    for user in range(100):
        await queue.submit(req("hi"), user_id=user).result()
    assert queue.rate_table_size == 100
    now[0] = 61.0
    await queue.submit(req("later"), user_id="new").result()
    assert queue.rate_table_size == 1  # only the user who just asked
    await queue.close()


class StoppableEngine(FakeEngine):
    """Generates "tokens" until told to stop, like the local engine between tokens."""

    def generate(self, request: VisionRequest, *, should_stop=None, on_text=None) -> Answer:
        self.active += 1
        try:
            for _ in range(1000):
                if should_stop is not None and should_stop():
                    return Answer("partial", "cancelled", 1, 1, StageTimings())
                time.sleep(0.01)
            return Answer("whole", "stop", 1, 1, StageTimings())
        finally:
            self.active -= 1


async def test_stopping_ends_a_running_generation_and_parks_its_job():
    engine = StoppableEngine()
    queue = InferenceQueue(engine, max_size=5, per_user=5)
    await queue.start()
    running = queue.submit(req("long"), user_id=1)
    await started(engine)
    waiting = queue.submit(req("next"), user_id=2)
    closing = asyncio.create_task(queue.close("restarting", park=True))
    with pytest.raises(QueueClosed) as told:
        await waiting.result()
    assert told.value.parked
    queue.stop_running()
    await asyncio.wait_for(closing, 5)  # well before the 10 s the answer would take
    with pytest.raises(QueueClosed) as cut:
        await running.result()
    assert cut.value.parked


class TalkingEngine(FakeEngine):
    """Hands out its answer word by word from the engine thread."""

    def generate(self, request: VisionRequest, *, should_stop=None, on_text=None) -> Answer:
        for word in ("one", " two", " three"):
            if on_text is not None:
                on_text(word)
            time.sleep(0.01)
        return Answer("one two three", "stop", 1, 3, StageTimings())


async def test_text_reaches_the_loop_in_order_before_the_result():
    engine = TalkingEngine()
    queue = InferenceQueue(engine, max_size=5, per_user=5)
    await queue.start()
    loop_thread = threading.current_thread()
    seen: list[tuple[str, bool]] = []
    handle = queue.submit(req("q"), user_id=1, on_text=lambda t: seen.append((t, threading.current_thread() is loop_thread)))
    answer = await handle.result()
    assert [t for t, _ in seen] == ["one", " two", " three"] and all(on_loop for _, on_loop in seen)
    assert "".join(t for t, _ in seen) == answer.text
    await queue.close()


async def test_a_job_put_back_after_its_engine_went_down_starts_its_text_again():
    flaky = FlakyEngine("flaky")
    queue = InferenceQueue([flaky], max_size=5, per_user=5, retry_s=0.05)
    await queue.start()
    events: list[str] = []
    handle = queue.submit(req("q"), user_id=1, on_text=events.append, on_restart=lambda: events.append("<restart>"))
    for _ in range(200):
        if events:
            break
        await asyncio.sleep(0.01)
    assert events == ["<restart>"]  # the receiver drops what it had (nothing here), then...
    flaky.up.set()
    assert (await handle.result()).text == "Q"  # ...the job runs again when the engine is back
    await queue.close()


# -- the asker stops a job; how long a waiting job waits --------------------------------------------


async def test_the_asker_stops_a_waiting_job_at_once_and_a_running_one_between_tokens():
    engine = StoppableEngine()
    queue = InferenceQueue(engine, max_size=5, per_user=5)
    await queue.start()
    running = queue.submit(req("long"), user_id=1)
    await started(engine)
    waiting = queue.submit(req("next"), user_id=2)
    third = queue.submit(req("third"), user_id=3)
    assert waiting.stop() is True
    with pytest.raises(JobCancelled):
        await asyncio.wait_for(waiting.result(), 1)
    assert third.current_position() == 1  # it moved up at once
    began = time.perf_counter()
    assert running.stop() is True
    with pytest.raises(JobCancelled):
        await asyncio.wait_for(running.result(), 5)
    assert time.perf_counter() - began < 1  # at its next "token", not after 10 s
    await started(engine)  # the engine took the next job
    assert third.current_position() is None
    assert queue.cancelled == 2 and queue.failed == 0
    assert running.stop() is False  # over: nothing to stop
    third.stop()
    await queue.close()


async def test_the_estimate_follows_the_measured_pace_slots_and_engines():
    engine = FakeEngine(delay=0.2)
    queue = InferenceQueue(engine, max_size=20, per_user=20)
    await queue.start()
    first = queue.submit(req("warm"), user_id=1)
    assert first.eta_s() is None  # started at once
    await first.result()
    assert queue.service_s["fake"] and 0.15 < queue.service_s["fake"][0] < 1.0
    engine.gate.clear()
    handles = [queue.submit(req(f"q{i}"), user_id=1) for i in range(4)]
    await started(engine)
    pace = queue.service_s["fake"][0]
    # one slot: the running job's rest, then one pace per job ahead
    etas = [h.eta_s() for h in handles[1:]]
    assert etas[0] is not None and 0 < etas[0] <= pace
    for k, eta in enumerate(etas):
        assert eta == pytest.approx(etas[0] + k * pace, abs=0.05)
    engine.gate.set()
    for h in handles:
        await h.result()
    await queue.close()

    # two slots (model.parallel = 2): the same line waits about half as long
    engine = FakeEngine(delay=0.2)
    engine.slots = 2
    queue = InferenceQueue(engine, max_size=20, per_user=20)
    queue.service_s["fake"] = deque([1.0])  # measured before
    await queue.start()
    engine.gate.clear()
    handles = [queue.submit(req(f"q{i}"), user_id=1) for i in range(6)]
    await started(engine, 2)
    etas = [h.eta_s() for h in handles[2:]]
    assert etas == pytest.approx([1.0, 1.0, 2.0, 2.0], abs=0.1)
    engine.gate.set()
    for h in handles:
        await h.result()
    await queue.close()
