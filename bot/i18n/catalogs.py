"""The message catalogs: gettext, with Babel reading the ``.po`` sources.

The English text is the msgid: a line with no translation (or a locale with
no catalog) is the English line, never a key.  The catalogs are the ``.po``
files under ``bot/i18n/locales/<lang>/LC_MESSAGES/llava_bot.po``, shipped
with the package; each is compiled in memory by Babel (``write_mo``) the
first time its language is needed and read by the standard library's
:class:`gettext.GNUTranslations`, so a clean ``pip install .`` needs no
compile step and no ``.mo`` can be stale.

Lines are translated where they are rendered: :func:`translate` takes a
msgid; :func:`localize` takes a line already formatted in English (a
refusal carried by an exception, "the queue is full (8 waiting), ...") and
finds its msgid by its placeholders: the translated template is filled with
the same values.
"""

from __future__ import annotations

import functools
import gettext
import io
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bot.i18n.languages import resolve

DOMAIN = "llava_bot"
LOCALE_DIR = Path(__file__).with_name("locales")
#: how deep :func:`localize` looks into the values of a matched template ("{text}, as one grid")
_DEPTH = 2
_NUMBER = re.compile(r"-?\d+\.\d+")


def N_(message: str) -> str:
    """Mark a line for the catalogs (``python -m bot.i18n.build`` extracts it); returns it
    unchanged: the English line is translated where it is rendered."""
    return message


@dataclass(frozen=True, slots=True)
class _Template:
    pattern: re.Pattern[str]
    msgid: str
    fields: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Catalog:
    """One language's catalog."""

    name: str
    translations: gettext.GNUTranslations
    templates: tuple[_Template, ...]
    decimal: str

    def gettext(self, message: str, context: str | None = None) -> str:
        if context is not None:
            return self.translations.pgettext(context, message)
        return self.translations.gettext(message)


@functools.cache
def available() -> tuple[str, ...]:
    """The catalogs shipped ("de", "en", "es", "fr", "ja", "pt_BR")."""
    return tuple(sorted(p.parent.parent.name for p in LOCALE_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.po")))


def catalog_name(locale: str | None) -> str | None:
    """The catalog for a Discord locale ("pt-BR" -> "pt_BR", "es-ES" and "es-419" -> "es",
    "en-GB" -> "en"); None when there is none (English lines)."""
    if not locale:
        return None
    tag = locale.replace("-", "_")
    names = set(available())
    for candidate in (tag, tag.split("_")[0]):
        if candidate in names:
            return candidate
    return None


def catalog(locale: object = None) -> Catalog | None:
    """The catalog for ``locale`` (None: the locale in effect); None: English."""
    name = catalog_name(resolve(locale))
    return load(name) if name is not None else None


@functools.cache
def load(name: str) -> Catalog:
    """Read one catalog's ``.po`` and compile it in memory (once per process)."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    with (LOCALE_DIR / name / "LC_MESSAGES" / f"{DOMAIN}.po").open("rb") as f:
        po = read_po(f, locale=name, domain=DOMAIN)
    buffer = io.BytesIO()
    write_mo(buffer, po)  # fuzzy and empty entries are left out: they fall back to English
    buffer.seek(0)
    translations = gettext.GNUTranslations(buffer)
    templates = tuple(
        _template(message.id)
        for message in po
        if isinstance(message.id, str) and "{" in message.id and message.string and not message.fuzzy and not message.context
    )
    return Catalog(name, translations, templates, _decimal_symbol(name))


def _decimal_symbol(name: str) -> str:
    from babel import Locale, UnknownLocaleError
    from babel.numbers import get_decimal_symbol

    try:
        return get_decimal_symbol(Locale.parse(name))
    except (UnknownLocaleError, ValueError):
        return "."


def placeholders(text: str) -> list[str]:
    """The names of a line's format fields, in order ("{count} of {cap}" -> ["count", "cap"])."""
    return [field for _, field, _, _ in string.Formatter().parse(text) if field is not None]


def _template(msgid: str) -> _Template:
    pattern: list[str] = []
    fields: list[str] = []
    for literal, field, _, _ in string.Formatter().parse(msgid):
        pattern.append(re.escape(literal))
        if field is not None:
            pattern.append(r"(.+?)")
            fields.append(field)
    return _Template(re.compile("".join(pattern), re.DOTALL), msgid, tuple(fields))


def fill(template: str, values: Mapping[str, str]) -> str:
    """``template`` with its fields replaced by the (already formatted) ``values``; a
    field's conversion and format spec are not applied again."""
    out: list[str] = []
    for literal, field, _, _ in string.Formatter().parse(template):
        out.append(literal)
        if field is not None:
            out.append(values.get(field, "{" + field + "}"))
    return "".join(out)


def translate(message: str, locale: object = None, *, context: str | None = None) -> str:
    """``message`` (an English msgid) in ``locale``'s language; English when there is no
    translation.  ``locale`` None: the locale in effect."""
    found = catalog(locale)
    return found.gettext(message, context) if found is not None else message


def number(text: str, locale: object = None) -> str:
    """A number already formatted in English ("0.31") with the locale's decimal mark ("0,31")."""
    found = catalog(locale)
    return text.replace(".", found.decimal) if found is not None and found.decimal != "." else text


def localize(text: str, locale: object = None) -> str:
    """A line already formatted in English, translated: its msgid exactly, or the template
    whose placeholders it fills (the values are kept, decimals get the locale's mark);
    unchanged when neither is in the catalog."""
    found = catalog(locale)
    if found is None or not text:
        return text
    return _localize(found, text, _DEPTH)


def _localize(found: Catalog, text: str, depth: int) -> str:
    translated = found.gettext(text)
    if translated != text or depth <= 0:
        return translated
    for template in found.templates:
        match = template.pattern.fullmatch(text)
        if match is None:
            continue
        values: dict[str, str] = {}
        for field, value in zip(template.fields, match.groups()):
            if _NUMBER.fullmatch(value):
                value = value.replace(".", found.decimal)
            else:
                value = _localize(found, value, depth - 1)
            values.setdefault(field, value)
        return fill(found.gettext(template.msgid), values)
    return text


def variants(message: str) -> frozenset[str]:
    """``message`` and its translation in every catalog (to recognise a line the bot wrote
    in any language)."""
    return frozenset({message, *(load(name).gettext(message) for name in available())})
