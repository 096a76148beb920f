"""``llava-bot bench``: what the bot costs on top of the model, measured in one run.

Method (all in one process, one run, medians unless said otherwise):

1. overhead: the same questions (distinct pictures, so every one is a cold
   image) answered by the engine alone, through the queue, and through the
   whole bot (the real discord.py client against the loopback fake Discord in
   ``bot.testing``: gateway event, attachment download, image preparation,
   queue, engine, reply).  Per request, overhead = wall time through the path
   minus the engine's own time for that request; ratio = total wall time
   through the bot / total engine time.
2. event-loop lag: a 10 ms timer runs while the model generates; lag = how
   late each tick fires.  For comparison, one answer run on the loop itself.
3. image preparation: a 12 MP photo-like JPEG and a large PNG, our
   ``prepare_image`` vs plain Pillow (open, convert, thumbnail) on the same
   bytes; and the loop lag while ``Runtime.prepare`` works (off the loop).
4. idle gap: a backlog of prepared questions; the time the engine thread
   waits between finishing one job and starting the next.  The naive design
   (prepare inside the consumer) would wait the preparation time instead.
5. follow-up: time to first token of a first question about a picture vs a
   follow-up about the same picture (same max_tokens), with the prefix cache,
   and without it for comparison.
6. where the text model and CLIP ran, stage timings, tokens/s; and
   llama-cpp-python's own LLaVA handler on the same request for comparison.
7. streaming answers into Discord: off vs on (:mod:`bot.bench.stream`).
8. moving pictures: a 4-frame GIF and a 4 s clip against a still, each as
   the bot prepares and answers it (:mod:`bot.bench.frames`).

The default model is the generated "bench" pair: LLaVA-1.5 token counts
(336 px images, 14 px patches, 576 image tokens) with widths small enough for
a CPU.  ``--model/--mmproj`` measure a real pair instead.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from bot.bench.common import LoopLag, encode, median, ms, photo
from bot.bench.frames import part_frames
from bot.bench.frames import rows as frames_rows
from bot.bench.parts import part_followup, part_idle_gap, part_images, part_loop_lag, part_overhead, part_stock_handler
from bot.bench.stream import part_streaming
from bot.bench.stream import rows as stream_rows
from bot.config import Settings
from bot.engine.base import Answer
from bot.runtime import Runtime, build_engine, resolve_model


async def run_bench(
    settings: Settings,
    *,
    requests: int = 8,
    max_tokens: int = 32,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    started = time.perf_counter()
    if settings.model.path is None:
        from bot.engine.tiny import BENCH, ensure_model_pair

        path, mmproj = ensure_model_pair(BENCH, settings.cache_dir)
        settings = settings.model_copy(
            update={"model": settings.model.model_copy(update={"path": path, "mmproj": mmproj})}
        )
        model_name = "generated bench pair (LLaVA-1.5 token counts, small widths)"
    else:
        model_name = str(settings.model.path)
    files = resolve_model(settings)
    settings = settings.model_copy(
        update={
            "queue": settings.queue.model_copy(update={"per_user_per_minute": 0, "max_size": 64, "per_user": 64}),
            # every path answers with the same length, the bot's default included
            "generation": settings.generation.model_copy(
                update={"max_tokens": max_tokens, "max_tokens_limit": max(max_tokens, settings.generation.max_tokens_limit)}
            ),
        }
    )
    progress("loading the model")
    runtime = Runtime(settings, build_engine(settings, files))
    await runtime.start()
    info = runtime.engine.info
    results: dict[str, Any] = {"model": model_name, "text_backend": info.text_backend, "clip_backend": info.clip_backend}
    try:
        pictures = [encode(photo(640, 480, seed=i), "JPEG", quality=90) for i in range(requests)]
        lag = LoopLag()
        progress("1/8 overhead: engine alone, through the queue, through the whole bot")
        overhead = await part_overhead(runtime, pictures, max_tokens, lag)
        answers: list[Answer] = overhead.pop("answers")
        results.update(overhead)
        progress("2/8 event-loop lag")
        results.update(await part_loop_lag(runtime, pictures, max_tokens, lag))
        progress("3/8 image preparation")
        results.update(await part_images(runtime))
        progress("4/8 consumer idle gap with a backlog")
        more = [encode(photo(640, 480, seed=100 + i), "JPEG", quality=90) for i in range(requests)]
        results.update(await part_idle_gap(runtime, more, max_tokens))
        progress("5/8 follow-up vs first question")
        follow_pics = [encode(photo(640, 480, seed=200 + i), "JPEG", quality=90) for i in range(max(3, requests // 2))]
        results.update(await part_followup(runtime, settings, follow_pics, max_tokens))
        progress("6/8 streaming into Discord: off vs on")
        results.update(await part_streaming(runtime, pictures[: max(2, requests // 2)], max_tokens))
        progress("7/8 moving pictures: a 4-frame GIF and a 4 s clip against a still")
        results.update(await part_frames(runtime, max_tokens))
        progress("8/8 stage timings")
        t = [a.timings for a in answers]
        results.update(
            {
                "image_encode_ms": ms(median([x.image_encode_s for x in t])),
                "prompt_eval_ms": ms(median([x.prompt_eval_s for x in t])),
                "generation_ms": ms(median([x.generation_s for x in t])),
                "engine_total_ms": ms(median([x.total_s for x in t])),
                "prompt_tokens": int(median([x.prompt_tokens for x in t])),
                "completion_tokens": int(median([x.completion_tokens for x in t])),
                "tokens_per_s": round(median([x.tokens_per_s for x in t]), 1),
            }
        )
    finally:
        await runtime.close()
    progress("comparison: llama-cpp-python's own LLaVA handler")
    results.update(await asyncio.to_thread(part_stock_handler, (files.path, files.mmproj), settings, pictures[0], max_tokens))
    results["requests"] = requests
    results["max_tokens"] = max_tokens
    results["bench_seconds"] = round(time.perf_counter() - started, 1)
    return results


def table(r: dict[str, Any]) -> str:
    """The human-readable report."""

    def row(label: str, value: object, note: str = "") -> str:
        return f"  {label:<44} {value!s:>12}  {note}".rstrip()

    ratio = r["overhead_ratio"]
    lines = [
        f"llava-bot bench: {r['model']}",
        f"  text model on {r['text_backend']}, CLIP on {r['clip_backend']}; {r['requests']} questions, max_tokens {r['max_tokens']}",
        "",
        "1. overhead (per request)",
        row("engine alone, p50", f"{r['engine_ms_p50']} ms"),
        row("through the queue, p50", f"{r['queue_ms_p50']} ms", f"overhead p50 {r['queue_overhead_ms_p50']} ms, p95 {r['queue_overhead_ms_p95']} ms"),
        row("through the whole bot (loopback Discord), p50", f"{r['bot_ms_p50']} ms"),
        row("bot overhead p50 / p95", f"{r['overhead_ms_p50']} / {r['overhead_ms_p95']} ms", "target: p50 < 10 ms"),
        row("bot time / engine time", f"{ratio:.3f}", f"{(ratio - 1) * 100:+.1f} % (target < 5 %)"),
        "",
        "2. event-loop lag while the model generates (10 ms timer)",
        row("max / p99", f"{r['loop_lag_ms_max']} / {r['loop_lag_ms_p99']} ms", f"{r['loop_lag_samples']} ticks; target max < 20 ms"),
        row("max if the model ran on the loop", f"{r['loop_lag_ms_max_if_on_loop']} ms", "(not what the bot does)"),
        "",
        f"3. image preparation (long side {r['max_side']} px)",
        row(f"12 MP JPEG ({r['jpeg_source_mb']} MB): ours / plain Pillow", f"{r['prep_jpeg_ms']} / {r['prep_jpeg_plain_ms']} ms", f"{r['prep_jpeg_plain_ms'] / r['prep_jpeg_ms']:.1f}x faster (target 5x)"),
        row(f"large PNG ({r['png_source_mb']} MB): ours / plain Pillow", f"{r['prep_png_ms']} / {r['prep_png_plain_ms']} ms"),
        row("loop lag while preparing (worker thread)", f"{r['prep_loop_lag_ms_max']} ms", f"on the loop it would be {r['prep_loop_lag_ms_max_if_on_loop']} ms"),
        row("data URI: JPEG / PNG", f"{r['data_uri_kb_jpeg']} / {r['data_uri_kb_png']} KB"),
        "",
        "4. consumer idle gap with a backlog",
        row("median / max", f"{r['idle_gap_ms_median']} / {r['idle_gap_ms_max']} ms", f"{r['idle_gap_jobs']} jobs; target median < 1 ms"),
        row("if images were prepared in the consumer", f"{r['idle_gap_ms_naive']} ms"),
        "",
        "5. follow-up about the same image: time to first token",
        row("first question / follow-up", f"{r['first_ttft_ms']} / {r['followup_ttft_ms']} ms", f"{r['followup_speedup']}x (target 3x)"),
        row("follow-up without the prefix cache", f"{r['followup_ttft_ms_without_cache']} ms"),
        "",
        "6. stages (median per answer)",
        row("image encode (CLIP)", f"{r['image_encode_ms']} ms"),
        row("prompt eval", f"{r['prompt_eval_ms']} ms", f"{r['prompt_tokens']} prompt tokens"),
        row("generation", f"{r['generation_ms']} ms", f"{r['completion_tokens']} tokens @ {r['tokens_per_s']} tok/s"),
        row("engine total", f"{r['engine_total_ms']} ms"),
        row("llama-cpp-python's own LLaVA handler", f"{r['stock_handler_ms']} ms", "same request, for comparison"),
        "",
        f"  measured in {r['bench_seconds']} s",
    ]
    if "stream_cost_pct" in r:

        lines[-2:-2] = stream_rows(r, row)
    if "frames_clip_over_still" in r:
        lines[-2:-2] = frames_rows(r, row)
    return "\n".join(lines)


