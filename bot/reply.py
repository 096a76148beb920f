"""What a user reads: the answer text and the footer line under it.

The CLI prints exactly this; the Discord cogs post exactly this (split over
Discord's message limit), so what you see in a terminal is what a server
sees.
"""

from __future__ import annotations

from bot.engine.base import Answer
from bot.timing import footer

EMPTY_ANSWER = "(the model gave an empty answer)"
CUT_MARK = " …(cut at the answer limit)"


def answer_body(answer: Answer) -> str:
    text = answer.text.strip() or EMPTY_ANSWER
    if answer.finish_reason == "length":
        text += CUT_MARK
    return text


def footer_line(answer: Answer) -> str:
    """The footer as posted: Discord's small-text markdown (``-#``)."""
    return "-# " + footer(answer.timings)


def render(answer: Answer) -> str:
    return f"{answer_body(answer)}\n{footer_line(answer)}"
