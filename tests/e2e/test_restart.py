"""The real `llava-bot run` process: SIGTERM stops it cleanly, and after a
kill -9 the next start answers what was accepted but not answered."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from bot.testing.fake_discord import ALICE_ID, BOB_ID, BOT_ID, GENERAL_ID, FakeDiscord
from tests.e2e.helpers import FOOTER, journal_rows, ref, settled, start_bot, write_config
from tests.helpers import ROOT, jpeg_bytes

pytestmark = pytest.mark.slow  # `llava-bot run` processes, killed and restarted


async def test_sigterm_stops_cleanly(fake: FakeDiscord, tmp_path: Path, tiny_pair) -> None:
    config = write_config(tmp_path / "bot.toml", fake, tiny_pair, tmp_path / "journal.sqlite3")
    proc = await start_bot(config, fake)
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 30) == 0
    output = (await proc.stdout.read()).decode(errors="replace")
    assert "stopping:" in output and "stopped" in output
    assert "Traceback" not in output


async def test_jobs_accepted_before_a_kill_are_answered_after_the_restart(fake: FakeDiscord, tmp_path: Path, tiny_pair) -> None:
    journal = tmp_path / "journal.sqlite3"
    config = write_config(tmp_path / "bot.toml", fake, tiny_pair, journal)
    proc = await start_bot(config, fake, "--sync")
    await fake.wait_until(lambda: fake.commands, what="commands synced")
    # Both downloads hang, so both jobs are accepted (journaled) but not answered.
    fake.delay_next("GET", r"/attachments/", 8, times=2)
    msg = await fake.user_message(
        ALICE_ID, GENERAL_ID, f"<@{BOT_ID}> what is it?",
        attachments=[fake.add_attachment("a.jpg", jpeg_bytes())], mentions_bot=True,
    )
    inter = await fake.slash_command(BOB_ID, GENERAL_ID, "ask", {"image": fake.add_attachment("b.jpg", jpeg_bytes()), "question": "why?"})
    await fake.wait_until(lambda: journal.exists() and journal_rows(journal) == 2, what="two journaled jobs")
    proc.kill()  # kill -9
    await proc.wait()
    await proc.stdout.read()
    assert fake.sent == []

    proc = await start_bot(config, fake)
    try:
        # Both are replayed at once, so one may first show "⏳ #1 in line" and be edited.
        first = await fake.wait_for_sent(lambda s: ref(s) == msg["id"], timeout=30)
        answer = await fake.wait_for_sent(lambda s: s["id"] == first["id"] and "⏱" in s["content"], timeout=30)
        assert FOOTER.search(answer["content"])
        follow = await fake.wait_for_sent(lambda s: s.get("interaction_id") == inter.id and "⏱" in s["content"], timeout=30)
        assert FOOTER.search(follow["content"])
        await fake.wait_until(lambda: journal_rows(journal) == 0, what="journal emptied")
        await settled(fake)
        # one message per job (a place-in-line note is edited into its answer, not added)
        assert len({s["id"] for s in fake.sent}) == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
        output = (await proc.stdout.read()).decode(errors="replace")
    assert "answering 2 job(s) left unanswered by the previous run" in output
    assert fake.token not in output


async def test_the_token_never_appears_in_any_output(fake: FakeDiscord, tmp_path: Path, tiny_pair) -> None:
    """Capture everything a debug run prints while things fail on purpose."""
    config = write_config(tmp_path / "bot.toml", fake, tiny_pair, tmp_path / "journal.sqlite3")
    # 1. a wrong token: one clear line, exit 2
    wrong = "wrong-secret-token-0123456789"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DISCORD_TOKEN": wrong}
    done = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", "-v", "--config", str(config),
        cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(done.communicate(), 60)
    text = out.decode(errors="replace")
    assert done.returncode == 2
    assert text.strip().splitlines()[-1] == "llava-bot: Discord refused the token: Improper token has been passed."
    assert wrong not in text

    # 2. the right token, debug logging, and failures: a 500, then a 403 on sending, a bad file
    # (streaming off, so that the failures hit the final reply rather than a streamed edit)
    os.environ["LLAVA_BOT_DISCORD__STREAM"] = "false"
    try:
        proc = await start_bot(config, fake, "-v")
    finally:
        del os.environ["LLAVA_BOT_DISCORD__STREAM"]
    fake.fail_next("POST", r"^/channels/\d+/messages$", 500, times=1)
    fake.fail_next("POST", r"^/channels/\d+/messages$", 403, times=1)
    await fake.user_message(ALICE_ID, GENERAL_ID, f"<@{BOT_ID}> hi", attachments=[fake.add_attachment("a.jpg", jpeg_bytes())], mentions_bot=True)
    await fake.wait_until(lambda: len(fake.requests_to("POST", r"^/channels/\d+/messages$")) == 2, timeout=30, what="500 then 403")
    await fake.user_message(ALICE_ID, GENERAL_ID, f"<@{BOT_ID}> hi", attachments=[fake.add_attachment("b.txt", b"text")], mentions_bot=True)
    await fake.wait_for_sent(lambda s: "not an image" in s["content"], timeout=30)
    proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(proc.wait(), 60)
    text = (await proc.stdout.read()).decode(errors="replace")
    assert "no permission to reply there" in text  # it did fail, and said so
    assert "DEBUG" in text  # everything was logged
    assert fake.token not in text
