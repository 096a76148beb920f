"""`llava-bot run` as a user starts it: a subprocess, a config file, the token
in the environment, pointed at the local fake Discord."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

import pytest

from bot.testing.fake_discord import ALICE_ID, BOT_ID, GENERAL_ID, FakeDiscord
from tests.e2e.helpers import start_bot, write_config
from tests.helpers import jpeg_bytes

pytestmark = pytest.mark.slow  # a `llava-bot run` process

FOOTER = re.compile(r"\n-# ⏱ queue .* tok/s · total \d+\.\d\d s$")


async def test_run_answers_a_mention_ask_and_the_menu(fake: FakeDiscord, tmp_path: Path, tiny_pair) -> None:
    config = write_config(tmp_path / "bot.toml", fake, tiny_pair, tmp_path / "journal.sqlite3")
    proc = await start_bot(config, fake, "--sync")
    try:
        await fake.wait_until(lambda: fake.connected and fake.commands, timeout=60, what="bot connected and synced")
        att = fake.add_attachment("a.jpg", jpeg_bytes())
        await fake.user_message(ALICE_ID, GENERAL_ID, f"<@{BOT_ID}> what is it?", attachments=[att], mentions_bot=True)
        # answers stream in (the default): the reply is created, edited, and ends with the footer
        mention = await fake.wait_for_sent(lambda s: s["via"] == "channel", timeout=30)
        await fake.wait_for_sent(lambda s: s["id"] == mention["id"] and FOOTER.search(s["content"]), timeout=30)

        ask = await fake.slash_command(ALICE_ID, GENERAL_ID, "ask", {"image": fake.add_attachment("b.jpg", jpeg_bytes()), "question": "why?"})
        await fake.wait_for_sent(lambda s: s.get("interaction_id") == ask.id and FOOTER.search(s["content"]), timeout=30)

        target = await fake.user_message(ALICE_ID, GENERAL_ID, "pic", attachments=[fake.add_attachment("c.jpg", jpeg_bytes())])
        menu = await fake.message_context_menu(ALICE_ID, GENERAL_ID, "Describe image", target["id"])
        await fake.wait_for_sent(lambda s: s.get("interaction_id") == menu.id and FOOTER.search(s["content"]), timeout=30)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        output = (await proc.stdout.read()).decode(errors="replace")
    assert fake.token not in output  # the token is never logged
    assert "model ready" in output
    assert "Traceback" not in output, output
