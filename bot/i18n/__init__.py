"""The bot's lines in the asker's language, and the language of the model's answers.

* :func:`translate` / :func:`localize`: a line in a locale (the English text is
  the msgid; no translation means English); ``locale`` None means the locale
  in effect (:func:`set_locale`, set per task where a reply is rendered).
* :func:`answer_instruction`: what the model is told ("Answer in French.").
* the catalogs: ``bot/i18n/locales/<lang>/LC_MESSAGES/llava_bot.po``, read at
  run time (see :mod:`bot.i18n.catalogs`); ``python -m bot.i18n.build``
  extracts the lines marked with :func:`N_` and updates them.
* :mod:`bot.i18n.commands`: slash command names and descriptions (discord.py's
  translator), and the tree that sets an interaction's locale.
"""

from bot.i18n.catalogs import N_, available, catalog_name, localize, number, placeholders, translate, variants
from bot.i18n.languages import (
    QUESTION_LANGUAGE,
    answer_instruction,
    current_locale,
    guild_locale,
    language_name,
    locale_tag,
    set_locale,
    using_locale,
)

__all__ = [
    "N_",
    "QUESTION_LANGUAGE",
    "answer_instruction",
    "available",
    "catalog_name",
    "current_locale",
    "guild_locale",
    "language_name",
    "locale_tag",
    "localize",
    "number",
    "placeholders",
    "set_locale",
    "translate",
    "using_locale",
    "variants",
]
