"""One prompt path for the local engine: a request in, mtmd chunks at their positions out.

Both the single path (:class:`bot.engine.llama_cpp.LlamaCppEngine`) and the
batched slots (:mod:`bot.engine.batched`) build their prompts here and build
their answers with :func:`build_answer`:

* :class:`Vision` is the mtmd (CLIP) context of the loaded model: images
  become bitmaps (identified by content hash, for the prefix cache), text and
  bitmaps become chunks, and an image chunk is encoded and its embeddings
  evaluated into any llama context and sequence.
* :class:`PromptBuilder` renders a request with the chat template (images as
  mtmd's marker; BOS added only when the template does not write it, as in
  llama-server), tokenizes it with its images, refuses a prompt that fills the
  context, caps ``max_tokens`` to the room left and lays the chunks out at
  their positions (:func:`bot.engine.prefix_cache.layout`): a :class:`Prompt`.
* :func:`build_answer` makes the :class:`~bot.engine.base.Answer` from plain
  values and closes the stage timings (:class:`Clock`).
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.engine.base import Answer, EngineError, RequestError, StageTimings, VisionRequest
from bot.engine.native import LIB, MTMD, model_pointer
from bot.engine.prefix_cache import Piece, layout
from bot.engine.templates import ChatTemplate, Renderer


def _decode_data_uri(uri: str) -> bytes:
    if not uri.startswith("data:") or "," not in uri:
        # Fetching URLs is the caller's job (with limits and an allow-list);
        # the engine never touches the network.
        raise EngineError("images must be passed as data: URIs")
    header, payload = uri.split(",", 1)
    if not header.endswith(";base64"):
        raise EngineError("image data URIs must be base64-encoded")
    return base64.b64decode(payload, validate=False)


class Vision:
    """The mtmd (CLIP) context of one loaded model."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        #: what stands for an image in the prompt text
        self.marker: str = MTMD.mtmd_default_marker().decode("utf-8")

    @classmethod
    def open(cls, mmproj_path: Path, llama: Any, *, use_gpu: bool, image_max_tokens: int | None) -> Vision:
        """The projector file's context for the loaded ``llama``.  CLIP encoding is batch
        work: it gets the batch thread count (all cores by default), not the generation
        count (half of them).  ``image_max_tokens``: the dynamic-resolution budget."""
        params = MTMD.mtmd_context_params_default()
        params.use_gpu = use_gpu
        params.print_timings = False
        params.n_threads = llama.n_threads_batch
        if image_max_tokens is not None:
            params.image_max_tokens = image_max_tokens
        ctx = MTMD.mtmd_init_from_file(str(mmproj_path).encode(), model_pointer(llama), params)
        if not ctx:
            raise EngineError(f"could not load the CLIP projector {mmproj_path} for this text model")
        vision = cls(ctx)
        if not MTMD.mtmd_support_vision(ctx):
            vision.close()
            raise EngineError(f"{mmproj_path} has no vision encoder")
        return vision

    def close(self) -> None:
        if self.ctx is not None:
            MTMD.mtmd_free(self.ctx)
            self.ctx = None

    def bitmap(self, uri: str) -> Any:
        """One image as an mtmd bitmap, identified by its content hash (for the prefix cache).
        The caller frees it (:meth:`free_bitmap`)."""
        data = _decode_data_uri(uri)
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        bitmap = MTMD.mtmd_helper_bitmap_init_from_buf(self.ctx, buf, len(data), False)
        if not bitmap:
            raise RequestError("the model could not decode that image")
        MTMD.mtmd_bitmap_set_id(bitmap, hashlib.sha256(data).hexdigest()[:32].encode())
        return bitmap

    @staticmethod
    def free_bitmap(bitmap: Any) -> None:
        MTMD.mtmd_bitmap_free(bitmap)

    def tokenize(self, text: bytes, bitmaps: list[Any], add_special: bool = True) -> Any:
        """The prompt's text and image chunks (a new chunk list: :meth:`free_chunks` it)."""
        chunks = MTMD.mtmd_input_chunks_init()
        input_text = MTMD.mtmd_input_text()
        input_text.text = text
        input_text.text_len = len(text)
        input_text.add_special = add_special
        input_text.parse_special = True
        array = (MTMD.mtmd_bitmap_p_ctypes * max(1, len(bitmaps)))(*bitmaps)
        rc = MTMD.mtmd_tokenize(self.ctx, chunks, ctypes.byref(input_text), array, len(bitmaps))
        if rc != 0:
            self.free_chunks(chunks)
            raise EngineError(f"could not tokenize the prompt with its images (mtmd error {rc})")
        return chunks

    @staticmethod
    def free_chunks(chunks: Any) -> None:
        MTMD.mtmd_input_chunks_free(chunks)

    @staticmethod
    def n_tokens(chunks: Any) -> int:
        """The KV cells a chunk list fills."""
        return int(MTMD.mtmd_helper_get_n_tokens(chunks))

    def eval_image(self, ctx: Any, chunk: Any, n_past: int, seq: int, n_batch: int, timings: StageTimings) -> int:
        """Encode an image chunk (CLIP) and evaluate its embeddings into sequence ``seq`` of
        the llama context ``ctx`` from position ``n_past``; returns the position after it."""
        t0 = time.perf_counter()
        if MTMD.mtmd_encode_chunk(self.ctx, chunk) != 0:
            raise EngineError("the image encoder failed on that image")
        embd = MTMD.mtmd_get_output_embd(self.ctx)
        t1 = time.perf_counter()
        new_n_past = LIB.llama_pos(0)
        rc = MTMD.mtmd_helper_decode_image_chunk(
            self.ctx,
            ctx,
            chunk,
            embd,
            LIB.llama_pos(n_past),
            LIB.llama_seq_id(seq),
            n_batch,
            ctypes.byref(new_n_past),
            MTMD.mtmd_helper_post_decode_callback(),  # NULL: no callback
            None,
        )
        if rc != 0:
            raise EngineError(f"could not evaluate the image embeddings (error {rc})")
        timings.image_encode_s += t1 - t0
        timings.prompt_eval_s += time.perf_counter() - t1
        return int(new_n_past.value)


@dataclass(eq=False)
class Prompt:
    """A tokenized prompt: its chunks (owned: :meth:`free` them, or use ``with``) at their positions."""

    chunks: Any
    #: the chunks at their positions (an image piece's chunk lives as long as ``chunks``)
    pieces: list[Piece]
    #: the KV cells the prompt fills
    n_prompt: int
    #: the request's ``max_tokens`` capped to the context left after the prompt
    max_tokens: int

    def free(self) -> None:
        if self.chunks is not None:
            Vision.free_chunks(self.chunks)
            self.chunks = None

    def __enter__(self) -> Prompt:
        return self

    def __exit__(self, *exc: object) -> None:
        self.free()


class PromptBuilder:
    """Requests into :class:`Prompt`\\ s for one loaded model: its mtmd context, chat template and context size."""

    def __init__(self, vision: Vision, renderer: Renderer, n_ctx: int) -> None:
        self.vision = vision
        self.renderer = renderer
        #: the context of one conversation, in tokens
        self.n_ctx = n_ctx

    @property
    def template(self) -> ChatTemplate:
        return self.renderer.template

    def render(self, request: VisionRequest) -> tuple[bytes, bool]:
        """The prompt text (images as the mtmd marker) and whether the tokenizer must add BOS.

        Templates that write ``bos_token`` themselves get no second one, as in llama-server.
        """
        text = self.renderer.render(request, self.vision.marker)
        bos = self.renderer.bos
        starts_with_bos = bool(bos) and text.startswith(bos)
        return text.encode("utf-8"), not starts_with_bos

    def check_room(self, n_prompt: int, max_tokens: int) -> int:
        """``max_tokens`` capped to the context left after the prompt; a prompt that fills it is refused."""
        room = self.n_ctx - n_prompt
        if room < 1:
            raise RequestError(
                f"the question and image need {n_prompt} tokens, more than the model's context "
                f"of {self.n_ctx}; ask a shorter question"
            )
        return min(max_tokens, room)

    def build(self, request: VisionRequest) -> Prompt:
        """Render, tokenize with the images, check the room and lay the chunks out."""
        text, add_special = self.render(request)
        chunks = self._tokenize(text, request.images, add_special)
        try:
            n_prompt = Vision.n_tokens(chunks)
            max_tokens = self.check_room(n_prompt, request.max_tokens)
            return Prompt(chunks, layout(MTMD, chunks), n_prompt, max_tokens)
        except BaseException:
            Vision.free_chunks(chunks)
            raise

    def _tokenize(self, text: bytes, images: tuple[str, ...], add_special: bool) -> Any:
        """The chunks of ``text`` with ``images`` (their bitmaps are freed once tokenized)."""
        bitmaps: list[Any] = []
        try:
            for uri in images:
                bitmaps.append(self.vision.bitmap(uri))
            return self.vision.tokenize(text, bitmaps, add_special)
        finally:
            for bitmap in bitmaps:
                Vision.free_bitmap(bitmap)


@dataclass(slots=True)
class Clock:
    """When one answer started, its prompt was evaluated and its first token came (``perf_counter``)."""

    started: float = field(default_factory=time.perf_counter)
    prompt_done: float = 0.0
    first_token: float | None = None


def build_answer(
    text: str,
    finish_reason: str | None,
    *,
    prompt_tokens: int,
    completion_tokens: int,
    timings: StageTimings,
    clock: Clock,
    finished: float,
) -> Answer:
    """The Answer of a finished generation; ``timings`` holds the prompt stages and gets the rest
    (generation, total, first token, token counts).  No finish reason means "stop"."""
    timings.generation_s = finished - clock.prompt_done
    timings.total_s = finished - clock.started
    timings.first_token_s = (clock.first_token - clock.started) if clock.first_token is not None else timings.total_s
    timings.prompt_tokens = prompt_tokens
    timings.completion_tokens = completion_tokens
    return Answer(
        text=text.strip(),
        finish_reason=finish_reason or "stop",
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        timings=timings,
    )
