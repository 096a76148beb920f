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

The prompt is rendered by :mod:`bot.engine.templates`: the model file's own
chat template by default, else a named format (llama-cpp-python's LLaVA
handler templates keep their exact wording and default system message).
Positions follow mtmd: an image takes ``n_pos`` positions (fewer than its
tokens for M-RoPE models, Qwen2-VL and Qwen2.5-VL), and text after it
continues from there.  Generation uses
``Llama.create_completion`` on the evaluated prompt (an exact KV-cache hit, so
nothing is evaluated twice) with ``max_tokens`` always set.
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import io
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.engine.base import (
    Answer,
    EngineError,
    EngineInfo,
    RequestError,
    StageTimings,
    TextSink,
    VisionRequest,
)
from bot.engine.cpu_repack import CpuRepack, RepackDecision, model_params_patch
from bot.engine.cpu_repack import decide as decide_repack
from bot.engine.prefix_cache import TEXT, PrefixCache, cached_tokens, layout
from bot.engine.projector import Projector, read_projector
from bot.engine.templates import NAMED_FORMATS, ChatTemplate, Renderer, choose
from bot.engine.tiny import default_cache_dir

log = logging.getLogger(__name__)
native_log = logging.getLogger("llava_bot.llama_cpp")

class _NativeLogs:
    """Routes llama.cpp, ggml and mtmd log output into Python logging.

    Installed once per process (the callbacks are process-wide in the C
    libraries).  Keeps the last lines so an engine can read what the
    libraries said about devices and backends.
    """

    _instance: _NativeLogs | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        import llama_cpp
        import llama_cpp.mtmd_cpp as mtmd_cpp

        self.lines: deque[str] = deque(maxlen=4000)
        self.count = 0  # lines ever seen (the deque forgets old ones)
        self._partial = ""

        @llama_cpp.llama_log_callback
        def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
            self._feed(text)

        self._callback = callback  # keep a reference: C holds only the pointer
        llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
        mtmd_cpp.mtmd_log_set(callback, ctypes.c_void_p(0))
        mtmd_cpp.mtmd_helper_log_set(callback, ctypes.c_void_p(0))

    def _feed(self, text: bytes) -> None:
        try:
            chunk = text.decode("utf-8", errors="replace")
        except Exception:  # never raise into C
            return
        data = self._partial + chunk
        *complete, self._partial = data.split("\n")
        for line in complete:
            if line.strip():
                self.lines.append(line)
                self.count += 1
                native_log.debug("%s", line)

    @classmethod
    def install(cls) -> _NativeLogs:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def mark(self) -> int:
        return self.count

    def since(self, mark: int) -> list[str]:
        """The lines logged after ``mark`` (as many as are still kept)."""
        new = min(self.count - mark, len(self.lines))
        return list(self.lines)[len(self.lines) - new :] if new > 0 else []


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
    import llama_cpp

    llama_cpp.llama_backend_init()
    llama_cpp.llama_supports_gpu_offload()  # registers the devices: CUDA initialises here
    llama_cpp.llama_print_system_info()
    _native_ready = True


@dataclass(slots=True)
class _Backends:
    text: str = "CPU"
    clip: str = "unknown"
    gpu_offload: bool = False


def _read_backends(lines: list[str], gpu_offload_supported: bool, n_gpu_layers: int) -> _Backends:
    found = _Backends(gpu_offload=gpu_offload_supported and n_gpu_layers != 0)
    devices: list[str] = []
    offloaded = None
    for line in lines:
        if m := re.search(r"CLIP using (\S+) backend", line):
            found.clip = m.group(1)
        elif m := re.search(r"using device (\S+) \(([^)]*)\)", line):
            devices.append(f"{m.group(1)} ({m.group(2)})")
        elif m := re.search(r"offloaded (\d+)/(\d+) layers to GPU", line):
            offloaded = (int(m.group(1)), int(m.group(2)))
    if found.gpu_offload and offloaded and offloaded[0] > 0:
        where = ", ".join(devices) or "GPU"
        found.text = f"{where}, {offloaded[0]}/{offloaded[1]} layers"
    else:
        found.text = "CPU"
    return found


def _warmup_image() -> str:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (64, 64), (70, 130, 180))
    ImageDraw.Draw(img).ellipse((16, 16, 48, 48), fill=(250, 210, 60))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _decode_data_uri(uri: str) -> bytes:
    if not uri.startswith("data:") or "," not in uri:
        # Fetching URLs is the caller's job (with limits and an allow-list);
        # the engine never touches the network.
        raise EngineError("images must be passed as data: URIs")
    header, payload = uri.split(",", 1)
    if not header.endswith(";base64"):
        raise EngineError("image data URIs must be base64-encoded")
    return base64.b64decode(payload, validate=False)


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
        self._batched: Any = None
        self._cache = PrefixCache()
        self._projector: Projector | None = None
        self.name = name
        self._llama: Any = None
        self._mtmd: Any = None
        self._mtmd_ctx: Any = None
        #: the chat template in use (chosen at load)
        self.template: ChatTemplate | None = None
        self._renderer: Renderer | None = None
        self._backends = _Backends()
        self._logs: _NativeLogs | None = None
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
        from bot.engine.projector import DEFAULT_IMAGE_TOKENS

        return self.image_max_tokens or DEFAULT_IMAGE_TOKENS

    @property
    def slots(self) -> int:
        """How many ``generate`` calls may run at once (``parallel``)."""
        return self.parallel

    def kv_memory_bytes(self) -> int:
        """The KV cache all slots need (f16 K and V, ``parallel`` x ``n_ctx`` cells); needs the model loaded."""
        from bot.engine.batched import kv_cache_bytes, model_kv_shape

        if self._llama is None:
            raise EngineError("the model is not loaded")
        n_layer, k, v = model_kv_shape(self._llama)
        return kv_cache_bytes(n_layer, self.n_ctx, self.parallel, k, v)

    @property
    def loaded(self) -> bool:
        return self._llama is not None

    def init_native(self) -> None:
        """See :func:`init_native` (the runtime calls it on the main thread before :meth:`load`)."""
        init_native()

    def load(self) -> None:
        if self._llama is not None:
            return
        import llama_cpp
        import llama_cpp.mtmd_cpp as mtmd_cpp

        started = time.perf_counter()
        init_native()
        for path in (self.model_path, self.mmproj_path):
            if not path.is_file():
                raise EngineError(f"model file not found: {path}")
        projector = self.projector
        self.repack = decide_repack(self.cpu_repack, self.cache_dir or default_cache_dir())
        (log.info if self.repack.repack else log.warning)("CPU weights: %s", self.repack.line())
        self._logs = _NativeLogs.install()
        mark = self._logs.mark()
        log.info("loading %s + %s (%s projector)", self.model_path.name, self.mmproj_path.name, projector.kind)
        try:
            with model_params_patch(self.repack.repack):
                self._llama = llama_cpp.Llama(
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
        self._mtmd = mtmd_cpp
        params = mtmd_cpp.mtmd_context_params_default()
        params.use_gpu = self.n_gpu_layers != 0
        params.print_timings = False
        # CLIP encoding is batch work: give it the batch thread count (all
        # cores by default) rather than the generation count (half of them).
        params.n_threads = self._llama.n_threads_batch
        budget = self.image_token_budget()
        if budget is not None:
            params.image_max_tokens = budget
        ctx = mtmd_cpp.mtmd_init_from_file(str(self.mmproj_path).encode(), self._llama.model, params)
        if not ctx:
            self._llama.close()
            self._llama = None
            raise EngineError(f"could not load the CLIP projector {self.mmproj_path} for this text model")
        self._mtmd_ctx = ctx
        if not mtmd_cpp.mtmd_support_vision(ctx):
            self.close()
            raise EngineError(f"{self.mmproj_path} has no vision encoder")
        try:
            self._use_template()
            if self.parallel > 1:
                from bot.engine.batched import BatchedDecoder

                self._batched = BatchedDecoder(self, self.parallel)
        except EngineError:
            self.close()
            raise
        self._backends = _read_backends(
            self._logs.since(mark),
            bool(llama_cpp.llama_supports_gpu_offload()),
            self.n_gpu_layers,
        )
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

    def warmup(self) -> Answer:
        """Answer one small image so the first user does not pay for lazy init."""
        answer = self.generate(VisionRequest(images=(_warmup_image(),), question="Describe this image.", max_tokens=4))
        self.warmup_answer = answer
        log.info("warm-up answered in %.2f s", answer.timings.total_s)
        return answer

    def close(self) -> None:
        if self._batched is not None:
            self._batched.close()
            self._batched = None
        if self._mtmd_ctx is not None:
            self._mtmd.mtmd_free(self._mtmd_ctx)
            self._mtmd_ctx = None
        if self._llama is not None:
            self._llama.close()
            self._llama = None

    # -- one answer ----------------------------------------------------------------

    def _use_template(self) -> None:
        """Choose the chat template (see :mod:`bot.engine.templates`) and check that it renders.

        A model file's own template that cannot render a plain conversation is
        logged and replaced by the one its projector implies.
        """
        from bot.engine.templates import inferred

        template = choose(self.chat_format, self._llama.metadata.get("tokenizer.chat_template"), self.projector)
        try:
            self._renderer = self._checked_renderer(template)
        except EngineError as exc:
            if template.source != "model file":
                raise
            log.warning("the model file's chat template does not work here (%s); using the projector's", exc)
            template = inferred(self.projector)
            self._renderer = self._checked_renderer(template)
        self.template = template

    def _checked_renderer(self, template: ChatTemplate) -> Renderer:
        renderer = Renderer(template, bos=self._token_text(self._llama.token_bos()), eos=self._token_text(self._llama.token_eos()))
        probe = VisionRequest(
            images=("x",), question="What is this?", max_tokens=1, history=(("Hi", "Hello."),), system_prompt="Be brief."
        )
        renderer.render(probe, "<__media__>")
        return renderer

    def _token_text(self, token: int) -> str:
        """A special token's text (``<bos>``, ``</s>``...); "" when the model has none."""
        if token < 0:
            return ""
        return self._llama._model.token_get_text(token)

    def _render(self, request: VisionRequest, marker: str) -> tuple[bytes, bool]:
        """The prompt text (images as ``marker``) and whether the tokenizer must add BOS.

        Templates that write ``bos_token`` themselves get no second one, as in llama-server.
        """
        assert self._renderer is not None
        text = self._renderer.render(request, marker)
        bos = self._renderer.bos
        starts_with_bos = bool(bos) and text.startswith(bos)
        return text.encode("utf-8"), not starts_with_bos

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
        if self._batched is not None:
            return self._batched.submit(request, should_stop, on_text)
        started = time.perf_counter()
        timings = StageTimings()
        n_prompt, max_tokens = self._prepare_prompt(request, timings)
        prompt_done = time.perf_counter()
        stopper = _Stopper(started + request.time_limit_s if request.time_limit_s else None, should_stop)
        result = self._complete(request, max_tokens, stopper, TextSink(on_text))
        finished = time.perf_counter()
        timings.generation_s = finished - prompt_done
        timings.total_s = finished - started
        timings.first_token_s = (stopper.first_token - started) if stopper.first_token is not None else timings.total_s
        return _build_answer(result, n_prompt, timings, stopper.reason)

    def _prepare_prompt(self, request: VisionRequest, timings: StageTimings) -> tuple[int, int]:
        """Tokenize the prompt with its images and evaluate it into the KV cache.

        Returns the prompt's length in tokens and ``max_tokens`` capped to the
        room left in the context.
        """
        mtmd = self._mtmd
        marker = mtmd.mtmd_default_marker().decode("utf-8")
        text, add_special = self._render(request, marker)
        bitmaps: list[Any] = []
        chunks = None
        try:
            for uri in request.images:
                bitmaps.append(self._bitmap(uri))
            chunks = mtmd.mtmd_input_chunks_init()
            self._tokenize(text, bitmaps, chunks, add_special)
            n_prompt = int(mtmd.mtmd_helper_get_n_tokens(chunks))
            max_tokens = self._check_room(n_prompt, request.max_tokens)
            self._eval_prompt(chunks, timings)
        finally:
            if chunks is not None:
                mtmd.mtmd_input_chunks_free(chunks)
            for bitmap in bitmaps:
                mtmd.mtmd_bitmap_free(bitmap)
        return n_prompt, max_tokens

    def _bitmap(self, uri: str) -> Any:
        """One image as an mtmd bitmap, identified by its content hash (for the prefix cache)."""
        mtmd = self._mtmd
        data = _decode_data_uri(uri)
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        bitmap = mtmd.mtmd_helper_bitmap_init_from_buf(self._mtmd_ctx, buf, len(data), False)
        if not bitmap:
            raise RequestError("the model could not decode that image")
        mtmd.mtmd_bitmap_set_id(bitmap, hashlib.sha256(data).hexdigest()[:32].encode())
        return bitmap

    def _tokenize(self, text: bytes, bitmaps: list[Any], chunks: Any, add_special: bool = True) -> None:
        """Fill ``chunks`` with the prompt's text and image chunks."""
        mtmd = self._mtmd
        input_text = mtmd.mtmd_input_text()
        input_text.text = text
        input_text.text_len = len(text)
        input_text.add_special = add_special
        input_text.parse_special = True
        array = (mtmd.mtmd_bitmap_p_ctypes * max(1, len(bitmaps)))(*bitmaps)
        rc = mtmd.mtmd_tokenize(self._mtmd_ctx, chunks, ctypes.byref(input_text), array, len(bitmaps))
        if rc != 0:
            raise EngineError(f"could not tokenize the prompt with its images (mtmd error {rc})")

    def _check_room(self, n_prompt: int, max_tokens: int) -> int:
        """``max_tokens`` capped to the context left after the prompt; a prompt that fills it is refused."""
        room = self.n_ctx - n_prompt
        if room < 1:
            raise RequestError(
                f"the question and image need {n_prompt} tokens, more than the model's context "
                f"of {self.n_ctx}; ask a shorter question"
            )
        return min(max_tokens, room)

    def _complete(self, request: VisionRequest, max_tokens: int, stopper: _Stopper, sink: TextSink) -> dict[str, Any]:
        """Generate from the evaluated prompt (an exact KV-cache hit) with ``max_tokens`` always
        set, handing each piece of text to ``sink`` as it comes (llama-cpp-python keeps
        characters split over several tokens together)."""
        import llama_cpp

        llama = self._llama
        before = llama.n_tokens
        pieces: list[str] = []
        finish: str | None = None
        try:
            for chunk in llama.create_completion(
                prompt=llama.input_ids[: llama.n_tokens].tolist(),
                max_tokens=max_tokens,
                temperature=request.temperature,
                seed=self.seed,
                stop=list(self.template.stops) if self.template else None,
                stream=True,
                stopping_criteria=llama_cpp.StoppingCriteriaList([stopper]),
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
        generated = llama.n_tokens - before + (1 if finish == "length" else 0)
        return {"choices": [{"text": "".join(pieces), "finish_reason": finish}], "usage": {"completion_tokens": generated}}

    def _eval_prompt(self, chunks: Any, timings: StageTimings) -> None:
        """Evaluate the prompt's text and images into the KV cache, timing each stage.

        With ``prefix_cache`` on, the leading pieces the KV cache already holds
        (see :mod:`bot.engine.prefix_cache`) are kept, not evaluated again.
        """
        pieces = layout(self._mtmd, chunks)
        keep = self._cache.reusable(pieces) if self.prefix_cache else 0
        self._cache.clear()  # until this evaluation has succeeded
        end = pieces[-1].end
        if keep >= end:
            # The whole prompt is cached: evaluate its last token again so the
            # model has fresh logits to sample from.
            if pieces[-1].kind != TEXT:
                raise EngineError("a prompt must end with text")
            keep = end - 1
        self._truncate(keep)
        timings.cached_tokens = cached_tokens(pieces, keep)
        for piece in pieces:
            if piece.end <= keep:
                continue
            if piece.kind == TEXT:
                t0 = time.perf_counter()
                self._llama.eval(list(piece.key[max(0, keep - piece.start) :]))
                timings.prompt_eval_s += time.perf_counter() - t0
            else:
                self._eval_image(piece.chunk, timings)
            if self._llama.n_tokens != piece.end:
                raise EngineError(f"the prompt's positions went wrong ({self._llama.n_tokens} != {piece.end})")
        self._cache.store(pieces)

    def _truncate(self, n_past: int) -> None:
        """Keep the first ``n_past`` positions of the KV cache, drop the rest."""
        llama = self._llama
        if n_past <= 0:
            llama._ctx.kv_cache_clear()
            n_past = 0
        else:
            llama._ctx.kv_cache_seq_rm(-1, n_past, -1)
        llama.n_tokens = n_past

    def _eval_image(self, chunk: Any, timings: StageTimings) -> None:
        llama = self._llama
        llama.n_tokens = self.encode_image_into(llama._ctx.ctx, chunk, llama.n_tokens, 0, llama.n_batch, timings)

    def encode_image_into(self, ctx: Any, chunk: Any, n_past: int, seq: int, n_batch: int, timings: StageTimings) -> int:
        """Encode an image chunk (CLIP) and evaluate its embeddings into sequence ``seq`` of
        the llama context ``ctx`` from position ``n_past``; returns the position after it.
        The single path and the batched slots (:mod:`bot.engine.batched`) both use it."""
        import llama_cpp

        mtmd = self._mtmd
        t0 = time.perf_counter()
        if mtmd.mtmd_encode_chunk(self._mtmd_ctx, chunk) != 0:
            raise EngineError("the image encoder failed on that image")
        embd = mtmd.mtmd_get_output_embd(self._mtmd_ctx)
        t1 = time.perf_counter()
        new_n_past = llama_cpp.llama_pos(0)
        rc = mtmd.mtmd_helper_decode_image_chunk(
            self._mtmd_ctx,
            ctx,
            chunk,
            embd,
            llama_cpp.llama_pos(n_past),
            llama_cpp.llama_seq_id(seq),
            n_batch,
            ctypes.byref(new_n_past),
            mtmd.mtmd_helper_post_decode_callback(),  # NULL: no callback
            None,
        )
        if rc != 0:
            raise EngineError(f"could not evaluate the image embeddings (error {rc})")
        timings.image_encode_s += t1 - t0
        timings.prompt_eval_s += time.perf_counter() - t1
        return int(new_n_past.value)

    def _remember_answer(self) -> None:
        """The answer now in the KV cache extends the cached prompt (for a follow-up)."""
        if self._cache.pieces:
            llama = self._llama
            start = self._cache.pieces[-1].end
            self._cache.extend(tuple(int(t) for t in llama.input_ids[start : llama.n_tokens]))


@dataclass(slots=True)
class _Stopper:
    """The stopping criterion of one generation: notes the first token, stops
    on ``should_stop`` ("cancelled") or past the deadline ("timeout")."""

    deadline: float | None
    should_stop: Callable[[], bool] | None
    first_token: float | None = None
    reason: str | None = None

    def __call__(self, input_ids: Any, logits: Any) -> bool:
        if self.first_token is None:
            self.first_token = time.perf_counter()
        if self.should_stop is not None and self.should_stop():
            self.reason = "cancelled"
            return True
        if self.deadline is not None and time.perf_counter() > self.deadline:
            self.reason = "timeout"
            return True
        return False


def _build_answer(result: dict[str, Any], n_prompt: int, timings: StageTimings, stopped: str | None) -> Answer:
    """The Answer for a completion result; ``timings`` already holds the stage times."""
    choice = result["choices"][0]
    timings.prompt_tokens = n_prompt
    timings.completion_tokens = int(result["usage"]["completion_tokens"])
    return Answer(
        text=choice["text"].strip(),
        finish_reason=stopped or choice.get("finish_reason") or "stop",
        prompt_tokens=n_prompt,
        completion_tokens=timings.completion_tokens,
        timings=timings,
    )
