"""``llava-bot serve`` and ``llava-bot run`` with ``web.enabled``, as processes:
the URL line, an answer over HTTP, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bot.testing.fake_discord import ALICE_ID, BOT_ID, GENERAL_ID, FakeDiscord
from tests.helpers import jpeg_bytes
from tests.web.helpers import FOOTER, all_events, form

ROOT = Path(__file__).parents[2]
URL = re.compile(rb"playground at (http://127\.0\.0\.1:\d+/)")


def child_env(tiny_pair: tuple[Path, Path], tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLAVA_BOT_") or k == "LLAVA_BOT_CACHE_DIR"}
    env.pop("DISCORD_TOKEN", None)
    env.update(
        LLAVA_BOT_MODEL__PATH=str(tiny_pair[0]),
        LLAVA_BOT_MODEL__MMPROJ=str(tiny_pair[1]),
        LLAVA_BOT_MODEL__N_CTX="2048",
        LLAVA_BOT_MODEL__N_GPU_LAYERS="0",
        LLAVA_BOT_GENERATION__MAX_TOKENS="12",
        LLAVA_BOT_STATE__PATH=str(tmp_path / "journal.sqlite3"),
        PYTHONPATH=str(ROOT),
        **extra,
    )
    return env


async def wait_for_url(stream: asyncio.StreamReader, seen: list[bytes], timeout: float = 60) -> str:
    """Read lines until the playground's URL appears."""

    async def scan() -> str:
        while True:
            line = await stream.readline()
            if not line:
                raise AssertionError("the process ended before serving:\n" + b"".join(seen).decode(errors="replace"))
            seen.append(line)
            match = URL.search(line)
            if match:
                return match.group(1).decode()

    return await asyncio.wait_for(scan(), timeout)


async def ask_once(url: str) -> dict:
    async with aiohttp.ClientSession() as session:
        async with session.post(url + "api/ask", data=form(image=jpeg_bytes())) as resp:
            events = await all_events(resp)
    assert [name for name, _ in events][-1] == "done", events
    return events[-1][1]


@pytest.fixture
async def spawn(tmp_path: Path) -> AsyncIterator:
    """Start ``python -m bot ARGS`` (killed after the test if still running)."""
    procs: list[asyncio.subprocess.Process] = []

    async def start(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", *args, cwd=tmp_path, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.slow
async def test_serve_prints_the_url_answers_and_stops_on_sigterm(spawn, tiny_pair, tmp_path: Path) -> None:
    proc = await spawn("serve", "--port", "0", env=child_env(tiny_pair, tmp_path))
    seen: list[bytes] = []
    url = await wait_for_url(proc.stdout, seen)
    done = await ask_once(url)
    assert FOOTER.match(done["footer"])
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200 and "llava-bot playground" in await resp.text()
    proc.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert b"".join(seen).decode().strip() == f"llava-bot: playground at {url} (Ctrl-C to stop)"  # its one stdout line
    assert out == b"" and b"stopped" in err


@pytest.mark.slow
async def test_run_with_web_enabled_serves_the_page_beside_the_bot(spawn, tiny_pair, tmp_path: Path) -> None:
    async with FakeDiscord(heartbeat_interval=1000) as fake:
        env = child_env(
            tiny_pair, tmp_path,
            DISCORD_TOKEN=fake.token,
            LLAVA_BOT_DISCORD__API_BASE=fake.api_base,
            LLAVA_BOT_DISCORD__GATEWAY_URL=fake.gateway_url,
            LLAVA_BOT_WEB__ENABLED="true",
            LLAVA_BOT_WEB__PORT="0",
            LLAVA_BOT_IMAGES__ALLOWED_HOSTS=f'["127.0.0.1:{fake.port}"]',
        )
        proc = await spawn("run", env=env)
        url = await wait_for_url(proc.stderr, [])  # the log line
        web_done = await ask_once(url)
        assert FOOTER.match(web_done["footer"])
        await fake.wait_until(lambda: fake.identifies >= 1, timeout=30, what="IDENTIFY")
        await asyncio.sleep(2.5)  # discord.py waits guild_ready_timeout (2 s) before it is ready
        att = fake.add_attachment("house.jpg", jpeg_bytes())
        await fake.user_message(ALICE_ID, GENERAL_ID, f"<@{BOT_ID}> what is this?", attachments=[att], mentions_bot=True)
        reply = await fake.wait_for_sent(lambda s: s["channel_id"] == GENERAL_ID and "⏱" in s["content"], timeout=30)
        assert FOOTER.match(reply["content"].splitlines()[-1].removeprefix("-# "))
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 40)
    assert proc.returncode == 0, err.decode()[-2000:]
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as session, session.get(url):
            pass
