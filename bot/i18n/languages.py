"""Which language: Discord locales, the locale in effect, and what the model is told.

A *locale* here is a Discord locale string ("fr", "de", "pt-BR", "en-US"; a
:class:`discord.Locale` works too: its value is read).  ``None`` means "the
locale in effect": the one :func:`set_locale` set for the task that renders a
reply (an interaction's, a job's), else English.  Plain module: no discord.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

#: the bot's own lines are written in English in the source (the catalogs' msgids)
SOURCE_LOCALE = "en-US"

#: ``JobSpec.answer_in`` for a mention: the model answers in the language of the question
QUESTION_LANGUAGE = "question"

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("llava_bot_locale", default=None)

#: names the model understands better than Babel's "Portuguese (Brazil)"
_NAMES = {
    "en": "English",
    "pt-BR": "Brazilian Portuguese",
    "es-419": "Latin American Spanish",
    "es-ES": "Spanish",
    "zh-CN": "Simplified Chinese",
    "zh-TW": "Traditional Chinese",
}


def locale_tag(locale: object) -> str | None:
    """A locale as a string ("pt-BR"), from a string or a :class:`discord.Locale`; None for none."""
    if locale is None:
        return None
    value = getattr(locale, "value", locale)
    text = str(value).strip()
    return text or None


def set_locale(locale: object) -> contextvars.Token[str | None]:
    """Make ``locale`` the one in effect in this task (and the tasks it starts from now on)."""
    return _current.set(locale_tag(locale))


def reset_locale(token: contextvars.Token[str | None]) -> None:
    _current.reset(token)


@contextlib.contextmanager
def using_locale(locale: object) -> Iterator[None]:
    """The locale in effect for the ``with`` block."""
    token = set_locale(locale)
    try:
        yield
    finally:
        reset_locale(token)


def current_locale() -> str | None:
    return _current.get()


def resolve(locale: object = None) -> str | None:
    """``locale``, or the one in effect when it is None."""
    return locale_tag(locale) if locale is not None else _current.get()


def guild_locale(where: object) -> str | None:
    """The preferred locale of a guild (or of the guild of a message, a channel or an
    interaction); None in a DM.  Duck-typed: no discord import."""
    guild = where if hasattr(where, "preferred_locale") else getattr(where, "guild", None)
    return locale_tag(getattr(guild, "preferred_locale", None))


def language_name(locale: str) -> str:
    """The English name of a locale's language, for the model ("fr" -> "French",
    "pt-BR" -> "Brazilian Portuguese"); a name that is no locale ("Klingon") as given."""
    from babel import Locale, UnknownLocaleError

    tag = locale.strip()
    if tag in _NAMES:
        return _NAMES[tag]
    language = tag.replace("_", "-").split("-")[0]
    if language == "en":
        return _NAMES["en"]
    try:
        parsed = Locale.parse(tag.replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        return tag
    name = parsed.get_language_name("en")
    return name or tag


def answer_instruction(answer_in: str | None, fixed: str | None = None) -> str:
    """What the model is told about the language of its answer ("" for nothing).

    ``fixed``: ``generation.language``, one language for every answer.
    ``answer_in``: the asker's locale (a slash command, a menu), or
    :data:`QUESTION_LANGUAGE` (a mention: the language of the question), or None."""
    if fixed and fixed.strip():
        return f"Answer in {language_name(fixed)}."
    if answer_in == QUESTION_LANGUAGE:
        return "Answer in the language of the question."
    if answer_in:
        return f"Answer in {language_name(answer_in)}."
    return ""
