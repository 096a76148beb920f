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

The default model is the generated "bench" pair: LLaVA-1.5 token counts
(336 px images, 14 px patches, 576 image tokens) with widths small enough for
a CPU.  ``--model/--mmproj`` measure a real pair instead.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import random
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFilter

from bot.config import Settings
from bot.engine.base import Answer, VisionRequest
from bot.images import ImageLimits, plain_prepare, prepare_image
from bot.runtime import Runtime, build_engine, image_limits

log = logging.getLogger(__name__)

QUESTION = "What is in this picture?"


# -- pictures ------------------------------------------------------------------------


def photo(width: int, height: int, seed: int) -> Image.Image:
    """Photo-like content: gradients, shapes, blur and grain (compresses like a photo)."""
    rng = random.Random(seed)
    sky = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    tint = Image.new("RGB", (width, height), tuple(rng.randrange(60, 200) for _ in range(3)))
    img = Image.blend(sky, tint, 0.5)
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        x, y = rng.randrange(width), rng.randrange(height)
        r = rng.randrange(width // 20, width // 5)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rng.randrange(256) for _ in range(3)))
    img = img.filter(ImageFilter.GaussianBlur(radius=max(1, width // 400)))
    grain = Image.effect_noise((width, height), 18).convert("RGB")
    return Image.blend(img, grain, 0.08)


def encode(img: Image.Image, fmt: str, **params: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


# -- small statistics ------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


class LoopLag:
    """A 10 ms timer on the event loop; records how late each tick fires."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            self.samples.append(max(0.0, loop.time() - due))

    @contextmanager
    def running(self) -> Iterator[LoopLag]:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        try:
            yield self
        finally:
            self._task.cancel()


# -- the parts -------------------------------------------------------------------------


def _data_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def _timed_engine(runtime: Runtime) -> list[float]:
    """Wrap the engine so each call's own duration is recorded (list returned;
    ``del engine.generate`` undoes it)."""
    engine = runtime.engine
    original = engine.generate
    durations: list[float] = []

    def generate(request: VisionRequest, **kw: Any) -> Answer:
        t0 = time.perf_counter()
        try:
            return original(request, **kw)
        finally:
            durations.append(time.perf_counter() - t0)

    engine.generate = generate  # type: ignore[method-assign]
    return durations


@asynccontextmanager
async def loopback_bot(runtime: Runtime, **discord: Any) -> AsyncIterator[tuple[Any, Any]]:
    """The whole bot on ``runtime`` against a fresh fake Discord, discord.py's logs quiet:
    (the fake, the bot).  ``discord``: more [discord] settings."""
    from bot.testing.fake_discord import FakeDiscord
    from bot.testing.harness import running_bot

    discord_log = logging.getLogger("discord")
    saved_level = discord_log.level
    discord_log.setLevel(logging.ERROR)
    model = runtime.settings.model
    assert model.path is not None and model.mmproj is not None
    try:
        with tempfile.TemporaryDirectory() as state:
            async with FakeDiscord() as fake:
                async with running_bot(
                    fake, (model.path, model.mmproj), Path(state), runtime=runtime,
                    discord={"sync_commands": False, **discord}, queue={"per_user_per_minute": 0},
                ) as (bot, _):
                    yield fake, bot
    finally:
        discord_log.setLevel(saved_level)


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

    durations = _timed_engine(runtime)
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


# -- the whole run -------------------------------------------------------------------------


async def run_bench(
    settings: Settings,
    *,
    requests: int = 8,
    max_tokens: int = 32,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    from bot.runtime import resolve_model

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
        progress("1/7 overhead: engine alone, through the queue, through the whole bot")
        overhead = await part_overhead(runtime, pictures, max_tokens, lag)
        answers: list[Answer] = overhead.pop("answers")
        results.update(overhead)
        progress("2/7 event-loop lag")
        results.update(await part_loop_lag(runtime, pictures, max_tokens, lag))
        progress("3/7 image preparation")
        results.update(await part_images(runtime))
        progress("4/7 consumer idle gap with a backlog")
        more = [encode(photo(640, 480, seed=100 + i), "JPEG", quality=90) for i in range(requests)]
        results.update(await part_idle_gap(runtime, more, max_tokens))
        progress("5/7 follow-up vs first question")
        follow_pics = [encode(photo(640, 480, seed=200 + i), "JPEG", quality=90) for i in range(max(3, requests // 2))]
        results.update(await part_followup(runtime, settings, follow_pics, max_tokens))
        progress("6/7 streaming into Discord: off vs on")
        from bot.bench_stream import part_streaming

        results.update(await part_streaming(runtime, pictures[: max(2, requests // 2)], max_tokens))
        progress("7/7 stage timings")
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
        from bot.bench_stream import rows

        lines[-2:-2] = rows(r, row)
    return "\n".join(lines)



# -- scaling out: one vs two OpenAI-compatible endpoints ------------------------------------


def _start_server(model: tuple[Path, Path], port: int, threads: int) -> Any:
    import subprocess
    import sys

    return subprocess.Popen(
        [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(model[0]), "--clip_model_path", str(model[1]), "--chat_format", "llava-1-5",
            "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_gpu_layers", "0",
            "--n_threads", str(threads), "--n_threads_batch", str(threads),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run_scale_out(
    settings: Settings, *, questions: int = 12, max_tokens: int = 16, progress: Callable[[str], None] = lambda _: None
) -> dict[str, Any]:
    """Throughput of the queue with one endpoint vs two (llama-cpp-python servers on loopback)."""
    import urllib.request

    from bot.config import EngineSettings

    if settings.model.path is None or settings.model.mmproj is None:
        from bot.engine.tiny import BENCH, ensure_model_pair

        model = ensure_model_pair(BENCH, settings.cache_dir)
    else:
        model = (settings.model.path, settings.model.mmproj)
    ports = [_free_port(), _free_port()]
    procs = [_start_server(model, port, threads=1) for port in ports]
    results: dict[str, Any] = {"scale_questions": questions, "scale_max_tokens": max_tokens}
    try:
        progress("starting two llama-cpp-python servers")
        for port, proc in zip(ports, procs):
            deadline = time.monotonic() + 120
            while True:
                if proc.poll() is not None:
                    raise RuntimeError("a llama-cpp-python server did not start (is the [server] extra installed?)")
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
        pictures = [encode(photo(640, 480, seed=300 + i), "JPEG", quality=90) for i in range(questions)]
        for count in (1, 2):
            progress(f"{questions} questions through {count} endpoint(s)")
            engines = [EngineSettings(kind="openai", url=f"http://127.0.0.1:{p}/v1") for p in ports[:count]]
            run_settings = settings.model_copy(
                update={
                    "engines": engines,
                    "queue": settings.queue.model_copy(update={"max_size": 100, "per_user": 100, "per_user_per_minute": 0}),
                }
            )
            runtime = Runtime(run_settings)
            await runtime.start()
            try:
                prepared = [await runtime.prepare(p) for p in pictures]
                await runtime.submit(runtime.request([prepared[0]], QUESTION, max_tokens=max_tokens)).result()  # warm
                t0 = time.perf_counter()
                handles = [runtime.submit(runtime.request([p], QUESTION, max_tokens=max_tokens)) for p in prepared]
                for handle in handles:
                    await handle.result()
                elapsed = time.perf_counter() - t0
            finally:
                await runtime.close()
            results[f"throughput_{count}_endpoint{'s' if count > 1 else ''}_per_s"] = round(questions / elapsed, 2)
        results["scale_out_ratio"] = round(results["throughput_2_endpoints_per_s"] / results["throughput_1_endpoint_per_s"], 2)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    return results
