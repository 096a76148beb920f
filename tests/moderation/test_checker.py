"""Moderation's rule checks, read from the model's words: the verdict, alt text, rule names."""

from __future__ import annotations

import pytest

from bot.config import ConfigError, load_settings
from bot.moderation.checker import clean_alt_text, parse_verdict


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes, there is a knife on the table.", (True, "there is a knife on the table.")),
        ("**NO.** Just a cat.\nSecond line ignored", (False, "Just a cat.")),
        ("  yes", (True, "")),
        ("Yesterday I saw a gun", (None, "I saw a gun")),
        ("Maybe.", (None, "")),
        ("", (None, "")),
        ("123", (None, "")),
    ],
)
def test_the_first_word_decides_and_the_rest_is_the_reason(text: str, expected: tuple) -> None:
    assert parse_verdict(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("An image of a red bicycle leaning on a wall.", "A red bicycle leaning on a wall."),
        ("This picture shows \"OPEN\" on a shop door.", "\"OPEN\" on a shop door."),
        ("Alt text: a photo of two dogs.\n\nMore detail here.", "Two dogs."),
        ('"A cat asleep."', "A cat asleep."),
        ("   ", None),
    ],
)
def test_alt_text_is_short_factual_and_has_no_image_of(text: str, expected: str | None) -> None:
    assert clean_alt_text(text) == expected


def test_alt_text_is_cut_at_a_word() -> None:
    alt = clean_alt_text("word " * 200)
    assert alt is not None and len(alt) <= 301 and alt.endswith("…")


def test_rule_names_are_unique_and_plain() -> None:
    rule = {"name": "guns", "question": "Does this image show a gun?"}
    with pytest.raises(ConfigError, match="two rules are named 'guns'"):
        load_settings(overrides={"moderation": {"rules": [rule, rule]}})
    with pytest.raises(ConfigError, match="moderation.rules.0.name"):
        load_settings(overrides={"moderation": {"rules": [{"name": "two words", "question": "Is it?"}]}})
