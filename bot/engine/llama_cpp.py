"""The in-process engine: one preloaded ``Llama`` plus its CLIP projector.

We drive libmtmd ourselves instead of calling ``create_chat_completion``
through a LLaVA chat handler, for three reasons measured or read in
llama-cpp-python 0.3.36:

* stage timings: the handler encodes the image and evaluates the prompt in
  one opaque call; here image encode (CLIP), prompt eval (text + image
  embeddings) and generation are timed separately;
* nothing process-wide on the hot path: with ``verbose=False`` the handler
  redirects the whole process's stdout/stderr around every image decode; here
  all llama.cpp / ggml / mtmd log lines go to Python logging (debug) through
  log callbacks, and the terminal stays clean without redirection;
* the CLIP context is ours, so we know and report where it runs (the
  ``CLIP using <backend> backend`` line) and can choose CPU or GPU for it.

The prompt is built by :mod:`bot.engine.prompt` (the same for the batched
slots of :mod:`bot.engine.batched`) and rendered by :mod:`bot.engine.templates`:
the model file's own chat template by default, else a named format
(llama-cpp-python's LLaVA handler templates keep their exact wording and
default system message).  Positions follow mtmd: an image takes ``n_pos`` positions (fewer than its
tokens for M-RoPE models, Qwen2-VL and Qwen2.5-VL), and text after it
continues from there.  Generation uses
``Llama.create_completion`` on the evaluated prompt (an exact KV-cache hit, so
nothing is evaluated twice) with ``max_tokens`` always set.  What this needs of
llama-cpp-python beyond its public API goes through :mod:`bot.engine.native`.
"""

from __future__ import annotations

import base64
import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.engine import native
from bot.engine.base import Answer, EngineError, EngineInfo, StageTimings, TextSink, VisionRequest
from bot.engine.batched import BatchedDecoder, kv_cache_bytes, model_kv_shape
from bot.engine.cpu_repack import CpuRepack, RepackDecision, model_params_patch
from bot.engine.cpu_repack import decide as decide_repack
from bot.engine.native_logs import Backends, NativeLogs, read_backends
from bot.engine.prefix_cache import TEXT, Piece, PrefixCache, cached_tokens, keep_for, remaining
from bot.engine.projector import DEFAULT_IMAGE_TOKENS, Projector, read_projector
from bot.engine.prompt import Clock, PromptBuilder, Vision, build_answer
from bot.engine.templates import NAMED_FORMATS, ChatTemplate, Renderer, working_renderer
from bot.engine.tiny import default_cache_dir

__all__ = ["Completion", "LlamaCppEngine", "Stopper", "init_native"]

log = logging.getLogger(__name__)

_native_ready = False


def init_native() -> None:
    """Initialise llama.cpp's backends and devices (CUDA's among them) once, before anything else.

    Call it on the main thread before loading in a worker thread.  On the one
    GPU machine tried (an H200 under gVisor), ``doctor``, which queried the
    devices first, loaded and answered, while ``ask`` and ``bench``, whose
    first llama.cpp call was the model load (its output redirected, our log
    callback installed), died with SIGSEGV during that load; this puts every
    path in doctor's order.  Cheap when already done.
    """
    global _native_ready
    if _native_ready:
        return
    native.init_backends()  # llama_backend_init, then the devices register: CUDA initialises here
    _native_ready = True


def _warmup_image() -> str:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (64, 64), (70, 130, 180))
    ImageDraw.Draw(img).ellipse((16, 16, 48, 48), fill=(250, 210, 60))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class LlamaCppEngine:
    """One ``Llama`` + one mtmd (CLIP) context.  Not thread-safe: one consumer only,
    unless ``parallel`` > 1: then up to ``slots`` threads may call ``generate`` at once
    (one decode thread batches them, see :mod:`bot.engine.batched`)."""

    def __init__(
        self,
        model_path: str | Path,
        mmproj_path: str | Path,
        *,
        chat_format: str = "auto",
        n_gpu_layers: int = -1,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_batch: int = 512,
        seed: int = 0,
        warmup: bool = True,
        prefix_cache: bool = True,
        image_max_tokens: int | None = None,
        name: str = "local",
        parallel: int = 1,
        cpu_repack: CpuRepack = "auto",
        cache_dir: Path | None = None,
    ) -> None:
        if chat_format != "auto" and chat_format not in NAMED_FORMATS:
            raise ValueError(f"unknown chat format {chat_format!r}; known: auto, {', '.join(NAMED_FORMATS)}")
        self.model_path = Path(model_path)
        self.mmproj_path = Path(mmproj_path)
        self.chat_format = chat_format
        self.n_gpu_layers = n_gpu_layers
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.n_batch = n_batch
        self.seed = seed
        self.warmup_enabled = warmup
        self.prefix_cache = prefix_cache
        self.image_max_tokens = image_max_tokens
        #: conversations decoded together (see :mod:`bot.engine.batched`); 1: the single path
        self.parallel = max(1, int(parallel))
        #: model.cpu_repack, and what it came to at load (see bot.engine.cpu_repack)
        self.cpu_repack = cpu_repack
        self.cache_dir = cache_dir
        self.repack: RepackDecision | None = None
        self._decoder: BatchedDecoder | None = None
        self._cache = PrefixCache()
        self._projector: Projector | None = None
        self.name = name
        self._llama: Any = None
        self._vision: Vision | None = None
        self._prompts: PromptBuilder | None = None
        #: the chat template in use (chosen at load)
        self.template: ChatTemplate | None = None
        self._backends = Backends()
        self.load_s = 0.0
        self.warmup_answer: Answer | None = None

    @classmethod
    def from_settings(
        cls, model: Any, *, image_max_tokens: int | None = None, name: str = "local", cache_dir: Path | None = None
    ) -> LlamaCppEngine:
        """Build from :class:`bot.config.ModelSettings` whose paths are resolved
        (``image_max_tokens``: ``images.max_image_tokens``; ``cache_dir``: where
        the CPU repacking verdict is kept, default the tiny models' folder)."""
        return cls(
            model.path,
            model.mmproj,
            chat_format=model.chat_format,
            n_gpu_layers=model.n_gpu_layers,
            n_ctx=model.n_ctx,
            n_threads=model.n_threads,
            n_batch=model.n_batch,
            seed=model.seed,
            warmup=model.warmup,
            prefix_cache=model.prefix_cache,
            image_max_tokens=image_max_tokens,
            name=name,
            parallel=getattr(model, "parallel", 1),
            cpu_repack=getattr(model, "cpu_repack", "auto"),
            cache_dir=cache_dir,
        )

    # -- Engine protocol ---------------------------------------------------------

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(
            name=self.name,
            model=self.model_path.name,
            chat_format=self.template.name if self.template else self.chat_format,
            template=self.template.describe() if self.template else "",
            text_backend=self._backends.text,
            clip_backend=self._backends.clip,
            gpu_offload=self._backends.gpu_offload,
        )

    @property
    def projector(self) -> Projector:
        """What the mmproj file says about the images it takes (read once, before loading)."""
        if self._projector is None:
            try:
                self._projector = read_projector(self.mmproj_path)
            except (OSError, ValueError) as exc:
                raise EngineError(f"could not read the projector {self.mmproj_path}: {exc}") from exc
        return self._projector

    def image_token_budget(self) -> int | None:
        """The cap on one image's tokens passed to mtmd (dynamic-resolution projectors only)."""
        if not self.projector.dynamic:
            return None
        return self.image_max_tokens or DEFAULT_IMAGE_TOKENS

    @property
    def slots(self) -> int:
        """How many ``generate`` calls may run at once (``parallel``)."""
        return self.parallel

    def kv_memory_bytes(self) -> int:
        """The KV cache all slots need (f16 K and V, ``parallel`` x ``n_ctx`` cells); needs the model loaded."""
        if self._llama is None:
            raise EngineError("the model is not loaded")
        n_layer, k, v = model_kv_shape(self._llama)
        return kv_cache_bytes(n_layer, self.n_ctx, self.parallel, k, v)

    @property
    def loaded(self) -> bool:
        return self._llama is not None

    @property
    def llama(self) -> Any:
        """The loaded ``llama_cpp.Llama`` (None before :meth:`load`)."""
        return self._llama

    @property
    def prompts(self) -> PromptBuilder:
        """The prompt builder of the loaded model (see :mod:`bot.engine.prompt`)."""
        if self._prompts is None:
            raise EngineError("the model is not loaded")
        return self._prompts

    @property
    def decoder(self) -> BatchedDecoder | None:
        """The batched slots' decoder when ``parallel`` > 1 (see :mod:`bot.engine.batched`)."""
        return self._decoder

    def init_native(self) -> None:
        """See :func:`init_native` (the runtime calls it on the main thread before :meth:`load`)."""
        init_native()

    def load(self) -> None:
        if self._llama is not None:
            return
        started = time.perf_counter()
        init_native()
        for path in (self.model_path, self.mmproj_path):
            if not path.is_file():
                raise EngineError(f"model file not found: {path}")
        projector = self.projector
        self.repack = decide_repack(self.cpu_repack, self.cache_dir or default_cache_dir())
        (log.info if self.repack.repack else log.warning)("CPU weights: %s", self.repack.line())
        logs = NativeLogs.install()
        mark = logs.mark()
        log.info("loading %s + %s (%s projector)", self.model_path.name, self.mmproj_path.name, projector.kind)
        self._llama = self._load_text_model(self.repack.repack)
        self._open_prompt_path()
        self._backends = read_backends(logs.since(mark), native.gpu_offload_supported(), self.n_gpu_layers)
        self.load_s = time.perf_counter() - started
        log.info(
            "model loaded in %.2f s: text on %s, CLIP on %s; chat template: %s",
            self.load_s,
            self._backends.text,
            self._backends.clip,
            self.template.describe() if self.template else "?",
        )
        if self.warmup_enabled:
            self.warmup()

    def _load_text_model(self, repack: bool) -> Any:
        try:
            with model_params_patch(repack):
                return native.new_llama(
                    model_path=str(self.model_path),
                    n_gpu_layers=self.n_gpu_layers,
                    # with parallel slots this context only serves the vocabulary: the
                    # batched context (bot.engine.batched) holds the conversations
                    n_ctx=self.n_ctx if self.parallel == 1 else 256,
                    n_batch=self.n_batch,
                    n_threads=self.n_threads,
                    seed=self.seed,
                    verbose=False,
                )
        except ValueError as exc:
            raise EngineError(f"could not load the text model {self.model_path}: {exc}") from exc

    def _open_prompt_path(self) -> None:
        """The CLIP context, the chat template and, with parallel slots, the batched decoder;
        on failure everything loaded so far is closed."""
        assert self._llama is not None
        try:
            self._vision = Vision.open(
                self.mmproj_path, self._llama, use_gpu=self.n_gpu_layers != 0, image_max_tokens=self.image_token_budget()
            )
            self._prompts = PromptBuilder(self._vision, self._working_renderer(), self.n_ctx)
            self.template = self._prompts.template
            if self.parallel > 1:
                self._decoder = self._start_decoder()
        except EngineError:
            self.close()
            raise

    def _working_renderer(self) -> Renderer:
        """The chat template's renderer (see :func:`bot.engine.templates.working_renderer`)."""
        llama = self._llama
        return working_renderer(
            self.chat_format,
            llama.metadata.get("tokenizer.chat_template"),
            self.projector,
            bos=native.token_text(llama, llama.token_bos()),
            eos=native.token_text(llama, llama.token_eos()),
        )

    def _start_decoder(self) -> BatchedDecoder:
        return BatchedDecoder(
            self._llama,
            self.prompts,
            parallel=self.parallel,
            n_ctx=self.n_ctx,
            n_batch=self.n_batch,
            seed=self.seed,
            use_prefix_cache=lambda: self.prefix_cache,
        )

    def warmup(self) -> Answer:
        """Answer one small image so the first user does not pay for lazy init."""
        answer = self.generate(VisionRequest(images=(_warmup_image(),), question="Describe this image.", max_tokens=4))
        self.warmup_answer = answer
        log.info("warm-up answered in %.2f s", answer.timings.total_s)
        return answer

    def close(self) -> None:
        if self._decoder is not None:
            self._decoder.close()
            self._decoder = None
        self._prompts = None
        if self._vision is not None:
            self._vision.close()
            self._vision = None
        if self._llama is not None:
            self._llama.close()
            self._llama = None

    # -- one answer ----------------------------------------------------------------

    def generate(
        self,
        request: VisionRequest,
        *,
        should_stop: Callable[[], bool] | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> Answer:
        """Answer one request.  ``should_stop`` is polled between tokens; ``on_text``
        gets the text as it is generated."""
        if self._llama is None:
            raise EngineError("the model is not loaded")
        if self._decoder is not None:
            return self._decoder.submit(request, should_stop, on_text)
        clock = Clock()
        timings = StageTimings()
        with self.prompts.build(request) as prompt:
            self._eval_prompt(prompt.pieces, timings)
        clock.prompt_done = time.perf_counter()
        stopper = Stopper(clock.started + request.time_limit_s if request.time_limit_s else None, should_stop, clock)
        completion = self.complete(request, prompt.max_tokens, stopper, TextSink(on_text))
        return build_answer(
            completion.text,
            stopper.reason or completion.finish_reason,
            prompt_tokens=prompt.n_prompt,
            completion_tokens=completion.completion_tokens,
            timings=timings,
            clock=clock,
            finished=time.perf_counter(),
        )

    def complete(self, request: VisionRequest, max_tokens: int, stopper: Stopper, sink: TextSink) -> Completion:
        """Generate from the evaluated prompt (an exact KV-cache hit) with ``max_tokens`` always
        set, handing each piece of text to ``sink`` as it comes (llama-cpp-python keeps
        characters split over several tokens together)."""
        llama = self._llama
        before = native.n_evaluated(llama)
        pieces: list[str] = []
        finish: str | None = None
        try:
            for chunk in llama.create_completion(
                prompt=native.evaluated(llama),
                max_tokens=max_tokens,
                temperature=request.temperature,
                seed=self.seed,
                stop=list(self.template.stops) if self.template else None,
                stream=True,
                stopping_criteria=native.stopping_criteria(stopper),
            ):
                choice = chunk["choices"][0]
                pieces.append(choice["text"])
                sink(choice["text"])
                finish = choice.get("finish_reason") or finish
        except ValueError as exc:
            self._cache.clear()
            raise EngineError(f"the model could not answer: {exc}") from exc
        except BaseException:
            self._cache.clear()
            raise
        self._remember_answer()
        # Every generated token but the last is evaluated into the context; the
        # last one too unless the answer was cut at max_tokens.
        generated = native.n_evaluated(llama) - before + (1 if finish == "length" else 0)
        return Completion("".join(pieces), finish, generated)

    def forget(self) -> None:
        """Empty the KV cache and the prefix cache (the single path's): the next prompt is evaluated afresh."""
        self._cache.clear()
        if self._llama is not None:
            native.truncate(self._llama, 0)

    def _eval_prompt(self, pieces: list[Piece], timings: StageTimings) -> None:
        """Evaluate the prompt's text and images into the KV cache, timing each stage.

        With ``prefix_cache`` on, the leading pieces the KV cache already holds
        (see :mod:`bot.engine.prefix_cache`) are kept, not evaluated again.
        """
        llama = self._llama
        reusable = self._cache.reusable(pieces) if self.prefix_cache else 0
        self._cache.clear()  # until this evaluation has succeeded
        keep = keep_for(pieces, reusable)
        native.truncate(llama, keep)
        timings.cached_tokens = cached_tokens(pieces, keep)
        for piece in remaining(pieces, keep):
            if piece.kind == TEXT:
                t0 = time.perf_counter()
                llama.eval(list(piece.key))
                timings.prompt_eval_s += time.perf_counter() - t0
            else:
                self._eval_image(piece.chunk, timings)
            if native.n_evaluated(llama) != piece.end:
                raise EngineError(f"the prompt's positions went wrong ({native.n_evaluated(llama)} != {piece.end})")
        self._cache.store(pieces)

    def _eval_image(self, chunk: Any, timings: StageTimings) -> None:
        llama = self._llama
        ctx = native.context_pointer(llama)
        end = self.prompts.vision.eval_image(ctx, chunk, native.n_evaluated(llama), 0, llama.n_batch, timings)
        native.set_evaluated(llama, end)

    def _remember_answer(self) -> None:
        """The answer now in the KV cache extends the cached prompt (for a follow-up)."""
        if self._cache.pieces:
            start = self._cache.pieces[-1].end
            self._cache.extend(tuple(native.evaluated(self._llama, start)))


@dataclass(slots=True)
class Completion:
    """What :meth:`LlamaCppEngine.complete` generated."""

    text: str
    #: create_completion's: "stop", "length", or None
    finish_reason: str | None
    completion_tokens: int


@dataclass(slots=True)
class Stopper:
    """The stopping criterion of one generation: notes the first token (in ``clock``), stops
    on ``should_stop`` ("cancelled") or past the deadline ("timeout")."""

    deadline: float | None
    should_stop: Callable[[], bool] | None
    clock: Clock = field(default_factory=Clock)
    reason: str | None = None

    def __call__(self, input_ids: Any, logits: Any) -> bool:
        if self.clock.first_token is None:
            self.clock.first_token = time.perf_counter()
        if self.should_stop is not None and self.should_stop():
            self.reason = "cancelled"
            return True
        if self.deadline is not None and time.perf_counter() > self.deadline:
            self.reason = "timeout"
            return True
        return False
