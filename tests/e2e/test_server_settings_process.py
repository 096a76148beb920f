"""Per-server settings in the product as users run it: a `llava-bot run` process on the
built-in tiny model, two servers set up from Discord, killed (-9) and started again.
The tiny model's answers are random words, so this checks what does not hang on them:
settings kept, each rule asked in its own server only (its track record counts), trial
alerts pinging nobody."""

from __future__ import annotations

import asyncio
import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from bot.moderation.alerts import DELETE_ID, FINE_ID
from bot.moderation.checker import RULE_SUFFIX
from bot.testing.fake_discord import ALICE_ID, BOB_ID, GENERAL_ID, MOD_LOG_ID, FakeDiscord
from tests.e2e.helpers import private_answer, settled, start_bot, write_config
from tests.fakes.colour_engine import openai_colour_answer
from tests.fakes.slow_engine import SlowEngine

pytestmark = pytest.mark.slow  # `llava-bot run` processes, killed and restarted

DAVE_ID = 6
OTHER_GUILD_ID = 5000
LOBBY_ID = 5001
OTHER_LOG_ID = 5002
ALERT_ROLE_ID = 1201


def png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 32), colour).save(buf, "PNG")
    return buf.getvalue()


async def checked(fake: FakeDiscord, user: int, channel: int, rule: str, count: int) -> str:
    """Wait until ``/rule list`` says the rule was asked about ``count`` image(s)."""
    pattern = re.compile(rf"\*\*{rule}\*\*.*?\n.*?\n\s+{count} checked", re.S)
    for _ in range(60):
        listed = await private_answer(fake, user, channel, "rule list")
        if pattern.search(listed):
            return listed
        await asyncio.sleep(0.5)
    raise AssertionError(f"rule {rule} never showed {count} check(s): {listed}")


async def test_settings_made_in_discord_outlive_a_kill_and_stay_in_their_server(fake: FakeDiscord, tmp_path: Path, tiny_pair) -> None:
    fake.add_role(ALERT_ROLE_ID, "alerts")
    fake.add_user(DAVE_ID, "dave", member=False)
    fake.add_guild(OTHER_GUILD_ID, "Other", channels={LOBBY_ID: "lobby", OTHER_LOG_ID: "other-log"}, members=[BOB_ID, DAVE_ID], owner_id=DAVE_ID)
    config = write_config(tmp_path / "bot.toml", fake, tiny_pair, tmp_path / "journal.sqlite3")
    proc = await start_bot(config, fake, "--sync")
    try:
        await fake.wait_until(lambda: fake.find_command("rule", guild_id=None), timeout=30, what="commands synced")
        for kind, channel in (("watch", GENERAL_ID), ("log", MOD_LOG_ID)):
            done = await private_answer(fake, ALICE_ID, GENERAL_ID, "settings channel", {"kind": kind, "channel": channel, "enabled": True})
            assert done.startswith("✅")
        added = await private_answer(
            fake, ALICE_ID, GENERAL_ID, "rule add", {"name": "red-things", "question": "Is this image mostly red?", "alert_role": ALERT_ROLE_ID}
        )
        assert added.startswith("✅ Rule **red-things** added on trial")
        for kind, channel in (("watch", LOBBY_ID), ("log", OTHER_LOG_ID)):
            done = await private_answer(fake, DAVE_ID, LOBBY_ID, "settings channel", {"kind": kind, "channel": channel, "enabled": True})
            assert done.startswith("✅")
        added = await private_answer(fake, DAVE_ID, LOBBY_ID, "rule add", {"name": "blue-things", "question": "Is it mostly blue?"})
        assert added.startswith("✅")
        assert (await private_answer(fake, BOB_ID, GENERAL_ID, "rule add", {"name": "x", "question": "Is it?"})).startswith("⚠️ Only members with Manage Server")
    finally:
        proc.kill()  # kill -9: nothing is flushed on the way out
        await proc.wait()
        await proc.stdout.read()

    proc = await start_bot(config, fake)
    try:
        shown = await private_answer(fake, ALICE_ID, GENERAL_ID, "settings show")
        assert f"Watch channels (rules checked, captions kept): <#{GENERAL_ID}> · set here" in shown
        assert "- **red-things** 🧪 trial" in shown
        await fake.user_message(BOB_ID, GENERAL_ID, "", attachments=[fake.add_attachment("red.png", png((220, 30, 30)), channel_id=GENERAL_ID)])
        await checked(fake, ALICE_ID, GENERAL_ID, "red-things", 1)
        await fake.user_message(BOB_ID, LOBBY_ID, "", attachments=[fake.add_attachment("b.png", png((30, 60, 220)), channel_id=LOBBY_ID)])
        listed = await checked(fake, DAVE_ID, LOBBY_ID, "blue-things", 1)
        assert "red-things" not in listed
        listed = await private_answer(fake, ALICE_ID, GENERAL_ID, "rule list")
        assert "blue-things" not in listed and re.search(r"\n\s+1 checked", listed)
        # whatever the tiny model said, a rule on trial pinged nobody
        for alert in [s for s in fake.sent_to(MOD_LOG_ID) if s.get("embeds")]:
            assert not alert["content"] and alert["embeds"][0]["title"].startswith("🧪 Trial")
        assert not [s for s in fake.sent_to(OTHER_LOG_ID) if "red-things" in str(s.get("embeds"))]
    finally:
        proc.kill()
        await proc.wait()
        output = (await proc.stdout.read()).decode(errors="replace")
    assert "Traceback" not in output, output[-3000:]


def rule_questions(server: SlowEngine) -> int:
    return sum(RULE_SUFFIX in json.dumps(body) for body in server.bodies)


def picture(variant: int) -> bytes:
    """Mostly red, with white marks of its own (the decision memory tells variants apart)."""
    img = Image.new("RGB", (64, 48), (220, 30, 30))
    step = 8 + 4 * variant
    for x in range(0, 64, step):
        for y in range(0, 48, step):
            if (x // step + y // step + variant) % 2:
                img.paste((255, 255, 255), (x, y, x + 5, y + 5))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


async def test_rules_and_the_decision_memory_in_a_process_killed_between_decisions(fake: FakeDiscord, tmp_path: Path, tiny_pair) -> None:
    """A rule made live from Discord alerts on a matching picture (answers depend on the
    picture: an OpenAI-compatible test server); "Looks fine" before a kill -9 still spares a
    repost after the restart; "Delete" makes a repost alert at once, the model not asked."""
    fake.add_role(ALERT_ROLE_ID, "alerts")
    async with SlowEngine(answer=openai_colour_answer, tokens=64, delay_s=0.0) as server:
        config = write_config(tmp_path / "bot.toml", fake, tiny_pair, tmp_path / "journal.sqlite3")
        config.write_text(config.read_text() + f'\n[[engines]]\nkind = "openai"\nurl = "{server.url}"\nname = "colour"\n')
        proc = await start_bot(config, fake, "--sync")
        try:
            await fake.wait_until(lambda: fake.find_command("rule", guild_id=None), timeout=30, what="commands synced")
            for kind, channel in (("watch", GENERAL_ID), ("log", MOD_LOG_ID)):
                await private_answer(fake, ALICE_ID, GENERAL_ID, "settings channel", {"kind": kind, "channel": channel, "enabled": True})
            rule = {"name": "red-things", "question": "Is this image mostly red?", "alert_role": ALERT_ROLE_ID, "trial": False}
            assert (await private_answer(fake, ALICE_ID, GENERAL_ID, "rule add", rule)).startswith("✅")
            await fake.user_message(BOB_ID, GENERAL_ID, "", attachments=[fake.add_attachment("a.png", picture(1), channel_id=GENERAL_ID)])
            alert = await fake.wait_for_sent(lambda s: s["channel_id"] == MOD_LOG_ID and s.get("embeds"), timeout=30)
            assert alert["content"] == f"<@&{ALERT_ROLE_ID}>"
            it = await fake.press_button(ALICE_ID, alert["id"], FINE_ID)
            await fake.wait_for_callback(lambda c: c["interaction_id"] == it.id)
            await fake.wait_until(lambda: "Reviewed" in str(fake.messages[int(alert["id"])]["embeds"]), what="reviewed")
        finally:
            proc.kill()
            await proc.wait()
            await proc.stdout.read()

        proc = await start_bot(config, fake)
        try:
            asked, requests = rule_questions(server), server.requests
            await fake.user_message(ALICE_ID, GENERAL_ID, "", attachments=[fake.add_attachment("again.png", picture(1), channel_id=GENERAL_ID)])
            await server.wait_for(lambda s: s.requests > requests, timeout=30)  # its caption (kept for /find) was asked
            await settled(fake)
            listed = await checked(fake, ALICE_ID, GENERAL_ID, "red-things", 1)  # the repost is not a check
            assert rule_questions(server) == asked and len({s["id"] for s in fake.sent_to(MOD_LOG_ID) if s.get("embeds")}) == 1, listed

            await fake.user_message(BOB_ID, GENERAL_ID, "", attachments=[fake.add_attachment("b.png", picture(2), channel_id=GENERAL_ID)])
            second = await fake.wait_for_sent(lambda s: s["channel_id"] == MOD_LOG_ID and s.get("embeds") and s["id"] != alert["id"], timeout=30)
            await fake.press_button(ALICE_ID, second["id"], DELETE_ID)
            await fake.wait_until(lambda: "Reviewed" in str(fake.messages[int(second["id"])]["embeds"]), what="deleted")
            asked = rule_questions(server)
            await fake.user_message(BOB_ID, GENERAL_ID, "", attachments=[fake.add_attachment("b2.png", picture(2), channel_id=GENERAL_ID)])
            third = await fake.wait_for_sent(
                lambda s: s["channel_id"] == MOD_LOG_ID and s.get("embeds") and s["id"] not in (alert["id"], second["id"]), timeout=30
            )
            assert "Decided before" in json.dumps(third["embeds"]) and third["content"] == f"<@&{ALERT_ROLE_ID}>"
            assert rule_questions(server) == asked  # at once, without asking the model
        finally:
            proc.kill()
            await proc.wait()
            output = (await proc.stdout.read()).decode(errors="replace")
    assert "Traceback" not in output, output[-3000:]
