"""Time per moderation rule after the first: one image asked its caption and
five rule questions back to back (the checker's own questions, in the caption
lane of the real queue, on the real local engine), prefix cache on and off.

    python -m tests.e2e.rule_timing              # the tiny pair and the bench pair
    python -m tests.e2e.rule_timing --shape bench --rounds 10

Each round uses a new 640x480 picture; medians over the rounds.  The result
is written up in BENCHMARKS.md ("Moderation rules").
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path

from bot.config import load_settings
from bot.engine.tiny import BENCH, TINY, ensure_model_pair
from bot.moderation.checker import Checker, WatchedImage, WatchedPost
from bot.runtime import Runtime
from tests.helpers import jpeg_bytes, picture

RULES = [
    {"name": f"rule{i}", "question": q}
    for i, q in enumerate(
        [
            "Does this image show a weapon?",
            "Does this image show nudity?",
            "Does this image show blood or gore?",
            "Does this image show a personal document such as an ID card?",
            "Does this image show hateful symbols?",
        ]
    )
]


async def measure(shape, prefix_cache: bool, rounds: int, cache_dir: Path) -> str:
    path, mmproj = ensure_model_pair(shape, cache_dir)
    settings = load_settings(
        overrides={
            "model": {"path": str(path), "mmproj": str(mmproj), "n_ctx": 2048, "n_gpu_layers": 0, "prefix_cache": prefix_cache},
            "generation": {"max_tokens": 64, "max_tokens_limit": 128},
            "moderation": {"watch_channels": [1], "rules": RULES, "rule_max_tokens": 8, "caption_max_tokens": 8},
            "queue": {"caption_max_size": 16},
        }
    )
    runtime = Runtime(settings)
    await runtime.start()
    checker = Checker(settings, runtime, lambda: None)  # type: ignore[arg-type, return-value]
    post = WatchedPost(1, 1, 1, 1, "poster", "link", (WatchedImage("url", "a.jpg", None, None),))
    questions = checker.questions(post, post.images[0])
    first: list[float] = []
    later: list[float] = []
    later_image: list[float] = []
    try:
        for r in range(rounds):
            prepared = await runtime.prepare(jpeg_bytes(picture((640, 480), colour=(r * 40 % 255, 90, 30))))
            reservation = runtime.queue.reserve(None, len(questions), lane="caption")
            handles = [
                runtime.submit(runtime.request([prepared], q.text, max_tokens=q.max_tokens), reservation=reservation) for q in questions
            ]
            timings = [(await h.result()).timings for h in handles]
            reservation.close()
            first.append(timings[0].total_s)
            later += [t.total_s for t in timings[1:]]
            later_image += [t.image_encode_s for t in timings[1:]]
    finally:
        await runtime.close()
    return (
        f"{shape.name:6s} prefix_cache={'on ' if prefix_cache else 'off'}: first question {statistics.median(first) * 1000:7.1f} ms; "
        f"each later rule {statistics.median(later) * 1000:7.1f} ms median, {max(later) * 1000:7.1f} ms max "
        f"(image encode {statistics.median(later_image) * 1000:5.1f} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=["tiny", "bench", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    shapes = {"tiny": [TINY], "bench": [BENCH], "both": [TINY, BENCH]}[args.shape]
    with tempfile.TemporaryDirectory() as cache:
        for shape in shapes:
            for prefix_cache in (True, False):
                print(asyncio.run(measure(shape, prefix_cache, args.rounds, Path(cache))), flush=True)


if __name__ == "__main__":
    main()
