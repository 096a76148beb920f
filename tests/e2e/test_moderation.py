"""Moderation assist end to end (issue 14): the real discord.py client and the real
queue against the fake Discord, with an in-process engine whose answers depend
on the picture's dominant colour (so a rule matches one image and not another).
One test runs a rule check through the real local engine on the tiny model."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from prometheus_client import generate_latest

from bot.config import load_settings
from bot.metrics import Metrics
from bot.moderation.alerts import DELETE_ID, FINE_ID
from bot.runtime import Runtime
from bot.testing.fake_discord import ALICE_ID, BOB_ID, CAPTIONS_ID, GENERAL_ID, MOD_LOG_ID, FakeDiscord
from bot.testing.fake_discord.ids import FLAG_EPHEMERAL
from bot.testing.harness import deep_merge, running_bot
from tests.e2e.helpers import settled
from tests.fakes.colour_engine import PALETTE, ColourEngine

CAROL_ID = 4  # a member with the "Helper" role: a moderator by moderation.moderator_roles only
ALERT_ROLE_ID = 1201
HELPER_ROLE_ID = 1202

RULES = [
    {"name": "red-things", "question": "Is this image mostly red?", "alert_role": ALERT_ROLE_ID},
    {"name": "yellow-things", "question": "Is this picture mostly yellow?"},
]
MODERATION = {
    "watch_channels": [GENERAL_ID],
    "alt_text_channels": [CAPTIONS_ID],
    "log_channel": MOD_LOG_ID,
    "rules": RULES,
    "moderator_roles": [HELPER_ROLE_ID],
}


def solid(colour: str, size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, PALETTE[colour]).save(buf, "PNG")
    return buf.getvalue()


def alerts(fake: FakeDiscord) -> list[dict]:
    return [s for s in fake.sent_to(MOD_LOG_ID) if s["via"] == "channel"]


def ephemeral_lines(fake: FakeDiscord, it) -> list[str]:
    return [c["data"].get("content", "") for c in fake.callbacks if c["interaction_id"] == it.id and c["type"] == 4 and c["data"].get("flags", 0) & FLAG_EPHEMERAL]


@pytest.fixture
def people(fake: FakeDiscord) -> None:
    fake.add_role(ALERT_ROLE_ID, "alerts")
    fake.add_role(HELPER_ROLE_ID, "Helper")
    fake.add_user(CAROL_ID, "carol", roles=[HELPER_ROLE_ID])


@contextlib.asynccontextmanager
async def moderated_bot(fake: FakeDiscord, tiny_pair, state: Path, engine: ColourEngine, **overrides: Any) -> AsyncIterator[tuple[Any, Runtime]]:
    overrides = deep_merge({"moderation": MODERATION, "queue": {"per_user_per_minute": 0}}, overrides)
    settings = load_settings(overrides=deep_merge({"generation": {"max_tokens": 16, "max_tokens_limit": 128}}, {"queue": overrides["queue"]}))
    runtime = Runtime(settings, engine=engine)
    await runtime.start()
    try:
        async with running_bot(fake, tiny_pair, state, runtime=runtime, **overrides) as (bot, _):
            yield bot, runtime
    finally:
        await runtime.close()


@pytest.fixture
async def moderated(fake: FakeDiscord, tiny_pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, people):
    monkeypatch.chdir(tmp_path)
    async with contextlib.AsyncExitStack() as stack:

        async def start(engine: ColourEngine | None = None, **overrides: Any) -> tuple[Any, Runtime, ColourEngine]:
            engine = engine or ColourEngine()
            bot, runtime = await stack.enter_async_context(moderated_bot(fake, tiny_pair, tmp_path, engine, **overrides))
            return bot, runtime, engine

        yield start


def dotted(colour: str, size: tuple[int, int] = (64, 48)) -> bytes:
    """Mostly ``colour``, with small white squares: another picture than :func:`solid` to the
    decision memory (its perceptual hash is far from a plain square's)."""
    img = Image.new("RGB", size, PALETTE[colour])
    for x in range(0, size[0], 16):
        for y in range(0, size[1], 16):
            if (x // 16 + y // 16) % 2:
                img.paste((255, 255, 255), (x, y, x + 6, y + 6))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


async def post_image(fake: FakeDiscord, colour: str, channel: int = GENERAL_ID, user: int = BOB_ID, data: bytes | None = None, **att: Any) -> dict:
    attachment = fake.add_attachment(f"{colour}.png", data or solid(colour), channel_id=channel, **att)
    return await fake.user_message(user, channel, "", attachments=[attachment])


async def checked(bot, message: dict, timeout: float = 10) -> None:
    """Wait until the bot finished with a watched message."""
    store = bot.moderation.store

    def done() -> bool:
        row = store._db.execute("SELECT payload FROM mod_seen WHERE message_id = ?", (int(message["id"]),)).fetchone()
        return row is not None and row[0] is None and bot.jobs_in_flight == 0

    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "the message was never checked"
        await asyncio.sleep(0.02)


# -- rules and alerts ---------------------------------------------------------------------------


async def test_a_rule_alerts_on_the_matching_image_only_with_its_one_role_mention(fake: FakeDiscord, moderated) -> None:
    bot, runtime, engine = await moderated()
    red = await post_image(fake, "red")
    alert = await fake.wait_for_sent(lambda s: s["channel_id"] == MOD_LOG_ID)
    assert alert["content"] == f"<@&{ALERT_ROLE_ID}>"  # nothing the model wrote
    assert alert["allowed_mentions"] == {"parse": [], "roles": [ALERT_ROLE_ID]}
    assert alert["mention_roles"] == [ALERT_ROLE_ID] and alert["mentions"] == [] and not alert["mention_everyone"]
    [embed] = alert["embeds"]
    jump = f"/channels/{fake.guild['id']}/{GENERAL_ID}/{red['id']}"
    assert "red-things" in embed["title"] and embed["url"].endswith(jump)
    assert embed["description"] == "the picture is mostly red."
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Caption"] == "A red square on a plain background."
    assert str(BOB_ID) in fields["Posted by"] and fields["Channel"] == f"<#{GENERAL_ID}>"
    assert embed["thumbnail"]["url"] == red["attachments"][0]["url"]  # the attachment's own URL
    assert alert["files"] == []  # nothing re-uploaded
    buttons = fake.buttons_of(alert["id"])
    assert [b.get("custom_id") for b in buttons] == [FINE_ID, DELETE_ID, None]
    assert buttons[2]["url"].endswith(jump)
    await checked(bot, red)
    # one image, three questions (caption and two rules), encoded once
    assert len(engine.requests) == 3 and engine.encodes == 1
    assert fake.sent_to(GENERAL_ID) == []  # a watch channel: no caption posted

    blue = await post_image(fake, "blue")
    await checked(bot, blue)
    await settled(fake, bot)
    assert len(alerts(fake)) == 1  # no alert for an image that matches nothing
    checker = bot.moderation.checker
    assert (checker.checks["red-things"], checker.matches["red-things"]) == (2, 1)
    assert (checker.checks["yellow-things"], checker.matches["yellow-things"]) == (2, 0)
    text = generate_latest(Metrics(runtime, bot).registry).decode()
    assert 'llava_bot_rule_checks_total{rule="red-things"} 2.0' in text
    assert 'llava_bot_rule_matches_total{rule="red-things"} 1.0' in text
    assert 'llava_bot_rule_matches_total{rule="yellow-things"} 0.0' in text


async def test_a_rule_without_a_role_mentions_nothing_and_rules_keep_to_their_channels(fake: FakeDiscord, moderated) -> None:
    rules = [{"name": "yellow-things", "question": "Is this picture mostly yellow?", "channels": [CAPTIONS_ID]}]
    bot, runtime, engine = await moderated(moderation={"rules": rules, "watch_channels": [GENERAL_ID, CAPTIONS_ID]})
    in_general = await post_image(fake, "yellow")
    await checked(bot, in_general)
    assert alerts(fake) == []  # the rule watches another channel
    in_captions = await post_image(fake, "yellow", CAPTIONS_ID, description="a yellow card")
    alert = await fake.wait_for_sent(lambda s: s["channel_id"] == MOD_LOG_ID)
    assert alert["content"] == "" and alert["allowed_mentions"] == {"parse": []} and alert["mention_roles"] == []
    assert alert["embeds"][0]["url"].endswith(str(in_captions["id"]))


async def test_a_failing_check_or_a_bad_file_is_logged_never_posted(fake: FakeDiscord, moderated, caplog) -> None:
    caplog.set_level(logging.INFO, logger="bot.moderation.checker")
    bot, runtime, engine = await moderated(ColourEngine(fail_on="yellow"))
    red = await post_image(fake, "red")
    await fake.wait_for_sent(lambda s: s["channel_id"] == MOD_LOG_ID)
    await checked(bot, red)
    assert bot.moderation.checker.failures["yellow-things"] == 1
    broken = fake.add_attachment("broken.png", b"not a png at all", channel_id=GENERAL_ID)
    msg = await fake.user_message(BOB_ID, GENERAL_ID, "", attachments=[broken])
    await checked(bot, msg)
    await settled(fake, bot)
    assert len(fake.sent) == 1  # the one alert: no error line anywhere
    assert "broken.png not checked" in caplog.text


# -- the buttons -------------------------------------------------------------------------------------


async def test_buttons_only_for_moderators_looks_fine_and_delete(fake: FakeDiscord, moderated) -> None:
    bot, runtime, engine = await moderated()
    first = await post_image(fake, "red")
    alert = await fake.wait_for_sent(lambda s: s["channel_id"] == MOD_LOG_ID)

    it = await fake.press_button(BOB_ID, alert["id"], FINE_ID)
    await fake.wait_for_callback(lambda c: c["interaction_id"] == it.id)
    assert ephemeral_lines(fake, it) == ["⚠️ Only moderators can use these buttons."]
    assert len(fake.buttons_of(alert["id"])) == 3  # nothing changed

    it = await fake.press_button(CAROL_ID, alert["id"], FINE_ID)  # a moderator by role
    await fake.wait_for_callback(lambda c: c["interaction_id"] == it.id)
    assert [c["type"] for c in fake.callbacks if c["interaction_id"] == it.id] == [7]
    reviewed = fake.messages[alert["id"]]
    fields = {f["name"]: f["value"] for f in reviewed["embeds"][0]["fields"]}
    assert fields["Reviewed"].startswith(f"✅ Looks fine · <@{CAROL_ID}> · <t:")
    assert [b.get("custom_id") for b in fake.buttons_of(alert["id"])] == [None]  # only the link is left
    assert reviewed["content"] == alert["content"]
    assert first["id"] in {str(m) for m in fake.messages}  # nothing deleted

    second = await post_image(fake, "red", data=dotted("red"))  # not the picture judged fine
    alert2 = await fake.wait_for_sent(lambda s: s["channel_id"] == MOD_LOG_ID and s["id"] != alert["id"] and s["via"] == "channel")
    await checked(bot, second)
    assert len(await bot.moderation.store.search("red")) == 2
    it = await fake.press_button(ALICE_ID, alert2["id"], DELETE_ID)  # Manage Messages
    await fake.wait_until(lambda: any(d["id"] == int(second["id"]) for d in fake.deleted), what="deleted")
    await fake.wait_for_callback(lambda c: c["interaction_id"] == it.id)
    fields = {f["name"]: f["value"] for f in fake.messages[alert2["id"]]["embeds"][0]["fields"]}
    assert fields["Reviewed"].startswith(f"🗑️ Message deleted · <@{ALICE_ID}>")
    assert fake.buttons_of(alert2["id"]) == []
    # Discord said the message is gone: so are its kept captions
    await fake.wait_until(lambda: bot.moderation.store._db.execute("SELECT count(*) FROM mod_captions WHERE message_id = ?", (int(second["id"]),)).fetchone()[0] == 0)
    assert len(await bot.moderation.store.search("red")) == 1


async def test_buttons_survive_a_restart(fake: FakeDiscord, tiny_pair, tmp_path: Path, monkeypatch, people) -> None:
    monkeypatch.chdir(tmp_path)
    async with moderated_bot(fake, tiny_pair, tmp_path, ColourEngine()) as (bot, _):
        await post_image(fake, "red")
        alert = await fake.wait_for_sent(lambda s: s["channel_id"] == MOD_LOG_ID)
    async with moderated_bot(fake, tiny_pair, tmp_path, ColourEngine()) as (bot, _):
        it = await fake.press_button(CAROL_ID, alert["id"], FINE_ID)
        await fake.wait_for_callback(lambda c: c["interaction_id"] == it.id)
        assert [c["type"] for c in fake.callbacks if c["interaction_id"] == it.id] == [7]
        assert fake.buttons_of(alert["id"])[0].get("custom_id") is None


async def test_delete_is_offered_only_where_the_bot_may_manage_messages(fake: FakeDiscord, moderated) -> None:
    from bot.testing.fake_discord import BOT_ROLE_ID, Perm

    fake.roles[BOT_ROLE_ID]["permissions"] = str(Perm.EVERYONE_DEFAULT)  # no Manage Messages
    bot, runtime, engine = await moderated()
    await post_image(fake, "red")
    alert = await fake.wait_for_sent(lambda s: s["channel_id"] == MOD_LOG_ID)
    assert [b.get("custom_id") for b in fake.buttons_of(alert["id"])] == [FINE_ID, None]


# -- alt text ----------------------------------------------------------------------------------------


async def test_alt_text_only_where_missing_once_per_message(fake: FakeDiscord, moderated) -> None:
    bot, runtime, engine = await moderated()
    bare = await post_image(fake, "green", CAPTIONS_ID)
    reply = await fake.wait_for_sent(lambda s: s["channel_id"] == CAPTIONS_ID)
    assert reply["content"] == "A green square.\n-# suggested alt text"  # text first, no "image of"
    assert str(reply["message_reference"]["message_id"]) == bare["id"] and reply["allowed_mentions"]["parse"] == []
    described = await post_image(fake, "green", CAPTIONS_ID, description="A green flag")
    await checked(bot, described)
    # Discord delivers the first message again: still one reply
    await fake._delivered(fake._dispatch("MESSAGE_CREATE", fake._gateway_message(bare)), 5)
    await settled(fake, bot)
    assert len(fake.sent_to(CAPTIONS_ID)) == 1
    assert not any("alt text" in r.question.lower() and "factual" in r.question.lower() for r in engine.requests[4:])


# -- captions moderators can search ------------------------------------------------------------------


def followup_text(fake: FakeDiscord, it) -> str:
    return next(s["content"] for s in fake.sent if s["interaction_id"] == it.id and s["via"] == "followup")


async def test_find_forget_and_purge(fake: FakeDiscord, moderated) -> None:
    bot, runtime, engine = await moderated()
    red = await post_image(fake, "red")
    blue = await post_image(fake, "blue", user=ALICE_ID)
    await checked(bot, red)
    await checked(bot, blue)

    it = await fake.slash_command(ALICE_ID, GENERAL_ID, "find", {"query": "red square"})
    await fake.wait_for_sent(lambda s: s["interaction_id"] == it.id and s["via"] == "followup")
    text = followup_text(fake, it)
    assert fake.callbacks[-1]["data"]["flags"] & FLAG_EPHEMERAL or any(
        c["data"].get("flags", 0) & FLAG_EPHEMERAL for c in fake.callbacks if c["interaction_id"] == it.id
    )
    assert f"/{GENERAL_ID}/{red['id']})" in text and str(blue["id"]) not in text
    assert "🚩 red-things" in text

    it = await fake.slash_command(ALICE_ID, GENERAL_ID, "find", {"query": "square", "member": ALICE_ID, "days": 1})
    await fake.wait_for_sent(lambda s: s["interaction_id"] == it.id and s["via"] == "followup")
    text = followup_text(fake, it)
    assert str(blue["id"]) in text and str(red["id"]) not in text

    it = await fake.slash_command(ALICE_ID, GENERAL_ID, "find", {"query": "?! *"})  # no word: no FTS syntax error
    await fake.wait_for_callback(lambda c: c["interaction_id"] == it.id)
    assert ephemeral_lines(fake, it) == ["⚠️ Give at least one word to look for."]

    it = await fake.slash_command(BOB_ID, GENERAL_ID, "find", {"query": "red"})
    await fake.wait_for_callback(lambda c: c["interaction_id"] == it.id)
    assert ephemeral_lines(fake, it) == ["⚠️ Only moderators can search captions."]

    it = await fake.slash_command(BOB_ID, GENERAL_ID, "forget", {"member": ALICE_ID})
    await fake.wait_for_callback(lambda c: c["interaction_id"] == it.id)
    assert ephemeral_lines(fake, it) == ["⚠️ Only moderators can forget another member's images."]
    it = await fake.slash_command(CAROL_ID, GENERAL_ID, "forget", {"member": BOB_ID})
    await fake.wait_for_callback(lambda c: c["interaction_id"] == it.id)
    assert ephemeral_lines(fake, it) == [f"Forgot 1 kept caption(s) and 1 remembered image(s) of <@{BOB_ID}>'s posts in this server."]
    assert await bot.moderation.store.search("red") == []
    assert len(await bot.moderation.store.search("square")) == 1

    assert await bot.moderation.purge(now=time.time() + 29 * 86400) == 0  # keep_days = 30
    assert await bot.moderation.purge(now=time.time() + 31 * 86400) == 1
    assert await bot.moderation.store.count() == 0


async def test_captions_in_caption_channels_still_go_where_they_went(fake: FakeDiscord, moderated) -> None:
    bot, runtime, engine = await moderated(moderation={"caption_channels": [CAPTIONS_ID], "alt_text_channels": [], "rules": []})
    posted = await post_image(fake, "yellow", CAPTIONS_ID)
    caption = await fake.wait_for_sent(lambda s: s["channel_id"] == MOD_LOG_ID)
    assert caption["content"].startswith(f"🖼️ Caption for yellow.png from Bob in https://discord.com/channels/{fake.guild['id']}/{CAPTIONS_ID}/{posted['id']}")
    assert "A yellow square on a plain background." in caption["content"]
    await checked(bot, posted)
    assert [r.question for r in engine.requests] == [bot.settings.moderation.caption_prompt]
    assert len(await bot.moderation.store.search("yellow")) == 1


# -- the real local engine ------------------------------------------------------------------------------


async def test_a_rule_check_on_the_real_tiny_model(fake: FakeDiscord, llava, people) -> None:
    bot, runtime = await llava(moderation=MODERATION)
    msg = await post_image(fake, "red")
    await checked(bot, msg, timeout=60)
    checker = bot.moderation.checker
    # the tiny model's answers are random text: counted (usually as undecided), never an error
    assert checker.checks["red-things"] == 1 and checker.checks["yellow-things"] == 1
    assert not checker.failures
    assert checker.matches["red-things"] == len([a for a in alerts(fake) if "red-things" in a["embeds"][0]["title"]])


# -- a kill in the middle of a watched image's steps ----------------------------------------------------


@pytest.mark.parametrize("left", ["every step recorded, nonces forgotten", "the alert unrecorded, nonces kept"])
async def test_a_restart_repeats_no_step_of_a_watched_image(fake: FakeDiscord, tiny_pair, tmp_path: Path, monkeypatch, people, left: str) -> None:
    """The previous process died before marking a watched message done: the replay checks it
    again and skips the steps recorded as done (alt text, the alert); a step that was made but
    not recorded is not posted twice while Discord remembers its nonce.  /find keeps one row."""
    monkeypatch.chdir(tmp_path)
    async with moderated_bot(fake, tiny_pair, tmp_path, ColourEngine()) as (bot, _):
        store = bot.moderation.store

        async def killed_before_done(message_id: int) -> None:
            return None

        monkeypatch.setattr(store, "done", killed_before_done)
        red = await post_image(fake, "red", CAPTIONS_ID)
        await fake.wait_for_sent(lambda s: s["channel_id"] == MOD_LOG_ID)
        await fake.wait_until(lambda: len(store._db.execute("SELECT steps FROM mod_seen").fetchone()[0] or "") > 10, what="steps recorded")
        await settled(fake, bot)
        assert json.loads(store._db.execute("SELECT steps FROM mod_seen").fetchone()[0]) == ["alt", "record", "alert:0:red-things"]
        monkeypatch.undo()
    db = sqlite3.connect(tmp_path / "journal.sqlite3")
    if left.startswith("the alert unrecorded"):
        db.execute("UPDATE mod_seen SET steps = ?", (json.dumps(["alt", "record"]),))
    else:
        fake.nonce_window_s = 0.0
    db.commit()
    db.close()
    async with moderated_bot(fake, tiny_pair, tmp_path, ColourEngine()) as (bot, _):
        await checked(bot, red)
        await settled(fake, bot)
        assert len(fake.sent_to(CAPTIONS_ID)) == 1  # the alt text
        assert len({m["id"] for m in fake.messages.values() if int(m["channel_id"]) == MOD_LOG_ID}) == 1
        assert await bot.moderation.store.count() == 1
    if left.startswith("the alert unrecorded"):
        assert len(fake.nonce_hits) == 1  # the alert was sent again and Discord answered with the first one
