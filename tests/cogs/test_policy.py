"""Place and role policy, and message reading: plain functions of settings, text and ids."""

from __future__ import annotations

from types import SimpleNamespace

from bot.config import DiscordSettings
from bot.reply import NEEDS_ROLE, NOT_IN_CHANNEL, NOT_IN_DMS
from cogs.policy import channel_ids, place_refusal
from cogs.reading import image_label, labelled, looks_like_image, pick_image, question_text


def test_channels_and_threads() -> None:
    cfg = DiscordSettings(allowed_channels=[10])
    assert place_refusal(cfg, is_dm=False, channel_ids={10}) is None
    assert place_refusal(cfg, is_dm=False, channel_ids=channel_ids(SimpleNamespace(id=11, parent_id=10))) is None
    assert place_refusal(cfg, is_dm=False, channel_ids={11}) == NOT_IN_CHANNEL
    assert place_refusal(cfg, is_dm=True) is None  # allowed_channels is about server channels


def test_roles_apply_in_servers_and_in_dms() -> None:
    cfg = DiscordSettings(allowed_roles=[7])
    assert place_refusal(cfg, is_dm=False, channel_ids={1}, role_ids={7, 8}) is None
    assert place_refusal(cfg, is_dm=False, channel_ids={1}, role_ids={8}) == NEEDS_ROLE
    assert place_refusal(cfg, is_dm=True, role_ids=set()) == NEEDS_ROLE
    assert place_refusal(cfg, is_dm=True, role_ids={7}) is None


def test_dms_off() -> None:
    cfg = DiscordSettings(dm=False)
    assert place_refusal(cfg, is_dm=True) == NOT_IN_DMS
    assert place_refusal(cfg, is_dm=False, channel_ids={1}) is None


def test_image_labels_round_trip_by_position() -> None:
    head = image_label(2, 3, "image.png")
    assert labelled(f"{head}\nA red square.") == (2, "A red square.")
    assert labelled("A plain answer.") is None
    same_names = [SimpleNamespace(filename="image.png", content_type="image/png", n=i) for i in (1, 2, 3)]
    assert [a.n for a in pick_image(same_names, 2)] == [2]
    assert [a.n for a in pick_image(same_names, 9)] == [1, 2, 3]  # no such image: all of them


def test_position_counts_images_only() -> None:
    mixed = [
        SimpleNamespace(content_type="text/plain", n="notes"),
        SimpleNamespace(content_type="image/jpeg", n="first"),
        SimpleNamespace(content_type=None, n="second"),
    ]
    assert [a.n for a in pick_image(mixed, 2)] == ["second"]


def test_reading_text() -> None:
    assert question_text("<@42> what is this? <@!42>", 42) == "what is this?"
    assert question_text(None, 42) == ""
    assert looks_like_image("image/png; charset=x") and looks_like_image(None) and not looks_like_image("application/pdf")
