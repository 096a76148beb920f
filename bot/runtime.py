"""The model side of the bot, shared by the CLI and the Discord client.

``Runtime`` owns the settings, the engine and the queue: it loads (and warms)
the model before anything is accepted, loads images (one loader: download
slots, then the image pool) for every front end, is the one route to the
queue (reserve, reserve when there is room, submit), builds requests with the
configured caps, and closes everything in order.  Nothing here imports discord.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bot.config import ConfigError, Settings
from bot.engine.base import Answer, Engine, RequestError, VisionRequest
from bot.engine.projector import TILED_SIDE, Projector
from bot.image_pool import ImagePool
from bot.images import ImageError, ImageLimits, PreparedImage, check_declared_size
from bot.media import MSG_NO_PICTURE, PreparedMedia
from bot.queue import InferenceQueue, JobHandle, Lane, QueueClosed, Refused, Reservation

if TYPE_CHECKING:
    import aiohttp

    from bot.engine.llama_cpp import LlamaCppEngine

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ModelFiles:
    path: Path
    mmproj: Path
    builtin: bool


def resolve_model(settings: Settings) -> ModelFiles:
    """The configured model pair, or the built-in tiny random one."""
    if settings.model.path is not None and settings.model.mmproj is not None:
        return ModelFiles(settings.model.path, settings.model.mmproj, builtin=False)
    from bot.engine.tiny import TINY, ensure_model_pair

    path, mmproj = ensure_model_pair(TINY, settings.cache_dir)
    log.warning(
        "no model.path configured: using the built-in tiny random model, its answers are random text "
        "(see README: 'Run it for real')"
    )
    return ModelFiles(path, mmproj, builtin=True)


def build_engine(settings: Settings, files: ModelFiles | None = None) -> LlamaCppEngine:
    from bot.engine.llama_cpp import LlamaCppEngine  # imports llama_cpp: only when a model is wanted

    files = files or resolve_model(settings)
    model = settings.model.model_copy(update={"path": files.path, "mmproj": files.mmproj})
    return LlamaCppEngine.from_settings(model, image_max_tokens=settings.images.max_image_tokens, cache_dir=settings.cache_dir)


def image_limits(settings: Settings, projector: Projector | None = None) -> ImageLimits:
    """The image caps; the long side comes from ``images.max_side``, else from
    the local model's projector (see :meth:`bot.engine.projector.Projector.max_side`)."""
    images = settings.images
    max_side = images.max_side
    if max_side is None:
        # A remote engine's server sizes images itself: send enough for tiling encoders.
        max_side = projector.max_side(images.max_image_tokens) if projector is not None else TILED_SIDE
    return ImageLimits(
        max_bytes=images.max_bytes,
        max_pixels=images.max_pixels,
        max_side=max_side,
        jpeg_quality=images.jpeg_quality,
    )


def build_engines(settings: Settings) -> list[Engine]:
    """One engine per ``engines`` entry (the local one loads the [model] files)."""
    import os

    from bot.engine.openai import OpenAIEngine

    engines: list[Engine] = []
    for entry in settings.engines:
        if entry.kind == "local":
            engines.append(build_engine(settings))
        else:
            assert entry.url is not None
            api_key = os.environ.get(entry.api_key_env) if entry.api_key_env else None
            engines.append(
                OpenAIEngine(entry.url, model=entry.model, api_key=api_key, timeout_s=entry.timeout_s, name=entry.name)
            )
    return engines


class Runtime:
    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self.settings = settings
        self.engines: list[Engine] = [engine] if engine is not None else build_engines(settings)
        #: the first engine (the only one in the usual one-GPU setup)
        self.engine = self.engines[0]
        self.limits = image_limits(settings, getattr(self.engine, "projector", None))
        #: image preparation: bounded threads and a pixel budget ([images])
        self.image_pool = ImagePool.from_settings(settings.images, self.limits)
        self.queue = InferenceQueue(
            self.engines,
            max_size=settings.queue.max_size,
            per_user=settings.queue.per_user,
            per_user_per_minute=settings.queue.per_user_per_minute,
            caption_max_size=settings.queue.caption_max_size,
        )
        #: downloads at once (``queue.downloads``), for every front end together
        self._downloads = asyncio.Semaphore(max(1, settings.queue.downloads))
        self._started = False

    async def start(self) -> None:
        """Load and warm the model (in a thread), then start the consumer."""
        if self._started:
            return
        for engine in self.engines:  # native start-up on this (the main) thread, then load in workers
            init = getattr(engine, "init_native", None)
            if init is not None:
                init()
        try:
            await asyncio.gather(*(asyncio.to_thread(engine.load) for engine in self.engines))
        except RequestError as exc:  # the warm-up question does not fit: a setting, not a bug
            raise ConfigError(
                f"model.n_ctx ({self.settings.model.n_ctx}) is too small for one image question with this model: {exc}"
            ) from None
        await self.queue.start()
        self._started = True

    @property
    def started(self) -> bool:
        """The engines are loaded and the queue takes jobs."""
        return self._started

    async def close(self) -> None:
        await self.queue.close()
        for engine in self.engines:
            await asyncio.to_thread(engine.close)
        self.image_pool.close()
        self._started = False

    # -- images: one loader for every front end ----------------------------------------------

    async def prepare(self, data: bytes) -> PreparedImage:
        """Validate and shrink one image off the event loop (raises ImageError),
        in the image pool: a few threads, a bounded number of pixels at once."""
        return await self.image_pool.prepare(data)

    async def load_media(
        self,
        session: aiohttp.ClientSession,
        url: str,
        declared_size: int | None,
        *,
        allowed_hosts: Sequence[str],
        content_type: str | None = None,
    ) -> PreparedMedia:
        """A still, an animation's frames or a clip's from a link, ready for the model
        (raises ImageError): the one loader of every front end.  The declared size first
        (an oversized file is never downloaded), then the download (``allowed_hosts`` only,
        the front end's: where its pictures live; no redirects, a byte cap), then
        preparation in the image pool.  A download slot (``queue.downloads`` at once, for
        jobs and the watcher together) is held until the picture is prepared, so at most
        that many downloaded files wait in memory.  A declared ``video/*`` type is
        held to ``images.max_video_bytes`` (before download, and as the download's byte
        cap), anything else to ``images.max_bytes``; a declared ``audio/*`` file is
        refused without downloading.  What the file is, is still told from its bytes."""
        from bot.fetch import fetch_bytes

        declared = (content_type or "").split(";", 1)[0].strip().lower()
        if declared.startswith("audio/"):
            raise ImageError(MSG_NO_PICTURE)
        limits = self.limits
        if declared.startswith("video/"):
            video_bytes = self.image_pool.media.max_video_bytes
            check_declared_size(declared_size, dataclasses.replace(limits, max_bytes=video_bytes))
            limits = dataclasses.replace(limits, max_bytes=max(limits.max_bytes, video_bytes))
        else:
            check_declared_size(declared_size, limits)
        async with self._downloads:
            data = await fetch_bytes(
                session, url, allowed_hosts=allowed_hosts, limits=limits, timeout_s=self.settings.images.download_timeout_s
            )
            return await self.prepare_media(data)

    async def prepare_media(self, data: bytes) -> PreparedMedia:
        """A still, an animation's sampled frames or a clip's (raises ImageError),
        prepared in the image pool, each frame counted against its pixel budget."""
        return await self.image_pool.prepare_media(data)

    def request(
        self,
        images: Sequence[PreparedImage],
        question: str | None,
        *,
        max_tokens: int | None = None,
        history: Sequence[tuple[str, str]] = (),
        instruction: str = "",
    ) -> VisionRequest:
        """The request for a question (cut to ``generation.max_question_chars``), with
        ``instruction`` (the language to answer in) on a line of its own after it."""
        gen = self.settings.generation
        text = (question or "").strip() or gen.default_question
        if len(text) > gen.max_question_chars:
            text = text[: gen.max_question_chars].rstrip() + "…"
        if instruction:
            text = f"{text}\n{instruction}"
        return VisionRequest(
            images=tuple(image.data_uri for image in images),
            question=text,
            max_tokens=gen.clamp(max_tokens),
            temperature=gen.temperature,
            history=tuple(history),
            system_prompt=gen.system_prompt,
            time_limit_s=gen.timeout_s,
        )

    # -- the one route to the queue --------------------------------------------------------

    def reserve(self, user_id: int | str | None, count: int = 1, *, lane: Lane = "question") -> Reservation:
        """Hold places for ``count`` jobs now, or raise :class:`Refused` (queue full, the
        user's limits); see :meth:`InferenceQueue.reserve`."""
        return self.queue.reserve(user_id, count, lane=lane)

    async def reserve_when_room(self, count: int, *, lane: Lane = "question", timeout_s: float | None = None) -> Reservation | None:
        """Hold places for ``count`` jobs, waiting while the queue is full (replays, the
        watcher): None if there is still no room after ``timeout_s`` (None: wait as long as
        it takes).  Raises :class:`QueueClosed` when the bot stops."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            try:
                return self.queue.reserve(None, count, lane=lane)
            except QueueClosed:
                raise
            except Refused:
                if deadline is not None and time.monotonic() >= deadline:
                    return None
            await asyncio.sleep(0.5)

    def submit(
        self,
        request: VisionRequest,
        user_id: int | str | None = None,
        *,
        reservation: Reservation | None = None,
        on_text: Callable[[str], None] | None = None,
        on_restart: Callable[[], None] | None = None,
    ) -> JobHandle:
        """Queue a request (in a place held by ``reservation``, or one reserved now for
        ``user_id``); ``on_text`` gets the answer as it is generated, on the event loop."""
        return self.queue.submit(request, user_id=user_id, reservation=reservation, on_text=on_text, on_restart=on_restart)

    async def ask(
        self,
        data: bytes,
        question: str | None = None,
        *,
        max_tokens: int | None = None,
        user_id: int | str | None = None,
    ) -> Answer:
        """Prepare, queue and answer one image question."""
        prepared = await self.prepare_media(data)
        handle = self.submit(self.request(prepared.images, question, max_tokens=max_tokens), user_id)
        return await handle.result()
