"""The message catalogs: every language there, every marked line translated, the
placeholders kept, and English whenever there is no translation."""

from __future__ import annotations

import gettext
import io

import pytest
from babel.messages.pofile import read_po

from bot.engine.base import Answer, StageTimings
from bot.i18n import available, catalog_name, localize, number, placeholders, translate, using_locale, variants
from bot.i18n.build import ROOT, SOURCES, command_strings, marked_strings, problems
from bot.i18n.catalogs import DOMAIN, LOCALE_DIR, load
from bot.reply import (
    CUT_MARK,
    NOT_AN_IMAGE,
    QUEUE_FULL,
    TOO_FAST,
    answer_from_message,
    friendly,
    late_head,
    parked_line,
    place_in_line,
    render_parts,
)
from bot.timing import footer

LANGUAGES = ("de", "en", "es", "fr", "ja", "pt_BR")
TRANSLATED = tuple(name for name in LANGUAGES if name != "en")


def po(name: str):
    with (LOCALE_DIR / name / "LC_MESSAGES" / f"{DOMAIN}.po").open("rb") as f:
        return read_po(f, locale=name, domain=DOMAIN)


def marked() -> set[str]:
    return {text for package in SOURCES for path in (ROOT / package).rglob("*.py") for _, text in marked_strings(path)}


def test_the_six_languages_ship() -> None:
    assert set(LANGUAGES) <= set(available())


@pytest.mark.parametrize(
    ("locale", "catalog"),
    [("fr", "fr"), ("de", "de"), ("es-ES", "es"), ("es-419", "es"), ("ja", "ja"), ("pt-BR", "pt_BR"), ("en-US", "en"), ("en-GB", "en"),
     ("ko", None), ("xx-YY", None), ("", None), (None, None)],
)
def test_discord_locales_find_their_catalog(locale: str | None, catalog: str | None) -> None:
    assert catalog_name(locale) == catalog


@pytest.mark.parametrize("name", TRANSLATED)
def test_every_marked_line_is_translated(name: str) -> None:
    messages = {m.id: m for m in po(name) if m.id and not m.context}
    untranslated = sorted(text for text in marked() if text not in messages or not messages[text].string or messages[text].fuzzy)
    assert untranslated == [], f"{name}: run python -m bot.i18n.build and translate these"


@pytest.mark.parametrize("name", LANGUAGES)
def test_placeholders_survive_translation(name: str) -> None:
    changed = [
        (m.id, m.string)
        for m in po(name)
        if m.id and m.string and sorted(placeholders(m.id)) != sorted(placeholders(m.string))
    ]
    assert changed == []
    # and each one formats with the values its English line takes
    for m in po(name):
        if m.id and m.string and not m.context:
            values = {field: "x" for field in placeholders(m.id)}
            assert m.string.format(**values)


@pytest.mark.parametrize("name", TRANSLATED)
def test_command_names_and_descriptions_fit_discord(name: str) -> None:
    from bot.i18n.commands import valid_name

    descriptions = {text for path in (ROOT / "cogs").rglob("*.py") for _, text, context in command_strings(path) if context is None}
    assert "Ask a question about an image" in descriptions
    for m in po(name):
        if not m.id or not m.string:
            continue
        if m.context == "command name" and m.id[0].isupper():  # a context menu: "Describe image"
            assert valid_name(m.string, context_menu=True), m.string
        elif m.context in ("command name", "option name"):
            assert valid_name(m.string), m.string
        elif m.id in descriptions:
            assert len(m.string) <= 100, (m.id, m.string)  # Discord's limit for a description


def test_the_catalogs_compile_to_gettext() -> None:
    """What Babel compiles in memory is what the standard library's gettext reads."""
    from babel.messages.mofile import write_mo

    buffer = io.BytesIO()
    write_mo(buffer, po("fr"))
    buffer.seek(0)
    french = gettext.GNUTranslations(buffer)
    assert french.gettext(NOT_AN_IMAGE) == "ce fichier n'est pas une image"
    assert french.pgettext("command name", "ask") == "demander"
    assert load("fr").gettext(NOT_AN_IMAGE) == "ce fichier n'est pas une image"


def test_a_missing_translation_falls_back_to_english_never_to_a_key() -> None:
    assert translate("a line no catalog has", "fr") == "a line no catalog has"
    assert translate(NOT_AN_IMAGE, "ko") == NOT_AN_IMAGE  # a Discord locale without a catalog
    assert translate(NOT_AN_IMAGE, "xx-YY") == NOT_AN_IMAGE
    assert translate(NOT_AN_IMAGE, "en-GB") == NOT_AN_IMAGE
    assert translate("max_tokens", "fr", context="option name") == "max_tokens"  # a name kept in English
    assert friendly("the engine said something odd", "de") == "⚠️ The engine said something odd."


def test_english_lines_are_unchanged() -> None:
    assert friendly(NOT_AN_IMAGE) == friendly(NOT_AN_IMAGE, "en-US") == "⚠️ That file is not an image."
    assert place_in_line(3) == "⏳ #3 in line"
    assert place_in_line(3, 7.2) == "⏳ #3 in line, about 8 s"
    assert parked_line() == "⏳ The bot is restarting; I will answer this when it is back."
    assert late_head(7, "a.jpg") == "Answer to <@7>'s question (a.jpg), sorry for the delay:"
    timings = StageTimings(queue_wait_s=0.5, image_encode_s=0.02, prompt_eval_s=0.31, completion_tokens=54, generation_s=1.0, total_s=2.0)
    assert footer(timings, 4) == "⏱ queue 0.50 s · image 0.02 s (4 frames) · prompt 0.31 s · 54 tok @ 54.0 tok/s · total 2.50 s"


def test_lines_in_other_languages() -> None:
    assert friendly(NOT_AN_IMAGE, "fr") == "⚠️ Ce fichier n'est pas une image."
    assert friendly(NOT_AN_IMAGE, "ja") == "⚠️ そのファイルは画像ではありません。"  # its own full stop, no "."
    assert place_in_line(2, 75, locale="de") == "⏳ #2 in der Warteschlange, etwa 1 min"
    assert parked_line("es-ES").startswith("⏳ El bot se está reiniciando")
    assert late_head(7, "a.jpg", "pt-BR") == "Resposta à pergunta de <@7> (a.jpg), desculpe a demora:"
    timings = StageTimings(queue_wait_s=0.5, image_encode_s=0.02, prompt_eval_s=0.31, completion_tokens=54, generation_s=1.0, total_s=2.0)
    assert footer(timings, 4, "fr") == (
        "⏱ attente 0,50 s · image 0,02 s (4 images) · invite 0,31 s · 54 jetons à 54,0 jetons/s · total 2,50 s"
    )
    assert footer(timings, 1, "ja").startswith("⏱ 待ち 0.50 秒 · 画像 0.02 秒")
    assert number("12.5", "de") == "12,5" and number("12.5", "ja") == number("12.5", "ko") == "12.5"


def test_formatted_lines_are_translated_by_their_template() -> None:
    """A refusal arrives formatted (an exception's text): its template is found by its placeholders."""
    assert friendly(QUEUE_FULL.format(cap=8), "fr") == "⚠️ La file d'attente est pleine (8 en attente), réessaie dans une minute."
    assert localize(TOO_FAST.format(limit=6, wait=12), "de") == "du kannst 6 Fragen pro Minute stellen; bitte warte 12 s"
    assert localize("image is 51.2 MP, the limit is 40 MP", "pt-BR") == "a imagem tem 51,2 MP, o limite é 40 MP"  # decimal comma
    assert localize("4 frames of a 12.3 s clip, as one grid", "es-ES") == "4 fotogramas de un clip de 12,3 s, en una sola cuadrícula"
    assert localize("HEIC/AVIF images are not supported here, please send JPEG, PNG, WebP or GIF", "de").startswith("HEIC/AVIF-Bilder")
    assert localize("an English line of no template", "fr") == "an English line of no template"


def test_the_locale_in_effect() -> None:
    assert friendly(NOT_AN_IMAGE) == "⚠️ That file is not an image."
    with using_locale("de"):
        assert friendly(NOT_AN_IMAGE) == "⚠️ Diese Datei ist kein Bild."
        assert friendly(NOT_AN_IMAGE, "fr") == "⚠️ Ce fichier n'est pas une image."  # an explicit locale wins
    assert friendly(NOT_AN_IMAGE) == "⚠️ That file is not an image."


def test_a_reply_in_french_and_its_answer_read_back() -> None:
    answer = Answer("Un chat sur un canapé", "length", 10, 16, StageTimings(completion_tokens=16, generation_s=1.0, total_s=1.0))
    parts = render_parts(answer, note="only the first 4 images are answered", seen="3 frames of an animation", locale="fr")
    text = parts[-1]
    assert text.startswith("Un chat sur un canapé …(coupée à la limite de réponse)\n-# ⏱ attente 0,00 s")
    assert text.endswith("\n-# 3 images d’une animation\n-# seules les 4 premières images reçoivent une réponse")
    assert answer_from_message(text) == "Un chat sur un canapé"  # the follow-up's history: the French mark is no answer
    assert {CUT_MARK, " …(coupée à la limite de réponse)"} <= variants(CUT_MARK)


def test_the_build_finds_the_lines_and_the_commands() -> None:
    """``python -m bot.i18n.build`` reads what to translate from the source: marked lines and
    every app command's name, description and option help (an f-string as a template)."""
    from bot.i18n.build import extract

    found = {(m.context, m.id) for m in extract() if m.id}  # type: ignore[attr-defined]
    assert {(None, NOT_AN_IMAGE), ("command name", "ask"), ("command name", "Describe image"), ("option name", "image"),
            (None, "Ask a question about an image"), (None, "Longest answer in tokens (1-{limit})")} <= found
    assert ("command name", "sync") not in found  # a text command: Discord does not localize those
    assert not [line for line in problems() if "missing" in line and "'" + NOT_AN_IMAGE + "'" in line]
