"""What parallel slots buy: the same questions with 1 slot and with N.

:func:`measure_parallel` loads the engine twice (``parallel=1`` and
``parallel=slots``), answers ``questions`` questions about distinct pictures
(every image cold) with as many worker threads as the engine has slots, the
way the queue's consumers call it, and reports wall seconds, aggregate
tokens/s and the latency of a single answer on an idle engine.  Temperature 0,
so both runs generate the same tokens.

``llava-bot bench --parallel N`` runs it (:func:`run_parallel`) on the
configured model, or on the generated 60 M-parameter pair.
"""

from __future__ import annotations

import base64
import io
import queue
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from bot.engine.base import Answer, VisionRequest
from bot.engine.llama_cpp import LlamaCppEngine

QUESTION = "What is in this picture?"


def _picture(i: int) -> str:
    colour = ((37 * i) % 256, (91 * i + 60) % 256, (173 * i + 120) % 256)
    img = Image.new("RGB", (336, 336), (40, 90, 200))
    ImageDraw.Draw(img).ellipse((40 + i % 7 * 8, 60, 260, 280 - i % 5 * 9), fill=colour)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _answer_all(engine: LlamaCppEngine, requests: list[VisionRequest]) -> tuple[float, list[Answer]]:
    """Answer ``requests`` with ``engine.slots`` worker threads; (wall seconds, answers)."""
    todo: queue.Queue[tuple[int, VisionRequest]] = queue.Queue()
    for item in enumerate(requests):
        todo.put(item)
    answers: list[Any] = [None] * len(requests)

    def worker() -> None:
        while True:
            try:
                i, request = todo.get_nowait()
            except queue.Empty:
                return
            try:
                answers[i] = engine.generate(request)
            except Exception as exc:  # reported, not raised in a thread
                answers[i] = exc

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(engine.slots)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    for answer in answers:
        if isinstance(answer, Exception):
            raise answer
    return wall, answers


def measure_parallel(
    model_paths: Sequence[str | Path],
    slots: int = 4,
    questions: int = 8,
    max_tokens: int = 128,
    *,
    n_ctx: int = 2048,
    n_gpu_layers: int = 0,
    n_threads: int | None = None,
) -> dict[str, Any]:
    """``questions`` questions with 1 slot and with ``slots``: seconds, aggregate tok/s, single latency.

    ``model_paths`` is ``(text model, mmproj)``.  Returns a dict: ``{"slots", "questions",
    "max_tokens", "runs": {1: {...}, slots: {...}}, "speedup"}``; each run holds ``seconds``,
    ``completion_tokens``, ``tokens_per_s``, ``single_latency_s``, ``single_tokens`` and
    ``mean_latency_s`` (a question's engine time, total_s, averaged).
    """
    text_model, mmproj = model_paths
    requests = [
        VisionRequest(images=(_picture(i),), question=QUESTION, max_tokens=max_tokens, temperature=0.0) for i in range(questions)
    ]
    lone = VisionRequest(images=(_picture(questions + 1),), question=QUESTION, max_tokens=max_tokens, temperature=0.0)
    runs: dict[int, dict[str, Any]] = {}
    for n in dict.fromkeys((1, slots)):
        engine = LlamaCppEngine(text_model, mmproj, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, n_threads=n_threads, parallel=n)
        engine.load()  # with its warm-up
        try:
            t0 = time.perf_counter()
            single = engine.generate(lone)
            single_s = time.perf_counter() - t0
            seconds, answers = _answer_all(engine, requests)
        finally:
            engine.close()
        tokens = sum(a.completion_tokens for a in answers)
        runs[n] = {
            "seconds": round(seconds, 3),
            "completion_tokens": tokens,
            "tokens_per_s": round(tokens / seconds, 1) if seconds > 0 else 0.0,
            "single_latency_s": round(single_s, 3),
            "single_tokens": single.completion_tokens,
            "mean_latency_s": round(sum(a.timings.total_s for a in answers) / len(answers), 3),
        }
    speedup = runs[1]["seconds"] / runs[slots]["seconds"] if runs[slots]["seconds"] > 0 else 0.0
    return {"slots": slots, "questions": questions, "max_tokens": max_tokens, "runs": runs, "speedup": round(speedup, 2)}


def run_parallel(settings: Any, slots: int, *, questions: int = 8, max_tokens: int = 64) -> dict[str, Any]:
    """``llava-bot bench --parallel N``: :func:`measure_parallel` on the configured model,
    or on the generated 60 M-parameter pair (:data:`bot.engine.tiny.BENCH_60M`)."""
    model = settings.model
    if model.path is not None and model.mmproj is not None:
        paths: tuple[Path, Path] = (model.path, model.mmproj)
        name = str(model.path)
    else:
        from bot.engine.tiny import BENCH_60M, ensure_model_pair

        paths = ensure_model_pair(BENCH_60M, settings.cache_dir)
        name = "generated bench60m pair (60 M parameters, 32k vocabulary, 64 image tokens)"
    result = measure_parallel(
        paths,
        slots,
        questions,
        max_tokens,
        n_ctx=model.n_ctx,
        n_gpu_layers=model.n_gpu_layers,
        n_threads=model.n_threads,
    )
    result["model"] = name
    return result


def table(r: dict[str, Any]) -> str:
    """The human-readable report of :func:`run_parallel`."""
    one, many = r["runs"][1], r["runs"][r["slots"]]
    lines = [
        f"parallel slots: {r['model']}",
        f"  {r['questions']} questions at once, max_tokens {r['max_tokens']}, temperature 0 (the same tokens both ways)",
        f"  {'':<10} {'seconds':>8} {'tok/s':>8} {'one answer alone':>17}",
    ]
    for label, run in (("1 slot", one), (f"{r['slots']} slots", many)):
        lines.append(f"  {label:<10} {run['seconds']:>8.2f} {run['tokens_per_s']:>8.1f} {run['single_latency_s']:>15.2f} s")
    lines.append(f"  {r['slots']} slots finish the {r['questions']} questions {r['speedup']}x faster (target 1.4x on this 2-core CPU)")
    return "\n".join(lines)
