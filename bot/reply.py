"""Every line a user reads: the answer, its footer, refusals and errors.

The CLI prints exactly this; the Discord cogs post exactly this (split over
Discord's message limit), so what you see in a terminal is what a server
sees.  Refusal and error lines are written here once; the rest of the code
refers to them by name.
"""

from __future__ import annotations

import math

from bot.engine.base import Answer
from bot.i18n import N_, localize, translate, variants
from bot.timing import footer

WARN = "⚠️"
BUSY_MARK = "⏳"

# -- lines the bot says instead of an answer (friendly() adds the mark and the stop) --
NO_IMAGE = N_("attach an image (or reply to a message with one) and mention me with your question")
NOT_AN_IMAGE = N_("that file is not an image")
NOT_FROM_DISCORD = N_("I only read pictures that Discord itself serves: attachments, stickers and Discord's previews of links")
NO_IMAGE_IN_MESSAGE = N_("that message has no image")
NOT_IN_DMS = N_("I don't answer in direct messages here")
NOT_IN_CHANNEL = N_("I don't answer in this channel")
NEEDS_ROLE = N_("you need one of the allowed roles to ask me")
RESTARTING = N_("the bot is restarting, please ask again in a minute")
STOPPED = N_("the bot stopped before finishing this answer")
ENGINES_DOWN = N_("the model servers are not answering, please try again later")
QUEUE_FULL = N_("the queue is full ({cap} waiting), please try again in a minute")
TOO_MANY_PENDING = N_("you already have {count} question(s) waiting; please wait for an answer first")
TOO_FAST = N_("you can ask {limit} questions a minute; please wait {wait} s")
OUR_FAULT = N_("something went wrong on my side, sorry; please try again")
GAVE_UP = N_("I could not answer this one, sorry")
ADMIN_ONLY = N_("only the bot's owner or admins can do that")
CANCELLED = N_("Cancelled.")
ONLY_ASKER_CANCELS = N_("only the member who asked (or a moderator) can cancel this")
NOT_RUNNING = N_("this question is not waiting or being answered any more")
FIRST_IMAGES_ONLY = N_("only the first {count} images are answered")


def friendly(reason: str, locale: object = None) -> str:
    """One short line for the user: the warning mark, capitalised, ending in a full stop;
    in ``locale``'s language (None: the locale in effect, see :mod:`bot.i18n`)."""
    reason = localize(reason.strip(), locale)
    if not reason:
        reason = translate(N_("something went wrong"), locale)
    reason = reason[0].upper() + reason[1:]
    if reason[-1] not in ".!?)。！？）":
        reason += "."
    return f"{WARN} {reason}"


def place_in_line(position: int, eta_s: float | None = None, *, locale: object = None) -> str:
    """The waiting note: "⏳ #3 in line", and about how long when that is known
    (``locale`` None: the locale in effect)."""
    if eta_s is None:
        return f"{BUSY_MARK} " + translate(N_("#{position} in line"), locale).format(position=position)
    line = translate(N_("#{position} in line, about {wait}"), locale)
    return f"{BUSY_MARK} " + line.format(position=position, wait=about(eta_s, locale=locale))


def about(seconds: float, *, locale: object = None) -> str:
    """A wait, roughly: "5 s" (at least 1), "40 s", "2 min"."""
    if seconds < 60:
        return translate(N_("{seconds} s"), locale).format(seconds=max(1, math.ceil(seconds)))
    return translate(N_("{minutes} min"), locale).format(minutes=max(1, round(seconds / 60)))


def parked_line(locale: object = None) -> str:
    """The note of a job kept for after a restart."""
    return f"{BUSY_MARK} " + translate(N_("The bot is restarting; I will answer this when it is back."), locale)


def late_head(user_id: int | None, filename: str, locale: object = None) -> str:
    """The first line of an answer posted in the channel because its interaction expired."""
    if user_id:
        line = translate(N_("Answer to {who}'s question ({filename}), sorry for the delay:"), locale)
        return line.format(who=f"<@{user_id}>", filename=filename)
    return translate(N_("Answer to someone's question ({filename}), sorry for the delay:"), locale).format(filename=filename)


EMPTY_ANSWER = N_("(the model gave an empty answer)")
CUT_MARK = N_(" …(cut at the answer limit)")
TIMEOUT_MARK = N_(" …(stopped: the answer took too long)")


def answer_body(answer: Answer, locale: object = None) -> str:
    text = answer.text.strip() or translate(EMPTY_ANSWER, locale)
    if answer.finish_reason == "length":
        text += translate(CUT_MARK, locale)
    elif answer.finish_reason == "timeout":
        text += translate(TIMEOUT_MARK, locale)
    return text


def footer_line(answer: Answer, frames: int = 1, engine: str = "", locale: object = None) -> str:
    """The footer as posted: Discord's small-text markdown (``-#``); ``frames``: the
    pictures the model was given for one animation or clip; ``engine``: the engine
    that answered, named when the bot has several."""
    return "-# " + footer(answer.timings, frames, locale) + (f" · {engine}" if engine else "")


def render(answer: Answer, *, seen: str = "", frames: int = 1, locale: object = None) -> str:
    """The answer, its footer and (for a moving picture) what the model saw of it."""
    seen = localize(seen, locale)
    return f"{answer_body(answer, locale)}\n{footer_line(answer, frames, locale=locale)}" + (f"\n-# {seen}" if seen else "")


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
    answer: Answer, limit: int = DISCORD_LIMIT, *, header: str = "", note: str = "", seen: str = "", frames: int = 1,
    engine: str = "", locale: object = None,
) -> list[str]:
    """The reply as Discord messages: ``header`` and the answer split on whole
    lines/words, the footer line (and small lines under it: what the model saw of a
    moving picture, ``seen``, and a ``note``) on the last part; the bot's words in
    ``locale``'s language (None: the locale in effect)."""
    small = (localize(line, locale) for line in (seen, note) if line)
    foot = footer_line(answer, frames, engine, locale) + "".join(f"\n-# {line}" for line in small)
    body = answer_body(answer, locale)
    body = f"{header}\n{body}" if header else body
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
    for mark in (*variants(CUT_MARK), *variants(TIMEOUT_MARK)):  # in whichever language it was written
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
