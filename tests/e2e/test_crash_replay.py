"""kill -9 in the middle of a multi-image message, then a restart under live traffic.

``llava-bot run`` as a separate process against the fake Discord, with a slow
OpenAI-compatible test server as its engine (so the test can hold an answer
in the middle and kill the bot right then).
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from bot.jobs.streaming import CURSOR
from bot.testing.fake_discord import ALICE_ID, BOB_ID, BOT_ID, GENERAL_ID, FakeDiscord
from tests.e2e.helpers import journal_rows, ref, settled, start_bot, write_config
from tests.fakes.slow_engine import SlowEngine
from tests.helpers import jpeg_bytes

pytestmark = pytest.mark.slow  # `llava-bot run` killed -9 and restarted

FOOTER_MARK = "-# ⏱ queue"


def with_engine(config: Path, server: SlowEngine) -> Path:
    text = config.read_text().replace("[generation]", "[queue]\nper_user_per_minute = 0\n[generation]")
    config.write_text(text + f'\n[[engines]]\nkind = "openai"\nurl = "{server.url}"\nname = "slow"\n')
    return config


def note_ids(journal: Path) -> list[int]:
    return [r[0] for r in sqlite3.connect(journal).execute("SELECT note_id FROM jobs WHERE note_id IS NOT NULL")]


def active_flags(journal: Path) -> list[int]:
    return [r[0] for r in sqlite3.connect(journal).execute("SELECT active FROM jobs ORDER BY id")]


def replies(fake: FakeDiscord, message_id: str) -> list[dict]:
    return [s for s in fake.sent if s["via"] == "channel" and ref(s) == str(message_id)]


def answered(fake: FakeDiscord, message_id: str) -> bool:
    return any(FOOTER_MARK in fake.messages[r["id"]]["content"] for r in replies(fake, message_id))


async def test_kill_mid_message_then_restart_under_traffic_answers_each_question_once(fake: FakeDiscord, tmp_path: Path, tiny_pair) -> None:
    journal = tmp_path / "journal.sqlite3"
    async with SlowEngine(tokens=3, delay_s=0.02) as server:
        config = with_engine(write_config(tmp_path / "bot.toml", fake, tiny_pair, journal), server)
        proc = await start_bot(config, fake)
        server.hold()
        atts = [fake.add_attachment("image.png", jpeg_bytes(), content_type="image/png") for _ in range(3)]
        three = await fake.user_message(ALICE_ID, GENERAL_ID, f"<@{BOT_ID}> what?", attachments=atts, mentions_bot=True)
        await server.wait_holding(1)  # image 1 is being answered
        waiting = await fake.user_message(BOB_ID, GENERAL_ID, f"<@{BOT_ID}> and this?", attachments=[fake.add_attachment("b.jpg", jpeg_bytes())], mentions_bot=True)
        note = await fake.wait_for_sent(lambda s: ref(s) == str(waiting["id"]) and s["content"].startswith("⏳"), timeout=15)
        await fake.wait_until(lambda: journal_rows(journal) == 4, what="four journaled jobs")
        # image 1's answer has begun to stream into a reply: its id is journaled like a note
        partial = await fake.wait_for_sent(lambda s: ref(s) == str(three["id"]) and s["content"].endswith(CURSOR), timeout=15)
        await fake.wait_until(lambda: sorted(note_ids(journal)) == sorted([note["id"], partial["id"]]), what="both ids journaled")
        # only the job in the engine is "in flight": a crash now is not the waiting ones' fault
        await fake.wait_until(lambda: active_flags(journal) == [1, 0, 0, 0], what="one job in flight")
        proc.kill()  # kill -9 while image 1 of 3 is in the engine
        await proc.wait()
        output = (await proc.stdout.read()).decode(errors="replace")
        assert [r["id"] for r in replies(fake, three["id"])] == [partial["id"]]
        server.release()

        # Restart, and ask ten new questions the moment it is connected.
        proc = await start_bot(config, fake)
        try:
            fresh = []
            for i in range(10):
                att = fake.add_attachment(f"n{i}.jpg", jpeg_bytes())
                user = 100 + i
                fake.add_user(user, f"user{i}")
                fresh.append(await fake.user_message(user, GENERAL_ID, f"<@{BOT_ID}> q{i}", attachments=[att], mentions_bot=True))
            everyone = [three, waiting, *fresh]
            await fake.wait_until(lambda: all(answered(fake, m["id"]) for m in everyone), timeout=60, what="every question answered")
            await fake.wait_until(lambda: journal_rows(journal) == 0, what="journal emptied")
            await settled(fake)
            # exactly one reply each (the waiting one's old note became its answer), three for the 3-image message
            counts = Counter(ref(s) for s in fake.sent if s["via"] == "channel")
            assert counts[str(three["id"])] == 3
            assert all(counts[str(m["id"])] == 1 for m in [waiting, *fresh]), counts
            assert replies(fake, waiting["id"])[0]["id"] == note["id"]
            assert replies(fake, three["id"])[0]["id"] == partial["id"]  # the partial text became the answer
            assert not any(m["content"].endswith(CURSOR) for m in fake.messages.values())  # no dangling cursor
            labels = sorted(fake.messages[r["id"]]["content"].split("\n")[0] for r in replies(fake, three["id"]))
            assert labels == [f"**Image {i} of 3** (image.png)" for i in (1, 2, 3)]
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)
            output += (await proc.stdout.read()).decode(errors="replace")
    assert "answering 4 job(s) left unanswered by the previous run" in output
    assert "Traceback" not in output
