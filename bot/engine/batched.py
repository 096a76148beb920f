"""Continuous batching for the local engine: N conversations in one llama context.

With ``model.parallel = N > 1`` the engine keeps one llama context holding N
sequences (``n_seq_max = N``, ``kv_unified = False``, ``N * n_ctx`` KV cells:
each slot gets the context of one conversation) and one decode thread that
owns it, as llama-server does with its slots.

* Callers (up to N queue consumers) call :meth:`BatchedDecoder.submit`: the
  job goes into an inbox and the caller blocks on the job's own event queue,
  where the decode thread puts the answer's text as it is generated (``on_text``
  runs in the caller's thread, so a slow callback never stalls the others)
  and finally the Answer or the exception.
* The decode thread takes jobs while slots are free.  A job's prompt is built
  first (:class:`bot.engine.prompt.PromptBuilder`, as on the single path),
  then the job goes to the free slot whose prefix cache reuses most of its
  prompt (a follow-up returns to its conversation's slot), else to the least
  recently used free slot.  The slot's KV past the reusable prefix is removed
  (:func:`bot.engine.prefix_cache.keep_for`, as on the single path).
* Each step: at most one image of a prompting job is encoded (CLIP) and
  decoded into its slot's sequence (``mtmd_helper_decode_image_chunk``, its own
  ``llama_decode``); then one ``llama_decode`` carries one token for every
  generating slot (logits on) plus a chunk of at most one prompt's text (logits
  only on the prompt's last token), at most ``n_batch`` tokens in all.  Every
  slot with logits samples with its own sampler chain.
* A finished answer frees its slot at once; its KV stays and the slot's
  :class:`PrefixCache` is extended with the generated tokens for a follow-up.
  A failing job fails alone and clears its slot's sequence.

Text, stop strings, token counts and finish reasons follow llama-cpp-python's
``create_completion`` (which the single-slot path uses), so an answer at
temperature 0 is the same either way.
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bot.engine.base import Answer, EngineError, StageTimings, TextSink, VisionRequest
from bot.engine.native import LIB, context_params, model_pointer, vocab_pointer
from bot.engine.prefix_cache import IMAGE, TEXT, Piece, PrefixCache, cached_tokens, keep_for, remaining
from bot.engine.prompt import Clock, Prompt, PromptBuilder, build_answer

__all__ = ["BatchedDecoder", "OutputText", "kv_cache_bytes", "model_kv_shape"]

log = logging.getLogger(__name__)

_STOP = object()  # the inbox's close sentinel


def kv_cache_bytes(n_layer: int, n_ctx: int, n_seq: int, n_embd_k_gqa: int, n_embd_v_gqa: int, bytes_per: int = 2) -> int:
    """The KV cache's size: K and V of every layer for ``n_ctx`` cells of each of ``n_seq`` sequences (f16: 2 bytes)."""
    return n_layer * n_ctx * n_seq * (n_embd_k_gqa + n_embd_v_gqa) * bytes_per


def model_kv_shape(llama: Any) -> tuple[int, int, int]:
    """``(n_layer, n_embd_k_gqa, n_embd_v_gqa)`` of a loaded ``Llama``."""
    model = model_pointer(llama)
    n_layer = int(LIB.llama_model_n_layer(model))
    n_embd = int(LIB.llama_model_n_embd(model))
    n_head = max(1, int(LIB.llama_model_n_head(model)))
    n_head_kv = int(LIB.llama_model_n_head_kv(model)) or n_head
    meta = llama.metadata
    arch = meta.get("general.architecture", "")
    head_k = int(meta.get(f"{arch}.attention.key_length", n_embd // n_head))
    head_v = int(meta.get(f"{arch}.attention.value_length", head_k))
    return n_layer, head_k * n_head_kv, head_v * n_head_kv


# -- text out, as create_completion builds it -----------------------------------------


class OutputText:
    """The generated text of one answer: stop strings, held-back stop prefixes,
    characters split over tokens and the ``max_tokens`` check, in the order
    llama-cpp-python's ``create_completion`` applies them."""

    def __init__(self, stops: tuple[str, ...], max_tokens: int, emit: Callable[[str], None]) -> None:
        self.stops = [s.encode("utf-8") for s in stops if s]
        self.max_tokens = max_tokens
        self.emit = emit
        self.data = bytearray()
        self.n = 0  # tokens appended
        self.returned = 0  # bytes handed out
        self.cut: int | None = None  # where a stop string starts
        self._fix = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        self.parts: list[str] = []

    def add(self, piece: bytes) -> str | None:
        """Append one token's bytes; returns "stop" or "length" when the answer ends here."""
        self.n += 1
        self.data += piece
        # create_completion's guard against emitting a character split over tokens
        tail = self.data[-3:]
        for k, char in enumerate(tail):
            k = 3 - k
            for num, pattern in ((2, 192), (3, 224), (4, 240)):
                if num > k and pattern & char == pattern:
                    self._fix = num - k
        if self._fix > 0:
            self._fix -= 1
            return None
        for stop in self.stops:
            if stop in self.data:
                self.cut = self.data.index(stop)
                return "stop"
        rest = self.data[self.returned :]
        hold = 0
        for stop in self.stops:
            for i in range(min(len(stop), len(rest)), 0, -1):
                if rest.endswith(stop[:i]):
                    hold = max(hold, i)
                    break
        self._flush(len(self.data) - hold)
        if self.n >= self.max_tokens:
            return "length"
        return None

    def _flush(self, upto: int, final: bool = False) -> None:
        if upto > self.returned or final:
            text = self._decoder.decode(bytes(self.data[self.returned : max(upto, self.returned)]), final)
            self.returned = max(upto, self.returned)
            if text:
                self.parts.append(text)
                self.emit(text)

    def finish(self) -> str:
        """Hand out the rest (up to a stop string) and return the whole text."""
        cut = self.cut
        if cut is None:
            for stop in self.stops:
                if stop in self.data[self.returned :]:
                    cut = self.data.index(stop, self.returned)
                    break
        self._flush(len(self.data) if cut is None else cut, final=True)
        return "".join(self.parts)


# -- jobs and slots -----------------------------------------------------------------------


@dataclass(eq=False)
class _Job:
    request: VisionRequest
    should_stop: Callable[[], bool] | None
    events: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    timings: StageTimings = field(default_factory=StageTimings)
    clock: Clock = field(default_factory=Clock)
    deadline: float | None = None
    prompt: Prompt | None = None
    #: what is left of the prompt to evaluate, in order (text pieces shrink as they go)
    todo: deque[Piece] = field(default_factory=deque)
    slot: _Slot | None = None
    sampler: Any = None
    output: OutputText | None = None
    pos: int = 0  # the next position in the slot's sequence
    next_token: int | None = None  # sampled, to be evaluated in the next step
    generated: list[int] = field(default_factory=list)  # evaluated answer tokens
    index: int = -1  # this step's logits row, -1 for none

    @property
    def generating(self) -> bool:
        return self.next_token is not None

    @property
    def seq(self) -> int:
        """The sequence of this job's slot (every admitted job holds one)."""
        assert self.slot is not None
        return self.slot.seq


@dataclass(eq=False)
class _Slot:
    seq: int
    cache: PrefixCache = field(default_factory=PrefixCache)
    last_used: float = 0.0
    job: _Job | None = None


class BatchedDecoder:
    """One llama context with ``parallel`` sequences and the thread that decodes them.

    ``llama``: the loaded model (its own context only serves the vocabulary);
    ``prompts``: the model's prompt builder; ``n_ctx``: each slot's context;
    ``seed``: the sampling seed; ``use_prefix_cache``: asked for every job.
    """

    def __init__(
        self,
        llama: Any,
        prompts: PromptBuilder,
        *,
        parallel: int,
        n_ctx: int,
        n_batch: int,
        seed: int,
        use_prefix_cache: Callable[[], bool],
    ) -> None:
        self.prompts = prompts
        self.parallel = parallel
        self.n_ctx = n_ctx  # per slot
        self.n_batch = max(n_batch, parallel)
        self.seed = seed
        self.use_prefix_cache = use_prefix_cache
        self.ctx = self._new_context(llama)
        self.mem = LIB.llama_get_memory(self.ctx)
        self.vocab = vocab_pointer(llama)
        self._batch = LIB.llama_batch_init(self.n_batch, 0, 1)
        self._piece_buf = ctypes.create_string_buffer(256)
        self.slots = [_Slot(seq) for seq in range(parallel)]
        self._active: list[_Job] = []  # in admission order
        self._inbox: queue.Queue = queue.Queue()
        self._closed = False
        self._dead: str | None = None
        #: the most jobs ever decoded together (for tests and measurements)
        self.busiest = 0
        self._thread = threading.Thread(target=self._run, name="llama-batched-decode", daemon=True)
        self._thread.start()

    def _new_context(self, llama: Any) -> Any:
        """A llama context for ``parallel`` sequences of ``n_ctx`` cells each, not unified."""
        params = context_params(llama)
        params.n_ctx = self.n_ctx * self.parallel
        params.n_seq_max = self.parallel
        params.kv_unified = False
        params.n_batch = self.n_batch
        params.n_ubatch = min(self.n_batch, 512)
        ctx = LIB.llama_init_from_model(model_pointer(llama), params)
        if not ctx:
            n_layer, k, v = model_kv_shape(llama)
            mb = kv_cache_bytes(n_layer, self.n_ctx, self.parallel, k, v) / 2**20
            raise EngineError(
                f"could not create the batched context: {self.parallel} slots x {self.n_ctx} tokens need "
                f"{self.parallel * self.n_ctx} KV cells (about {mb:.0f} MB of KV cache); lower model.parallel or model.n_ctx"
            )
        return ctx

    # -- callers' side ------------------------------------------------------------------

    def submit(
        self,
        request: VisionRequest,
        should_stop: Callable[[], bool] | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> Answer:
        """Hand ``request`` to the decode thread and wait for its answer (text goes to
        ``on_text`` in this thread as it comes)."""
        if self._closed or self._dead:
            raise EngineError(self._dead or "the model is closed")
        job = _Job(request, should_stop)
        self._inbox.put(job)
        sink = TextSink(on_text)
        while True:
            try:
                kind, value = job.events.get(timeout=1.0)
            except queue.Empty:
                if not self._thread.is_alive() and job.events.empty():
                    raise EngineError(self._dead or "the model was closed") from None
                continue
            if kind == "text":
                sink(value)
            elif kind == "answer":
                return value
            else:
                raise value

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._inbox.put(_STOP)
        self._thread.join()
        LIB.llama_batch_free(self._batch)
        LIB.llama_free(self.ctx)
        self.ctx = None

    # -- the decode thread ----------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._closed:
                if not self._admit():
                    break
                if self._active:
                    self._step()
                    self.busiest = max(self.busiest, len(self._active))
        except BaseException as exc:  # a bug here must not hang the callers
            log.exception("the batched decode loop failed")
            self._dead = f"the model's decode loop failed: {exc}"
            for job in list(self._active):
                self._fail(job, EngineError(self._dead))
        message = self._dead or "the model was closed"
        if self._closed:
            for job in list(self._active):
                self._fail(job, EngineError("the model was closed"))
        while True:
            try:
                job = self._inbox.get_nowait()
            except queue.Empty:
                break
            if job is not _STOP:
                job.events.put(("error", EngineError(message)))

    def _admit(self) -> bool:
        """Start waiting jobs while slots are free; False once closed."""
        while len(self._active) < self.parallel:
            try:
                job = self._inbox.get(block=not self._active)
            except queue.Empty:
                return True
            if job is _STOP:
                return False
            self._start(job)
        return True

    def _start(self, job: _Job) -> None:
        """Build the job's prompt, give it a slot and plan its evaluation; a prompt that
        cannot be built fails the job alone."""
        job.clock = Clock()
        limit = job.request.time_limit_s
        job.deadline = job.clock.started + limit if limit else None
        try:
            job.prompt = self.prompts.build(job.request)
            if job.prompt.pieces[-1].kind != TEXT:
                raise EngineError("a prompt must end with text")
        except BaseException as exc:
            self._free_chunks(job)
            job.events.put(("error", exc if isinstance(exc, Exception) else EngineError(str(exc))))
            return
        pieces = job.prompt.pieces
        slot, reusable = self._choose(pieces)
        slot.job, job.slot = job, slot
        self._active.append(job)
        slot.cache.clear()  # until this prompt is evaluated
        keep = keep_for(pieces, reusable)
        LIB.llama_memory_seq_rm(self.mem, slot.seq, keep, -1)
        job.timings.cached_tokens = cached_tokens(pieces, keep)
        job.todo.extend(remaining(pieces, keep))
        job.output = OutputText(self.prompts.template.stops, job.prompt.max_tokens, self._emitter(job))
        job.sampler = self._sampler(job.request.temperature)

    def _choose(self, pieces: list[Piece]) -> tuple[_Slot, int]:
        """The free slot that reuses most of the prompt, else the least recently used one."""
        free = [s for s in self.slots if s.job is None]
        best = min(free, key=lambda s: s.last_used)
        keep = 0
        if self.use_prefix_cache():
            for slot in sorted(free, key=lambda s: s.last_used):
                reuse = slot.cache.reusable(pieces)
                if reuse > keep:
                    best, keep = slot, reuse
        return best, keep

    def _sampler(self, temperature: float) -> Any:
        """The sampler chain create_completion builds (its default top-k/p, min-p)."""
        lc = LIB
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        if temperature < 0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(self.seed))
        elif temperature == 0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
        else:
            for smpl in (
                lc.llama_sampler_init_top_k(40),
                lc.llama_sampler_init_typical(1.0, 1),
                lc.llama_sampler_init_top_p(0.95, 1),
                lc.llama_sampler_init_min_p(0.05, 1),
                lc.llama_sampler_init_temp(temperature),
                lc.llama_sampler_init_dist(self.seed),
            ):
                lc.llama_sampler_chain_add(chain, smpl)
        return chain

    @staticmethod
    def _emitter(job: _Job) -> Callable[[str], None]:
        return lambda text: job.events.put(("text", text))

    def _step(self) -> None:
        """One image (if any waits), then one llama_decode for every slot that has work."""
        self._eval_next_image()
        carried = self._add_generating()
        prompt_job, n = self._add_prompt_text(len(carried))
        if n == 0:
            return
        self._batch.n_tokens = n
        t0 = time.perf_counter()
        rc = LIB.llama_decode(self.ctx, self._batch)
        now = time.perf_counter()
        if prompt_job is not None:
            prompt_job.timings.prompt_eval_s += now - t0
        if rc != 0:
            error = EngineError(f"the model could not evaluate the batch (llama_decode returned {rc})")
            for job in [*carried, *([prompt_job] if prompt_job else [])]:
                self._fail(job, error)
            return
        for job in carried:
            if job.next_token is not None:
                job.generated.append(job.next_token)
        if prompt_job is not None and prompt_job.index >= 0:
            self._prompt_evaluated(prompt_job, now)
            carried.append(prompt_job)
        self._sample_all(carried)

    def _eval_next_image(self) -> None:
        """Encode and evaluate the next image of the first prompting job that waits on one."""
        job = next((j for j in self._active if not j.generating and j.todo and j.todo[0].kind == IMAGE), None)
        if job is not None:
            self._eval_image(job)

    def _add_generating(self) -> list[_Job]:
        """Put one token of every generating job into the batch (logits on); returns those jobs."""
        carried: list[_Job] = []
        for job in self._active:
            if job.next_token is not None:
                n = len(carried)
                self._put(n, job.next_token, job.pos, job.seq, True)
                job.index = n
                job.pos += 1
                carried.append(job)
        return carried

    def _add_prompt_text(self, n: int) -> tuple[_Job | None, int]:
        """After the ``n`` tokens in the batch, the next text of one prompting job, up to
        ``n_batch`` tokens in all (logits only on the prompt's last token); returns that
        job (also when the batch is full) and the batch's size."""
        job = next((j for j in self._active if not j.generating and j.todo and j.todo[0].kind == TEXT), None)
        if job is None or n >= self.n_batch:
            return job, n
        piece = job.todo[0]
        take = piece.key[: self.n_batch - n]
        last = len(take) == len(piece.key) and len(job.todo) == 1
        for i, token in enumerate(take):
            self._put(n, token, piece.start + i, job.seq, last and i == len(take) - 1)
            n += 1
        if last:
            job.index = n - 1
            job.pos = piece.start + len(take)
        if len(take) == len(piece.key):
            job.todo.popleft()
        else:
            job.todo[0] = piece.after(len(take))
        return job, n

    def _prompt_evaluated(self, job: _Job, now: float) -> None:
        """The job's whole prompt is in its slot's sequence: the slot's cache holds it."""
        assert job.prompt is not None and job.slot is not None
        job.clock.prompt_done = now
        job.slot.cache.store(job.prompt.pieces)
        self._free_chunks(job)

    def _sample_all(self, jobs: list[_Job]) -> None:
        for job in jobs:
            index, job.index = job.index, -1
            try:
                self._sample(job, index)
            except Exception as exc:  # a failing should_stop: this job only
                self._fail(job, exc)

    def _put(self, i: int, token: int, pos: int, seq: int, logits: bool) -> None:
        batch = self._batch
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = logits

    def _sample(self, job: _Job, index: int) -> None:
        token = int(LIB.llama_sampler_sample(job.sampler, self.ctx, index))
        now = time.perf_counter()
        if job.clock.first_token is None:
            job.clock.first_token = now
        job.next_token = None
        if job.should_stop is not None and job.should_stop():
            self._finish(job, "cancelled")
        elif job.deadline is not None and now > job.deadline:
            self._finish(job, "timeout")
        elif LIB.llama_vocab_is_eog(self.vocab, token):
            self._finish(job, "stop")
        else:
            assert job.output is not None
            finish = job.output.add(self._piece(token))
            if finish:
                self._finish(job, finish)
            else:
                job.next_token = token

    def _piece(self, token: int) -> bytes:
        buf = self._piece_buf
        n = LIB.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = LIB.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        return buf.raw[:n]

    def _eval_image(self, job: _Job) -> None:
        piece = job.todo.popleft()
        try:
            end = self.prompts.vision.eval_image(self.ctx, piece.chunk, piece.start, job.seq, self.n_batch, job.timings)
            if end != piece.end:
                raise EngineError(f"the prompt's positions went wrong ({end} != {piece.end})")
        except EngineError as exc:
            self._fail(job, exc)
            return

    def _finish(self, job: _Job, finish: str) -> None:
        now = time.perf_counter()
        assert job.output is not None and job.prompt is not None and job.slot is not None
        text = job.output.finish()
        generated = len(job.generated) + (1 if finish == "length" else 0)
        answer = build_answer(
            text,
            finish,
            prompt_tokens=job.prompt.n_prompt,
            completion_tokens=generated,
            timings=job.timings,
            clock=job.clock,
            finished=now,
        )
        job.slot.cache.extend(tuple(job.generated))
        self._release(job)
        job.events.put(("answer", answer))

    def _fail(self, job: _Job, exc: BaseException) -> None:
        """This job fails alone: its slot's sequence is cleared."""
        slot = job.slot
        if slot is not None and self.ctx is not None:
            LIB.llama_memory_seq_rm(self.mem, slot.seq, -1, -1)
            slot.cache.clear()
        self._free_chunks(job)
        self._release(job)
        job.events.put(("error", exc))

    def _release(self, job: _Job) -> None:
        if job.sampler is not None:
            LIB.llama_sampler_free(job.sampler)
            job.sampler = None
        if job in self._active:
            self._active.remove(job)
        slot = job.slot
        if slot is not None and slot.job is job:
            slot.job = None
            slot.last_used = time.perf_counter()

    @staticmethod
    def _free_chunks(job: _Job) -> None:
        if job.prompt is not None:
            job.prompt.free()
