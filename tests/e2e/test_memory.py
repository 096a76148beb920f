"""Twelve members post a 40 MP PNG at once to `llava-bot run` (a separate process, the
built-in tiny model): every one is answered and the process's peak memory stays bounded."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest

from bot.testing.fake_discord import BOT_ID, GENERAL_ID, FakeDiscord
from tests.e2e.helpers import FOOTER, ref, start_bot, write_config
from tests.helpers import photo_like_png

pytestmark = pytest.mark.slow  # twelve 40 MP PNGs through `llava-bot run`


def peak_rss_bytes(pid: int) -> int:
    """The process's high-water mark of resident memory (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
async def test_twelve_members_post_a_40mp_png_at_once(fake: FakeDiscord, tmp_path: Path, tiny_pair) -> None:
    data = photo_like_png(8000, 5000)  # 40 MP, about 20 MB: under images.max_bytes
    config = write_config(tmp_path / "bot.toml", fake, tiny_pair, tmp_path / "journal.sqlite3")
    proc = await start_bot(config, fake)
    try:
        users = list(range(200, 212))
        for user in users:
            fake.add_user(user, f"member{user}")
        atts = [fake.add_attachment(f"big{u}.png", data, content_type="image/png") for u in users]
        msgs = await asyncio.gather(
            *(fake.user_message(u, GENERAL_ID, f"<@{BOT_ID}> what is it?", attachments=[a], mentions_bot=True) for u, a in zip(users, atts))
        )

        def final(msg: dict) -> str | None:
            replies = [s for s in fake.sent if s["via"] == "channel" and ref(s) == str(msg["id"])]
            text = fake.messages[replies[0]["id"]]["content"] if replies else None
            return text if text and "⏱" in text else None  # the final text (not a note, not a streamed part)

        await fake.wait_until(lambda: all(final(m) for m in msgs), timeout=240, what="twelve answers")
        assert all(FOOTER.search(final(m) or "") for m in msgs)
        peak = peak_rss_bytes(proc.pid)
        print(f"peak RSS of the bot: {peak / 1e6:.0f} MB")
        assert peak < 1_200_000_000, f"peak RSS {peak / 1e6:.0f} MB"
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 60)
