"""Cancel in the product as users run it: a `llava-bot run` process answering through an
OpenAI-compatible test engine, killed (-9) while a question waits; after the restart the
Cancel button on the note the first process posted still cancels that question."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import pytest

from bot.jobs.cancel import PREFIX
from bot.testing.fake_discord import ALICE_ID, BOB_ID, BOT_ID, GENERAL_ID, FakeDiscord
from tests.e2e.helpers import journal_rows, ref, settled, start_bot, write_config
from tests.fakes.slow_engine import SlowEngine
from tests.helpers import jpeg_bytes

pytestmark = pytest.mark.slow  # `llava-bot run` killed -9 and restarted


def cancel_button(fake: FakeDiscord, message_id: str) -> str | None:
    return next((b["custom_id"] for b in fake.buttons_of(message_id) if str(b.get("custom_id", "")).startswith(PREFIX)), None)


async def test_a_note_from_before_a_kill_still_cancels_its_question(fake: FakeDiscord, tmp_path: Path, tiny_pair) -> None:
    journal = tmp_path / "journal.sqlite3"
    async with SlowEngine(tokens=3, delay_s=0.02) as server:
        config = write_config(tmp_path / "bot.toml", fake, tiny_pair, journal)
        text = config.read_text().replace("[generation]", "[queue]\nper_user_per_minute = 0\n[generation]")
        config.write_text(text + f'\n[[engines]]\nkind = "openai"\nurl = "{server.url}"\nname = "slow"\n')
        proc = await start_bot(config, fake)
        output = ""
        try:
            server.hold()
            first = await fake.user_message(ALICE_ID, GENERAL_ID, f"<@{BOT_ID}> what?", attachments=[fake.add_attachment("a.jpg", jpeg_bytes())], mentions_bot=True)
            await server.wait_holding(1)
            waiting = await fake.user_message(BOB_ID, GENERAL_ID, f"<@{BOT_ID}> and this?", attachments=[fake.add_attachment("b.jpg", jpeg_bytes())], mentions_bot=True)
            note = await fake.wait_for_sent(lambda s: ref(s) == str(waiting["id"]) and s["content"].startswith("⏳"), timeout=15)
            button = await fake.wait_until(lambda: cancel_button(fake, note["id"]), what="the Cancel button")
            await fake.wait_until(lambda: journal_rows(journal) == 2, what="two journaled jobs")
        finally:
            proc.kill()  # kill -9 while one answer is in the engine and one waits
            await proc.wait()
            output += (await proc.stdout.read()).decode(errors="replace")

        proc = await start_bot(config, fake)  # the engine is still held: the replayed first job runs, bob's waits again
        try:
            await server.wait_for(lambda s: s.holding >= 1, timeout=30)
            # bob presses the button on the note the killed process posted
            for _ in range(100):  # until the replay has taken his job back (before that: "not waiting any more")
                it = await fake.press_button(BOB_ID, note["id"], button)
                answer = await fake.wait_for_callback(lambda c, it=it: c["interaction_id"] == it.id)
                if answer["type"] == 6:  # a deferred update: the bot took the cancel
                    break
                await asyncio.sleep(0.2)
            await fake.wait_until(lambda: fake.messages[int(note["id"])]["content"] == "Cancelled.", what="Cancelled.")
            assert fake.messages[int(note["id"])]["content"] == "Cancelled."
            assert cancel_button(fake, note["id"]) is None
            server.release()
            await fake.wait_until(lambda: journal_rows(journal) == 0, timeout=30, what="journal emptied")
            await settled(fake)
            counts = Counter(ref(s) for s in fake.sent if s["via"] == "channel")
            assert counts[str(first["id"])] == 1 and counts[str(waiting["id"])] == 1  # one reply each
            assert "-# ⏱" in next(fake.messages[s["id"]]["content"] for s in fake.sent if ref(s) == str(first["id"]))
            assert server.completed == 1  # bob's question never reached the engine
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)
            output += (await proc.stdout.read()).decode(errors="replace")
    assert "Traceback" not in output
