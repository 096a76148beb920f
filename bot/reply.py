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
TIMEOUT_MARK = " …(stopped: the answer took too long)"


def answer_body(answer: Answer) -> str:
    text = answer.text.strip() or EMPTY_ANSWER
    if answer.finish_reason == "length":
        text += CUT_MARK
    elif answer.finish_reason == "timeout":
        text += TIMEOUT_MARK
    return text


def footer_line(answer: Answer) -> str:
    """The footer as posted: Discord's small-text markdown (``-#``)."""
    return "-# " + footer(answer.timings)


def render(answer: Answer) -> str:
    return f"{answer_body(answer)}\n{footer_line(answer)}"


DISCORD_LIMIT = 2000


def split_text(text: str, limit: int = DISCORD_LIMIT) -> list[str]:
    """Split into parts of at most ``limit`` characters, on line breaks when
    possible, else on spaces, else (one enormous word) hard."""
    parts: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        window = rest[: limit + 1]
        cut = window.rfind("\n")
        if cut <= limit // 2:
            cut = window.rfind(" ")
        if cut <= 0:
            cut = limit
        parts.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest or not parts:
        parts.append(rest)
    return parts


def render_parts(answer: Answer, limit: int = DISCORD_LIMIT, *, header: str = "", note: str = "") -> list[str]:
    """The reply as Discord messages: ``header`` and the answer split on whole
    lines/words, the footer line (and a small ``note`` under it) on the last part."""
    foot = footer_line(answer) + (f"\n-# {note}" if note else "")
    body = f"{header}\n{answer_body(answer)}" if header else answer_body(answer)
    parts = split_text(body, limit)
    if len(parts[-1]) + 1 + len(foot) <= limit:
        parts[-1] = f"{parts[-1]}\n{foot}"
    else:
        parts.append(foot)
    return parts


def answer_from_message(content: str) -> str:
    """The answer text of one of our posted replies (footer and cut mark removed)."""
    lines = [line for line in content.split("\n") if not line.startswith("-# ⏱")]
    text = "\n".join(lines).strip()
    for mark in (CUT_MARK, TIMEOUT_MARK):
        text = text.removesuffix(mark.strip())
    return text.strip()
