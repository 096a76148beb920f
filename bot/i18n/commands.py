"""The Discord side of the catalogs: slash command names and descriptions through
discord.py's translator, and the command tree that makes an interaction's
locale the one in effect while its command runs.

:class:`CatalogTranslator` is what ``bot.tree.set_translator`` takes: when the
commands are synced, discord.py asks it for every name and description in
every Discord locale, and the answers become the commands'
``name_localizations`` / ``description_localizations``.  Names are looked up
with a msgctxt ("command name", "option name": the same English word can be
a name and a line), descriptions as lines.  A translated name Discord would
refuse (not lower case, a space, over 32 characters) is left out, logged:
one bad catalog entry must not make the whole sync fail.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import discord
from discord import app_commands

from bot.i18n.catalogs import catalog_name, localize, translate
from bot.i18n.languages import locale_tag, set_locale

log = logging.getLogger(__name__)

#: the msgctxt of a name, by where it is in a command
NAME_CONTEXTS = {
    app_commands.TranslationContextLocation.command_name: "command name",
    app_commands.TranslationContextLocation.group_name: "command name",
    app_commands.TranslationContextLocation.parameter_name: "option name",
    app_commands.TranslationContextLocation.choice_name: "choice",
}
#: a slash command's or an option's name, as Discord takes it (Unicode letters and digits, - _ ')
SLASH_NAME = re.compile(r"[-_'\w\u0900-\u097f\u0e00-\u0e7f]{1,32}")


def valid_name(name: str, *, context_menu: bool = False) -> bool:
    """Whether Discord takes ``name`` as a localized name: a context menu's may have
    spaces and capitals (1-32 characters); a slash command's or option's must match
    :data:`SLASH_NAME` and be lower case."""
    if context_menu:
        return 1 <= len(name) <= 32 and name.strip() == name
    return SLASH_NAME.fullmatch(name) is not None and name == name.lower()


class CatalogTranslator(app_commands.Translator):
    """Command names and descriptions from the message catalogs (None: Discord shows the English)."""

    async def translate(
        self, string: app_commands.locale_str, locale: discord.Locale, context: app_commands.TranslationContextTypes
    ) -> str | None:
        tag = locale_tag(locale)
        if catalog_name(tag) in (None, "en"):
            return None
        english = string.message
        name_context = NAME_CONTEXTS.get(context.location)
        if name_context is None:
            text = localize(english, tag)
            return text if text != english else None
        text = translate(english, tag, context=name_context)
        if text == english:
            return None
        if not valid_name(text, context_menu=isinstance(context.data, app_commands.ContextMenu)):
            log.warning("the %s translation %r of %r is no valid command name: left out", tag, text, english)
            return None
        return text


class LocaleTree(app_commands.CommandTree[Any]):
    """The command tree: a command (or a menu) runs with its interaction's locale in effect,
    so every line it answers with (refusals, errors) is in the asker's language."""

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        set_locale(interaction.locale)  # this task runs the one command (discord.py's invoker task)
        return True
