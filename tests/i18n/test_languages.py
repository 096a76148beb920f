"""What the model is told about the language of its answer, and the locale a job keeps."""

from __future__ import annotations

import pytest

from bot.i18n import QUESTION_LANGUAGE, answer_instruction, guild_locale, language_name, locale_tag
from bot.jobs.spec import ImageSource, JobSpec


@pytest.mark.parametrize(
    ("locale", "name"),
    [("fr", "French"), ("de", "German"), ("es-ES", "Spanish"), ("es-419", "Latin American Spanish"), ("ja", "Japanese"),
     ("pt-BR", "Brazilian Portuguese"), ("en-US", "English"), ("en-GB", "English"), ("zh-TW", "Traditional Chinese"),
     ("ko", "Korean"), ("uk", "Ukrainian"), ("French", "French"), ("Klingon", "Klingon")],
)
def test_language_names_for_the_model(locale: str, name: str) -> None:
    assert language_name(locale) == name


def test_the_instruction() -> None:
    assert answer_instruction("fr") == "Answer in French."
    assert answer_instruction(QUESTION_LANGUAGE) == "Answer in the language of the question."
    assert answer_instruction(None) == ""  # a caption, an old journal row: nothing added
    assert answer_instruction("fr", fixed="de") == "Answer in German."  # generation.language wins
    assert answer_instruction(None, fixed="Italian") == "Answer in Italian."
    assert answer_instruction(QUESTION_LANGUAGE, fixed=" ") == "Answer in the language of the question."


def test_locales_from_discord_objects() -> None:
    class Locale:  # like discord.Locale: an enum whose value is the string
        value = "pt-BR"

    class Guild:
        preferred_locale = Locale()

    class Message:
        guild = Guild()

    class DirectMessage:
        guild = None

    assert locale_tag(Locale()) == "pt-BR" and locale_tag("fr") == "fr" and locale_tag(None) is None
    assert guild_locale(Guild()) == guild_locale(Message()) == "pt-BR"
    assert guild_locale(DirectMessage()) is None and guild_locale(None) is None


def test_a_jobs_locale_is_journaled_and_old_rows_still_read() -> None:
    source = ImageSource("https://cdn.discordapp.com/a.png", "a.png", 10, "image/png")
    spec = JobSpec(kind="interaction", channel_id=1, source=source, question="?", user_id=2, locale="fr", answer_in="fr")
    assert JobSpec.from_json(spec.to_json()) == spec
    old = spec.to_json()
    del old["locale"], old["answer_in"]  # journaled by a version without them
    replayed = JobSpec.from_json(old)
    assert replayed.locale is None and replayed.answer_in is None


def test_an_image_label_in_any_language_is_read_back() -> None:
    """A follow-up finds which of several images an answer was about, whatever language labelled it."""
    from cogs.reading import image_label, labelled

    assert image_label(2, 3, "cat.png") == "**Image 2 of 3** (cat.png)"
    for locale in (None, "de", "es-ES", "fr", "ja", "pt-BR"):
        head = image_label(2, 3, "cat.png", locale)
        assert labelled(f"{head}\nA red square.") == (2, "A red square."), head
    assert image_label(2, 3, "cat.png", "de") == "**Bild 2 von 3** (cat.png)"


def test_the_catalogs_ship_in_the_package() -> None:
    """``pip install .`` installs every catalog: pyproject's package data names them."""
    import fnmatch
    import tomllib

    from bot.i18n.build import ROOT
    from bot.i18n.catalogs import LOCALE_DIR

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["bot"]
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.lower().startswith("babel") for d in dependencies)
    files = [p.relative_to(ROOT / "bot").as_posix() for p in LOCALE_DIR.rglob("*.po*")]
    assert len(files) >= 7
    assert all(any(fnmatch.fnmatch(f, pattern) for pattern in data) for f in files), files
