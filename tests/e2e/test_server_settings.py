"""Per-server settings and rules from Discord (issue 23), end to end: the real discord.py
client and the real queue against the fake Discord with two servers, members with and
without Manage Server, and an in-process engine whose answers depend on the picture's
dominant colour (so a rule matches one image and not another).  Nothing is set in the
file: every server sets itself up with /settings and /rule."""

from __future__ import annotations

import contextlib
import io
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw
from prometheus_client import generate_latest

from bot.config import load_settings
from bot.metrics import Metrics
from bot.moderation.alerts import CONFIRM_ID, DELETE_ID, FINE_ID
from bot.moderation.checker import RULE_SUFFIX
from bot.runtime import Runtime
from bot.testing.fake_discord import ALICE_ID, BOB_ID, BOT_ID, CAPTIONS_ID, GENERAL_ID, GUILD_ID, MOD_LOG_ID, FakeDiscord
from bot.testing.fake_discord.ids import FLAG_EPHEMERAL
from bot.testing.harness import deep_merge, running_bot
from tests.e2e.helpers import private_answer, settled
from tests.fakes.colour_engine import PALETTE, ColourEngine

CAROL_ID = 4  # a moderator by role only, once the server names the role
DAVE_ID = 6  # owns the second server
ERIN_ID = 7  # has Manage Server in the first server through a role, owns nothing
ALERT_ROLE_ID = 1201
HELPER_ROLE_ID = 1202
ASKERS_ROLE_ID = 1203
OTHER_GUILD_ID = 5000
LOBBY_ID = 5001
OTHER_LOG_ID = 5002
OTHER_ALERT_ROLE_ID = 5003

RED_RULE = {"name": "red-things", "question": "Is this image mostly red?"}
BLUE_RULE = {"name": "blue-things", "question": "Is this picture mostly blue?"}
MANAGERS_ONLY = "⚠️ Only members with Manage Server (or the bot's admins) can change my settings here."
MODERATORS_ONLY = "⚠️ Only moderators can see my settings and rules here."


def picture(colour: str, variant: int = 0, size: tuple[int, int] = (64, 48)) -> bytes:
    """Mostly ``colour``; each ``variant`` has its own small white marks, so that the decision
    memory tells the variants apart (and a repost of the same bytes is the same picture)."""
    img = Image.new("RGB", size, PALETTE[colour])
    draw = ImageDraw.Draw(img)
    if variant:
        step = 8 + 4 * variant
        for x in range(0, size[0], step):
            for y in range(0, size[1], step):
                if (x // step + y // step + variant) % 2:
                    draw.rectangle((x, y, x + 4, y + 4), fill=(255, 255, 255))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def servers(fake: FakeDiscord) -> None:
    """A second server (dave's), roles, and members with and without the permission."""
    fake.add_role(ALERT_ROLE_ID, "alerts")
    fake.add_role(HELPER_ROLE_ID, "Helper")
    fake.add_role(ASKERS_ROLE_ID, "Askers")
    fake.add_user(CAROL_ID, "carol", roles=[HELPER_ROLE_ID])
    fake.add_user(ERIN_ID, "erin")
    fake.grant_manage_server(ERIN_ID)
    fake.add_user(DAVE_ID, "dave", member=False)
    fake.add_guild(
        OTHER_GUILD_ID, "Other", channels={LOBBY_ID: "lobby", OTHER_LOG_ID: "other-log"}, members=[ALICE_ID, BOB_ID, DAVE_ID, ERIN_ID], owner_id=DAVE_ID
    )
    fake.add_role(OTHER_ALERT_ROLE_ID, "watchers", guild_id=OTHER_GUILD_ID)
    fake.add_member(DAVE_ID)  # and a plain member of the first


@contextlib.asynccontextmanager
async def bot_on(fake: FakeDiscord, tiny_pair, state: Path, engine: ColourEngine, **overrides: Any) -> AsyncIterator[tuple[Any, Runtime]]:
    overrides = deep_merge({"queue": {"per_user_per_minute": 0}}, overrides)
    settings = load_settings(overrides=deep_merge({"generation": {"max_tokens": 16, "max_tokens_limit": 128}}, {"queue": overrides["queue"]}))
    runtime = Runtime(settings, engine=engine)
    await runtime.start()
    try:
        async with running_bot(fake, tiny_pair, state, runtime=runtime, **overrides) as (bot, _):
            yield bot, runtime
    finally:
        await runtime.close()


@pytest.fixture
async def start(fake: FakeDiscord, tiny_pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, servers):
    monkeypatch.chdir(tmp_path)
    async with contextlib.AsyncExitStack() as stack:

        async def go(engine: ColourEngine | None = None, **overrides: Any) -> tuple[Any, ColourEngine]:
            engine = engine or ColourEngine()
            bot, _ = await stack.enter_async_context(bot_on(fake, tiny_pair, tmp_path, engine, **overrides))
            return bot, engine

        yield go


run = private_answer


async def post(fake: FakeDiscord, colour: str, variant: int = 0, channel: int = GENERAL_ID, user: int = BOB_ID) -> dict:
    attachment = fake.add_attachment(f"{colour}-{variant}.png", picture(colour, variant), channel_id=channel)
    return await fake.user_message(user, channel, "", attachments=[attachment])


def alerts_in(fake: FakeDiscord, channel: int) -> list[dict]:
    return [s for s in fake.sent_to(channel) if s["via"] == "channel" and s.get("embeds")]


def rule_questions(engine: ColourEngine) -> int:
    return sum(RULE_SUFFIX in r.question for r in engine.requests)


async def set_up(fake: FakeDiscord, *, trial: bool = False) -> None:
    """Alice (the owner) sets the first server up: watch #general, log in #mod-log, Helper
    moderates, one rule about red images that mentions @alerts."""
    assert (await run(fake, ALICE_ID, GENERAL_ID, "settings channel", {"kind": "watch", "channel": GENERAL_ID, "enabled": True})).startswith("✅")
    assert (await run(fake, ALICE_ID, GENERAL_ID, "settings channel", {"kind": "log", "channel": MOD_LOG_ID, "enabled": True})).startswith("✅")
    assert (await run(fake, ALICE_ID, GENERAL_ID, "settings role", {"kind": "moderator", "role": HELPER_ROLE_ID, "enabled": True})).startswith("✅")
    added = await run(fake, ALICE_ID, GENERAL_ID, "rule add", {**RED_RULE, "alert_role": ALERT_ROLE_ID, "trial": trial})
    assert added.startswith("✅ Rule **red-things** added")


# -- set up from Discord, at once, for the right people ------------------------------------------


async def test_a_manager_sets_a_server_up_and_the_next_image_is_checked_without_a_restart(fake: FakeDiscord, start) -> None:
    bot, engine = await start()
    await post(fake, "red")  # nothing is watched yet: nothing happens
    await settled(fake, bot)
    assert not alerts_in(fake, MOD_LOG_ID) and rule_questions(engine) == 0

    await set_up(fake)
    await post(fake, "red", 1)
    alert = await fake.wait_for_sent(lambda s: s["channel_id"] == MOD_LOG_ID and s["via"] == "channel")
    assert alert["content"] == f"<@&{ALERT_ROLE_ID}>"
    assert [int(r) for r in alert["allowed_mentions"]["roles"]] == [ALERT_ROLE_ID]
    assert alert["embeds"][0]["title"] == "🚩 Rule “red-things” matched"
    assert [b.get("custom_id") for b in fake.buttons_of(alert["id"])] == [FINE_ID, DELETE_ID, None]
    await post(fake, "blue", 1)
    await settled(fake, bot)
    assert len(alerts_in(fake, MOD_LOG_ID)) == 1

    # erin has Manage Server through a role: she may change things too
    added = await run(fake, ERIN_ID, GENERAL_ID, "rule add", {**BLUE_RULE, "trial": False})
    assert added.startswith("✅ Rule **blue-things** added")
    await post(fake, "blue", 2)
    blue = await fake.wait_for_sent(lambda s: s["channel_id"] == MOD_LOG_ID and s["via"] == "channel" and "blue-things" in s["embeds"][0]["title"])
    assert blue["content"] is None or blue["content"] == ""  # no alert role: no mention

    shown = await run(fake, ALICE_ID, GENERAL_ID, "settings show")
    assert f"Watch channels (rules checked, captions kept): <#{GENERAL_ID}> · set here" in shown
    assert f"Log channel (alerts, captions): <#{MOD_LOG_ID}> · set here" in shown
    assert f"Moderator roles: <@&{HELPER_ROLE_ID}>" in shown
    assert "- **red-things**: Is this image mostly red?" in shown and "- **blue-things**" in shown


async def test_members_without_the_permission_are_refused_and_moderators_may_read(fake: FakeDiscord, start) -> None:
    bot, engine = await start()
    await set_up(fake)
    changes = [
        ("rule add", {**BLUE_RULE}),
        ("rule remove", {"name": "red-things"}),
        ("rule trial", {"name": "red-things", "enabled": True}),
        ("settings channel", {"kind": "watch", "channel": GENERAL_ID, "enabled": False}),
        ("settings role", {"kind": "moderator", "role": ALERT_ROLE_ID, "enabled": True}),
    ]
    for user in (BOB_ID, CAROL_ID):  # a member; a moderator (by the server's moderator role)
        for name, options in changes:
            assert await run(fake, user, GENERAL_ID, name, options) == MANAGERS_ONLY, (user, name)
    for name in ("settings show", "rule list", "settings export"):
        assert await run(fake, BOB_ID, GENERAL_ID, name) == MODERATORS_ONLY
        assert await run(fake, CAROL_ID, GENERAL_ID, name) != MODERATORS_ONLY
    assert await run(fake, BOB_ID, GENERAL_ID, "rule test", {"name": "red-things"}) == MODERATORS_ONLY
    # nothing changed
    assert [r.name for r in bot.moderation.mod_for(GUILD_ID).rules] == ["red-things"]
    assert bot.moderation.mod_for(GUILD_ID).watch_channels == [GENERAL_ID]
    # the commands declare default member permissions (the bot checks again itself)
    for name in ("settings", "rule"):
        assert fake.find_command(name, guild_id=None)["default_member_permissions"] == str(1 << 13)  # Manage Messages


async def test_allowed_roles_per_server_decide_who_may_ask(fake: FakeDiscord, start) -> None:
    bot, engine = await start()
    assert (await run(fake, ALICE_ID, GENERAL_ID, "settings role", {"kind": "allowed", "role": ASKERS_ROLE_ID, "enabled": True})).startswith("✅")
    attachment = fake.add_attachment("red.png", picture("red"), channel_id=GENERAL_ID)
    await fake.user_message(BOB_ID, GENERAL_ID, f"<@{BOT_ID}> what colour?", attachments=[attachment], mentions_bot=True)
    refusal = await fake.wait_for_sent(lambda s: s["channel_id"] == GENERAL_ID and s.get("interaction_id") is None)
    assert "allowed roles" in refusal["content"]
    # the other server set nothing: bob may ask there
    attachment = fake.add_attachment("red.png", picture("red"), channel_id=LOBBY_ID)
    await fake.user_message(BOB_ID, LOBBY_ID, f"<@{BOT_ID}> what colour?", attachments=[attachment], mentions_bot=True)
    await settled(fake, bot)
    answers = [s for s in fake.sent_to(LOBBY_ID) if s["via"] in ("channel", "reply", "edit", "message")]
    assert answers and "red" in answers[-1]["content"].lower()


# -- kept, and kept apart -----------------------------------------------------------------------


async def test_settings_survive_a_restart(fake: FakeDiscord, tiny_pair, tmp_path: Path, monkeypatch, servers) -> None:
    monkeypatch.chdir(tmp_path)
    async with bot_on(fake, tiny_pair, tmp_path, ColourEngine()) as (bot, _):
        await set_up(fake)
    async with bot_on(fake, tiny_pair, tmp_path, ColourEngine()) as (bot, _):
        await post(fake, "red", 1)
        alert = await fake.wait_for_sent(lambda s: s["channel_id"] == MOD_LOG_ID and s["via"] == "channel")
        assert alert["content"] == f"<@&{ALERT_ROLE_ID}>"
        # carol is a moderator by the role the server set before the restart
        it = await fake.press_button(CAROL_ID, alert["id"], FINE_ID)
        await fake.wait_for_callback(lambda c: c["interaction_id"] == it.id)
        assert fake.buttons_of(alert["id"])[0].get("custom_id") is None
    # the schema is versioned
    db = sqlite3.connect(tmp_path / "journal.sqlite3")
    assert db.execute("SELECT version FROM srv_schema").fetchone()[0] >= 2
    assert db.execute("SELECT version FROM rec_schema").fetchone()[0] >= 1


async def test_one_servers_rule_never_fires_in_another(fake: FakeDiscord, start) -> None:
    bot, engine = await start()
    await set_up(fake)
    # dave sets his server up with its own rule about blue images, and its own log channel
    assert (await run(fake, DAVE_ID, LOBBY_ID, "settings channel", {"kind": "watch", "channel": LOBBY_ID, "enabled": True})).startswith("✅")
    assert (await run(fake, DAVE_ID, LOBBY_ID, "settings channel", {"kind": "log", "channel": OTHER_LOG_ID, "enabled": True})).startswith("✅")
    added = await run(fake, DAVE_ID, LOBBY_ID, "rule add", {**BLUE_RULE, "alert_role": OTHER_ALERT_ROLE_ID, "trial": False})
    assert added.startswith("✅")
    # dave cannot change the first server; erin manages the first, not dave's
    # (alice owns the bot's application: the operator may change any server)
    assert await run(fake, DAVE_ID, GENERAL_ID, "rule remove", {"name": "red-things"}) == MANAGERS_ONLY
    assert await run(fake, ERIN_ID, LOBBY_ID, "rule remove", {"name": "blue-things"}) == MANAGERS_ONLY

    await post(fake, "red", 1, channel=LOBBY_ID)  # red in dave's server: his rule is about blue
    await post(fake, "blue", 1, channel=GENERAL_ID)  # blue in the first: its rule is about red
    await settled(fake, bot)
    assert alerts_in(fake, MOD_LOG_ID) == [] and alerts_in(fake, OTHER_LOG_ID) == []

    await post(fake, "blue", 2, channel=LOBBY_ID)
    await post(fake, "red", 2, channel=GENERAL_ID)
    await settled(fake, bot)
    [theirs] = alerts_in(fake, OTHER_LOG_ID)
    [ours] = alerts_in(fake, MOD_LOG_ID)
    assert "blue-things" in theirs["embeds"][0]["title"] and theirs["content"] == f"<@&{OTHER_ALERT_ROLE_ID}>"
    assert "red-things" in ours["embeds"][0]["title"] and ours["content"] == f"<@&{ALERT_ROLE_ID}>"
    listed = await run(fake, DAVE_ID, LOBBY_ID, "rule list")
    assert "blue-things" in listed and "red-things" not in listed


# -- rules that earn trust ----------------------------------------------------------------------


async def test_trial_alerts_ping_nobody_until_the_rule_goes_live(fake: FakeDiscord, start) -> None:
    bot, engine = await start()
    await set_up(fake, trial=True)
    await post(fake, "red", 1)
    alert = await fake.wait_for_sent(lambda s: s["channel_id"] == MOD_LOG_ID and s["via"] == "channel")
    assert not alert["content"]
    assert alert["allowed_mentions"].get("roles", []) == [] and "roles" not in alert["allowed_mentions"].get("parse", [])
    assert alert["embeds"][0]["title"] == "🧪 Trial: rule “red-things” matched"
    assert [b.get("custom_id") for b in fake.buttons_of(alert["id"])] == [FINE_ID, CONFIRM_ID, None]  # no delete
    it = await fake.press_button(CAROL_ID, alert["id"], CONFIRM_ID)
    await fake.wait_for_callback(lambda c: c["interaction_id"] == it.id)
    fields = {f["name"]: f["value"] for f in fake.messages[alert["id"]]["embeds"][0]["fields"]}
    assert fields["Reviewed"].startswith(f"🎯 Right call (trial) · <@{CAROL_ID}>")

    live = await run(fake, ALICE_ID, GENERAL_ID, "rule trial", {"name": "red-things", "enabled": False})
    assert live.startswith("✅ Rule **red-things** is live")
    await post(fake, "red", 2)
    second = await fake.wait_for_sent(lambda s: s["channel_id"] == MOD_LOG_ID and s["via"] == "channel" and s["id"] != alert["id"])
    assert second["content"] == f"<@&{ALERT_ROLE_ID}>"
    assert [b.get("custom_id") for b in fake.buttons_of(second["id"])] == [FINE_ID, DELETE_ID, None]
    listed = await run(fake, CAROL_ID, GENERAL_ID, "rule list")
    assert "2 checked · 2 alert(s) · ✅ 0 fine · 🗑️ 0 deleted · 🎯 1 right · 1 not reviewed" in listed


async def test_rule_test_counts_the_right_images(fake: FakeDiscord, start) -> None:
    bot, engine = await start()
    await set_up(fake, trial=True)
    posted = []
    for colour, variant in [("red", 1), ("blue", 1), ("red", 2), ("yellow", 1), ("red", 3), ("blue", 2)]:
        posted.append(await post(fake, colour, variant))
        await settled(fake, bot)
    await fake.user_delete(int(posted[2]["id"]))  # a red one is deleted: skipped
    await settled(fake, bot)
    before = rule_questions(engine)
    # a rule about blue, on trial, added after the images were posted
    assert (await run(fake, ALICE_ID, GENERAL_ID, "rule add", {**BLUE_RULE})).startswith("✅")

    text = await run(fake, CAROL_ID, GENERAL_ID, "rule test", {"name": "red-things"})
    assert text.startswith("**Rule red-things** on the last 5 image(s) in the watched channels: **2 matched**")
    assert "1 deleted message(s) skipped" in text
    assert f"/{posted[0]['id']})" in text and f"/{posted[4]['id']})" in text and f"/{posted[1]['id']})" not in text
    assert rule_questions(engine) == before + 5  # asked the model, once per image

    text = await run(fake, CAROL_ID, GENERAL_ID, "rule test", {"name": "blue-things", "count": 2})
    assert text.startswith("**Rule blue-things** on the last 2 image(s) in the watched channels: **1 matched**")
    assert f"/{posted[5]['id']})" in text  # the newest two: blue 2 and red 3
    # a test posts nothing and counts nothing
    assert len(alerts_in(fake, MOD_LOG_ID)) == 3
    assert bot.moderation.checker.checks["blue-things"] == 0
    assert (await run(fake, CAROL_ID, GENERAL_ID, "rule test", {"name": "nope"})).startswith("⚠️ This server has no rule named")
    # a rule kept to another channel is tested on that channel's images only (none here)
    kept = {"name": "yellow-things", "question": "Is it mostly yellow?", "channel": CAPTIONS_ID}
    assert (await run(fake, ALICE_ID, GENERAL_ID, "rule add", kept)).startswith("✅")
    assert (await run(fake, CAROL_ID, GENERAL_ID, "rule test", {"name": "yellow-things"})).startswith("⚠️ No image was seen")


async def test_a_repost_after_looks_fine_raises_nothing_and_after_delete_is_alerted_at_once(fake: FakeDiscord, start) -> None:
    bot, engine = await start()
    await set_up(fake)
    first = await post(fake, "red", 1)
    alert = await fake.wait_for_sent(lambda s: s["channel_id"] == MOD_LOG_ID and s["via"] == "channel")
    it = await fake.press_button(CAROL_ID, alert["id"], FINE_ID)
    await fake.wait_for_callback(lambda c: c["interaction_id"] == it.id)
    await settled(fake, bot)
    asked = rule_questions(engine)

    again = await post(fake, "red", 1, user=ALICE_ID)  # the same picture, posted again
    await settled(fake, bot)
    assert len(alerts_in(fake, MOD_LOG_ID)) == 1 and rule_questions(engine) == asked  # not asked, not alerted
    assert str(again["id"]) != str(first["id"])

    other = await post(fake, "red", 2)  # another red picture: asked, alerted
    second = await fake.wait_for_sent(lambda s: s["channel_id"] == MOD_LOG_ID and s["via"] == "channel" and s["id"] != alert["id"])
    assert rule_questions(engine) == asked + 1
    it = await fake.press_button(ALICE_ID, second["id"], DELETE_ID)
    await fake.wait_until(lambda: any(d["id"] == int(other["id"]) for d in fake.deleted), what="deleted")
    await settled(fake, bot)

    await post(fake, "red", 2, user=ERIN_ID)  # the deleted picture, posted again
    third = await fake.wait_for_sent(
        lambda s: s["channel_id"] == MOD_LOG_ID and s["via"] == "channel" and s["id"] not in (alert["id"], second["id"])
    )
    assert rule_questions(engine) == asked + 1  # at once, without asking the model
    assert third["content"] == f"<@&{ALERT_ROLE_ID}>"
    embed = third["embeds"][0]
    assert embed["title"] == "🚩 Rule “red-things”: posted again after a delete"
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Decided before"].startswith(f"Deleted before by <@{ALICE_ID}> on 20")
    assert embed["description"].startswith(f"deleted before by <@{ALICE_ID}> on 20")

    metrics = generate_latest(Metrics(bot.runtime, bot).registry).decode()
    assert 'llava_bot_rule_remembered_total{decision="fine",rule="red-things"} 1.0' in metrics
    assert 'llava_bot_rule_remembered_total{decision="deleted",rule="red-things"} 1.0' in metrics
    listed = await run(fake, ALICE_ID, GENERAL_ID, "rule list")
    assert "2 checked · 3 alert(s) · ✅ 1 fine · 🗑️ 1 deleted · 🎯 0 right · 1 not reviewed · 1 repost(s) decided from memory" in listed

    # /forget: bob's pictures are forgotten here, so his fine one is asked about again
    forgot = await run(fake, CAROL_ID, GENERAL_ID, "forget", {"member": BOB_ID})
    assert "remembered image(s)" in forgot and "Forgot" in forgot
    await post(fake, "red", 1)
    await settled(fake, bot)
    assert rule_questions(engine) == asked + 2 and len(alerts_in(fake, MOD_LOG_ID)) == 4


async def test_the_memory_is_per_server(fake: FakeDiscord, start) -> None:
    bot, engine = await start()
    await set_up(fake)
    assert (await run(fake, DAVE_ID, LOBBY_ID, "settings channel", {"kind": "watch", "channel": LOBBY_ID, "enabled": True})).startswith("✅")
    assert (await run(fake, DAVE_ID, LOBBY_ID, "settings channel", {"kind": "log", "channel": OTHER_LOG_ID, "enabled": True})).startswith("✅")
    assert (await run(fake, DAVE_ID, LOBBY_ID, "rule add", {**RED_RULE, "trial": False})).startswith("✅")
    await post(fake, "red", 1)
    alert = await fake.wait_for_sent(lambda s: s["channel_id"] == MOD_LOG_ID and s["via"] == "channel")
    it = await fake.press_button(CAROL_ID, alert["id"], FINE_ID)
    await fake.wait_for_callback(lambda c: c["interaction_id"] == it.id)
    await settled(fake, bot)
    await post(fake, "red", 1, channel=LOBBY_ID)  # fine in the first server means nothing in dave's
    await fake.wait_for_sent(lambda s: s["channel_id"] == OTHER_LOG_ID and s["via"] == "channel")


# -- export and import ----------------------------------------------------------------------------


async def test_export_then_import_gives_the_same_settings(fake: FakeDiscord, start) -> None:
    bot, engine = await start()
    await set_up(fake, trial=True)
    assert (await run(fake, ALICE_ID, GENERAL_ID, "rule add", {**BLUE_RULE, "channel": GENERAL_ID})).startswith("✅")
    saved = await bot.moderation.servers.get(GUILD_ID)

    it = await fake.slash_command(ALICE_ID, GENERAL_ID, "settings export", {})
    answer = await fake.wait_for_sent(lambda s: s["interaction_id"] == it.id)
    assert answer["flags"] & FLAG_EPHEMERAL
    [file] = answer["files"]
    assert file["filename"] == f"llava-bot-settings-{GUILD_ID}.toml"
    exported = file["data"]
    assert b'name = "red-things"' in exported and f"log_channel = {MOD_LOG_ID}".encode() in exported

    # things change, then the file is imported back
    await run(fake, ALICE_ID, GENERAL_ID, "rule remove", {"name": "blue-things"})
    await run(fake, ALICE_ID, GENERAL_ID, "settings channel", {"kind": "log", "channel": GENERAL_ID, "enabled": True})
    await run(fake, ALICE_ID, GENERAL_ID, "settings role", {"kind": "moderator", "role": HELPER_ROLE_ID, "enabled": False})
    assert await bot.moderation.servers.get(GUILD_ID) != saved

    upload = fake.add_attachment("settings.toml", exported, channel_id=GENERAL_ID)
    assert await run(fake, BOB_ID, GENERAL_ID, "settings import", {}, attachments={"file": upload}) == MANAGERS_ONLY
    it = await fake.slash_command(ALICE_ID, GENERAL_ID, "settings import", {}, {"file": upload})
    preview = await fake.wait_for_sent(lambda s: s["interaction_id"] == it.id and s["via"] == "followup")
    assert preview["flags"] & FLAG_EPHEMERAL
    assert "+ rule blue-things" in preview["content"] and f"~ log channel: <#{GENERAL_ID}> -> <#{MOD_LOG_ID}>" in preview["content"]
    assert f"+ moderator role <@&{HELPER_ROLE_ID}>" in preview["content"]
    assert await bot.moderation.servers.get(GUILD_ID) != saved  # nothing applied before the button
    apply_id = next(b["custom_id"] for b in fake.buttons_of(preview["id"]) if b.get("label") == "Apply")
    press = await fake.press_button(BOB_ID, preview["id"], apply_id)  # not the importer
    await fake.wait_for_callback(lambda c: c["interaction_id"] == press.id)
    assert await bot.moderation.servers.get(GUILD_ID) != saved
    press = await fake.press_button(ALICE_ID, preview["id"], apply_id)
    await fake.wait_for_callback(lambda c: c["interaction_id"] == press.id)
    assert await bot.moderation.servers.get(GUILD_ID) == saved
    assert [(r.name, r.trial, r.channels) for r in bot.moderation.mod_for(GUILD_ID).rules] == [
        ("red-things", True, []), ("blue-things", True, [GENERAL_ID])
    ]

    # the same file again: nothing to do; a file naming another server's channel: refused
    assert "Nothing would change" in await run(fake, ALICE_ID, GENERAL_ID, "settings import", {}, attachments={"file": upload})
    foreign = fake.add_attachment("x.toml", f"log_channel = {OTHER_LOG_ID}\n".encode(), channel_id=GENERAL_ID)
    refused = await run(fake, ALICE_ID, GENERAL_ID, "settings import", {}, attachments={"file": foreign})
    assert refused.startswith("⚠️ That file names channels or roles that are not in this server")
    broken = fake.add_attachment("y.toml", b"rules = 3\n", channel_id=GENERAL_ID)
    assert (await run(fake, ALICE_ID, GENERAL_ID, "settings import", {}, attachments={"file": broken})).startswith("⚠️ That file is not a settings file")
