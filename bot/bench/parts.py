"""The parts of ``llava-bot bench`` (the method is in :mod:`bot.bench.run`)."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from bot.bench.common import QUESTION, LoopLag, encode, median, ms, pct, photo, timed_engine
from bot.bench.loopback import loopback_bot
from bot.config import Settings
from bot.engine.base import Answer, VisionRequest
from bot.images import ImageLimits, plain_prepare, prepare_image
from bot.runtime import Runtime, image_limits

log = logging.getLogger(__name__)


async def part_overhead(runtime: Runtime, pictures: list[bytes], max_tokens: int, lag: LoopLag) -> dict[str, Any]:
    from bot.testing.fake_discord import BOT_ID, GENERAL_ID

    engine = runtime.engine
    prepared = [prepare_image(p, runtime.limits) for p in pictures]

    def request(i: int) -> VisionRequest:
        return runtime.request([prepared[i]], QUESTION, max_tokens=max_tokens)

    # a. engine alone (in a worker thread, as the queue runs it)
    alone: list[float] = []
    answers: list[Answer] = []
    for i in range(len(pictures)):
        t0 = time.perf_counter()
        answers.append(await asyncio.to_thread(engine.generate, request(i)))
        alone.append(time.perf_counter() - t0)

    durations = timed_engine(runtime)
    # b. through the queue
    queue_wall: list[float] = []
    queue_engine: list[float] = []
    with lag.running():
        for i in range(len(pictures)):
            t0 = time.perf_counter()
            await runtime.submit(request(i), user_id="bench").result()
            queue_wall.append(time.perf_counter() - t0)
            queue_engine.append(durations[-1])

    # c. through the whole bot, on loopback
    bot_wall: list[float] = []
    bot_engine: list[float] = []
    try:
        async with loopback_bot(runtime, stream=False) as (fake, _):  # the final reply alone; part 7 streams
            with lag.running():
                for i, data in enumerate(pictures):
                    att = fake.add_attachment(f"bench{i}.jpg", data)
                    before = len(durations)
                    t0 = time.perf_counter()
                    msg = await fake.user_message(
                        1, GENERAL_ID, f"<@{BOT_ID}> {QUESTION}", attachments=[att], mentions_bot=True
                    )
                    await fake.wait_for_sent(
                        lambda s, m=msg: s.get("message_reference") is not None
                        and str(s["message_reference"]["message_id"]) == m["id"],
                        timeout=120,
                    )
                    bot_wall.append(time.perf_counter() - t0)
                    bot_engine.append(durations[before])
    finally:
        del engine.generate  # back to the class's method

    overhead = [w - e for w, e in zip(bot_wall, bot_engine)]
    queue_overhead = [w - e for w, e in zip(queue_wall, queue_engine)]
    return {
        "answers": answers,
        "engine_ms_p50": ms(median(alone)),
        "queue_ms_p50": ms(median(queue_wall)),
        "bot_ms_p50": ms(median(bot_wall)),
        "queue_overhead_ms_p50": ms(median(queue_overhead)),
        "queue_overhead_ms_p95": ms(pct(queue_overhead, 95)),
        "overhead_ms_p50": ms(median(overhead)),
        "overhead_ms_p95": ms(pct(overhead, 95)),
        "overhead_ratio": round(sum(bot_wall) / sum(bot_engine), 4),
    }


async def part_loop_lag(runtime: Runtime, pictures: list[bytes], max_tokens: int, lag: LoopLag) -> dict[str, Any]:
    # lag.samples were collected while the queue and the bot were answering
    blocking = LoopLag()
    prepared = prepare_image(pictures[0], runtime.limits)
    with blocking.running():
        await asyncio.sleep(0.02)
        runtime.engine.generate(runtime.request([prepared], QUESTION, max_tokens=max_tokens))  # on the loop: the bad way
        await asyncio.sleep(0.02)
    return {
        "loop_lag_ms_max": ms(max(lag.samples, default=0.0)),
        "loop_lag_ms_p99": ms(pct(lag.samples, 99)),
        "loop_lag_samples": len(lag.samples),
        "loop_lag_ms_max_if_on_loop": ms(max(blocking.samples, default=0.0)),
    }


async def part_images(runtime: Runtime, repeats: int = 5) -> dict[str, Any]:
    limits: ImageLimits = runtime.limits
    big = photo(4000, 3000, seed=12)
    jpeg = encode(big, "JPEG", quality=90)
    png = encode(big.resize((2400, 1800)), "PNG")

    def timed(fn: Callable[[], object]) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return median(times)

    lag = LoopLag()
    with lag.running():
        for _ in range(3):
            await runtime.prepare(jpeg)  # what the bot does: in a worker thread
    on_loop = LoopLag()
    with on_loop.running():
        await asyncio.sleep(0.02)
        prepare_image(jpeg, limits)  # the bad way, for comparison
        await asyncio.sleep(0.02)
    prepared_jpeg = prepare_image(jpeg, limits)
    png_uri_bytes = len(base64.b64encode(encode(Image.open(io.BytesIO(plain_prepare(jpeg, limits.max_side))), "PNG")))
    return {
        "max_side": limits.max_side,
        "jpeg_source_mb": round(len(jpeg) / 1e6, 2),
        "png_source_mb": round(len(png) / 1e6, 2),
        "prep_jpeg_ms": ms(timed(lambda: prepare_image(jpeg, limits))),
        "prep_jpeg_plain_ms": ms(timed(lambda: plain_prepare(jpeg, limits.max_side))),
        "prep_png_ms": ms(timed(lambda: prepare_image(png, limits))),
        "prep_png_plain_ms": ms(timed(lambda: plain_prepare(png, limits.max_side))),
        "prep_loop_lag_ms_max": ms(max(lag.samples, default=0.0)),
        "prep_loop_lag_ms_max_if_on_loop": ms(max(on_loop.samples, default=0.0)),
        "data_uri_kb_jpeg": round(len(prepared_jpeg.data_uri) / 1024, 1),
        "data_uri_kb_png": round(png_uri_bytes / 1024, 1),
        "prep_ran_off_loop": True,
    }


async def part_idle_gap(runtime: Runtime, pictures: list[bytes], max_tokens: int) -> dict[str, Any]:
    queue = runtime.queue
    queue.idle_gaps.clear()
    prepared = await asyncio.gather(*(runtime.prepare(p) for p in pictures))
    handles = [
        queue.submit(runtime.request([p], QUESTION, max_tokens=max_tokens), user_id=None) for p in prepared
    ]
    for handle in handles:
        await handle.result()
    gaps = list(queue.idle_gaps)
    prep_times = [p.prepare_ms / 1000 for p in prepared]
    return {
        "idle_gap_ms_median": ms(median(gaps)),
        "idle_gap_ms_max": ms(max(gaps, default=float("nan"))),
        "idle_gap_jobs": len(gaps) + 1,
        "idle_gap_ms_naive": ms(median(prep_times)),
    }


async def part_followup(
    runtime: Runtime, settings: Settings, pictures: list[bytes], max_tokens: int
) -> dict[str, Any]:
    engine = runtime.engine
    first: list[float] = []
    follow: list[float] = []
    for data in pictures:
        prepared = await runtime.prepare(data)
        q1 = runtime.request([prepared], QUESTION, max_tokens=max_tokens)
        a1 = await asyncio.to_thread(engine.generate, q1)
        q2 = runtime.request([prepared], "What colours stand out?", max_tokens=max_tokens, history=[(q1.question, a1.text)])
        a2 = await asyncio.to_thread(engine.generate, q2)
        first.append(a1.timings.first_token_s)
        follow.append(a2.timings.first_token_s)
    # the same follow-up without the prefix cache, for comparison
    engine.prefix_cache = False  # type: ignore[attr-defined]
    try:
        a2_cold = await asyncio.to_thread(engine.generate, q2)
    finally:
        engine.prefix_cache = True  # type: ignore[attr-defined]
    return {
        "first_ttft_ms": ms(median(first)),
        "followup_ttft_ms": ms(median(follow)),
        "followup_speedup": round(median(first) / median(follow), 2),
        "followup_ttft_ms_without_cache": ms(a2_cold.timings.first_token_s),
    }


def part_stock_handler(model: tuple[Path, Path], settings: Settings, picture: bytes, max_tokens: int) -> dict[str, Any]:
    """llama-cpp-python's own Llava15ChatHandler on the same request (verbose=False)."""
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Llava15ChatHandler

    from bot.engine.cpu_repack import decide, model_params_patch
    from bot.engine.projector import read_projector
    from bot.engine.tiny import default_cache_dir

    prepared = prepare_image(picture, image_limits(settings, read_projector(model[1])))
    repack = decide(settings.model.cpu_repack, settings.cache_dir or default_cache_dir())
    with model_params_patch(repack.repack):  # the same CPU weights as the bot's engine
        llm = Llama(
            model_path=str(model[0]),
            chat_handler=Llava15ChatHandler(clip_model_path=str(model[1]), verbose=False),
            n_ctx=settings.model.n_ctx,
            n_gpu_layers=settings.model.n_gpu_layers,
            n_threads=settings.model.n_threads,
            seed=0,
            verbose=False,
        )
    times = []
    try:
        for _ in range(3):
            t0 = time.perf_counter()
            llm.create_chat_completion(
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": prepared.data_uri}},
                            {"type": "text", "text": QUESTION},
                        ],
                    }
                ],
                max_tokens=max_tokens,
                temperature=0.0,
            )
            times.append(time.perf_counter() - t0)
    finally:
        llm.close()
    return {"stock_handler_ms": ms(median(times[1:]))}


