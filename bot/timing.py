"""Stage timings -> the one-line footer under every answer."""

from __future__ import annotations

from bot.engine.base import StageTimings

SEPARATOR = " · "


def _secs(value: float) -> str:
    return f"{value:.2f} s"


def footer(timings: StageTimings, frames: int = 1) -> str:
    """One line, e.g. ``⏱ queue 0.00 s · image 0.02 s · prompt 0.31 s · 54 tok @ 58.5 tok/s · total 2.01 s``.

    ``total`` is what the asker waited once the job was accepted: queue wait
    plus the engine's own total (image encode, prompt, generation, overhead).
    """
    parts = [
        f"queue {_secs(timings.queue_wait_s)}",
        f"image {_secs(timings.image_encode_s)}" + (f" ({frames} frames)" if frames > 1 else ""),
        f"prompt {_secs(timings.prompt_eval_s)}",
        f"{timings.completion_tokens} tok @ {timings.tokens_per_s:.1f} tok/s",
        f"total {_secs(timings.queue_wait_s + timings.total_s)}",
    ]
    return "⏱ " + SEPARATOR.join(parts)
