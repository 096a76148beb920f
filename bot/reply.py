"""Every line a user reads: the answer, its footer, refusals and errors.

The CLI prints exactly this; the Discord cogs post exactly this (split over
Discord's message limit), so what you see in a terminal is what a server
sees.  Refusal and error lines are written here once; the rest of the code
refers to them by name.
"""

from __future__ import annotations

from bot.engine.base import Answer
from bot.timing import footer

WARN = "⚠️"
BUSY_MARK = "⏳"

# -- lines the bot says instead of an answer (friendly() adds the mark and the stop) --
NO_IMAGE = "attach an image (or reply to a message with one) and mention me with your question"
NOT_AN_IMAGE = "that file is not an image"
NOT_FROM_DISCORD = "I only read pictures that Discord itself serves: attachments, stickers and Discord's previews of links"
NO_IMAGE_IN_MESSAGE = "that message has no image"
NOT_IN_DMS = "I don't answer in direct messages here"
NOT_IN_CHANNEL = "I don't answer in this channel"
NEEDS_ROLE = "you need one of the allowed roles to ask me"
RESTARTING = "the bot is restarting, please ask again in a minute"
STOPPED = "the bot stopped before finishing this answer"
ENGINES_DOWN = "the model servers are not answering, please try again later"
QUEUE_FULL = "the queue is full ({cap} waiting), please try again in a minute"
TOO_MANY_PENDING = "you already have {count} question(s) waiting; please wait for an answer first"
TOO_FAST = "you can ask {limit} questions a minute; please wait {wait} s"
OUR_FAULT = "something went wrong on my side, sorry; please try again"
GAVE_UP = "I could not answer this one, sorry"
ADMIN_ONLY = "only the bot's owner or admins can do that"
FIRST_IMAGES_ONLY = "only the first {count} images are answered"


def friendly(reason: str) -> str:
    """One short line for the user: the warning mark, capitalised, ending in a full stop."""
    reason = reason.strip()
    if not reason:
        reason = "something went wrong"
    reason = reason[0].upper() + reason[1:]
    if reason[-1] not in ".!?)":
        reason += "."
    return f"{WARN} {reason}"


def place_in_line(position: int) -> str:
    return f"{BUSY_MARK} #{position} in line"


def parked_line() -> str:
    """The note of a job kept for after a restart."""
    return f"{BUSY_MARK} The bot is restarting; I will answer this when it is back."


def late_head(user_id: int | None, filename: str) -> str:
    """The first line of an answer posted in the channel because its interaction expired."""
    who = f"<@{user_id}>" if user_id else "someone"
    return f"Answer to {who}'s question ({filename}), sorry for the delay:"


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


def footer_line(answer: Answer, frames: int = 1) -> str:
    """The footer as posted: Discord's small-text markdown (``-#``); ``frames``: the
    pictures the model was given for one animation or clip."""
    return "-# " + footer(answer.timings, frames)


def render(answer: Answer, *, seen: str = "", frames: int = 1) -> str:
    """The answer, its footer and (for a moving picture) what the model saw of it."""
    return f"{answer_body(answer)}\n{footer_line(answer, frames)}" + (f"\n-# {seen}" if seen else "")


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


def render_parts(
    answer: Answer, limit: int = DISCORD_LIMIT, *, header: str = "", note: str = "", seen: str = "", frames: int = 1
) -> list[str]:
    """The reply as Discord messages: ``header`` and the answer split on whole
    lines/words, the footer line (and small lines under it: what the model saw of a
    moving picture, ``seen``, and a ``note``) on the last part."""
    foot = footer_line(answer, frames) + "".join(f"\n-# {line}" for line in (seen, note) if line)
    body = f"{header}\n{answer_body(answer)}" if header else answer_body(answer)
    parts = split_text(body, limit)
    if len(parts[-1]) + 1 + len(foot) <= limit:
        parts[-1] = f"{parts[-1]}\n{foot}"
    else:
        parts.append(foot)
    return parts


def answer_from_message(content: str) -> str:
    """The answer text of one of our posted replies (footer and cut mark removed)."""
    lines = content.split("\n")
    # the footer and the small lines under it (what was seen of a clip, a note) are not the answer
    footer_at = next((i for i, line in enumerate(lines) if line.startswith("-# ⏱")), len(lines))
    lines = lines[:footer_at]
    text = "\n".join(lines).strip()
    for mark in (CUT_MARK, TIMEOUT_MARK):
        text = text.removesuffix(mark.strip())
    return text.strip()


# -- the playground (bot/web): lines only the web page says --------------------
CONVERSATION_EXPIRED = "that conversation has expired; please send the image again"
WEB_NO_IMAGE = "choose an image first (pick a file, drop one or paste one)"
WEB_NOT_A_FORM = "send the question as a multipart form (image, question, max_tokens, conversation)"
WEB_FIELD_TOO_LONG = "the {field} field is too long"
WEB_BAD_MAX_TOKENS = "max_tokens must be a whole number"
WEB_TOKEN_NEEDED = "this playground needs its access token"
WEB_STOPPING = "the playground is stopping, please ask again in a minute"
