"""Stage timings -> the one-line footer under every answer."""

from __future__ import annotations

from bot.engine.base import StageTimings
from bot.i18n import N_, number, translate

SEPARATOR = " · "


def _secs(value: float, locale: object = None) -> str:
    return translate(N_("{seconds} s"), locale).format(seconds=number(f"{value:.2f}", locale))


def footer(timings: StageTimings, frames: int = 1, locale: object = None) -> str:
    """One line, e.g. ``⏱ queue 0.00 s · image 0.02 s · prompt 0.31 s · 54 tok @ 58.5 tok/s · total 2.01 s``.

    ``total`` is what the asker waited once the job was accepted: queue wait
    plus the engine's own total (image encode, prompt, generation, overhead).
    The words in ``locale``'s language (None: the locale in effect, see :mod:`bot.i18n`).
    """

    def say(template: str, **values: object) -> str:
        return translate(template, locale).format(**values)

    image = say(N_("image {seconds}"), seconds=_secs(timings.image_encode_s, locale))
    if frames > 1:
        image += " " + say(N_("({frames} frames)"), frames=frames)
    parts = [
        say(N_("queue {seconds}"), seconds=_secs(timings.queue_wait_s, locale)),
        image,
        say(N_("prompt {seconds}"), seconds=_secs(timings.prompt_eval_s, locale)),
        say(N_("{tokens} tok @ {rate} tok/s"), tokens=timings.completion_tokens, rate=number(f"{timings.tokens_per_s:.1f}", locale)),
        say(N_("total {seconds}"), seconds=_secs(timings.queue_wait_s + timings.total_s, locale)),
    ]
    return "⏱ " + SEPARATOR.join(parts)
