"""Helpers for the end-to-end tests: what a reply looks like, hooks on a running
bot's runtime, `llava-bot run` as a process, a plain discord.py client for the
fake's own tests, and waits on real conditions instead of fixed sleeps.

The fixtures (``fake``, ``llava``, ``run_bot``) are in tests/e2e/conftest.py."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord
from discord.ext import commands

from bot.testing.fake_discord import FakeDiscord
from bot.testing.fake_discord.ids import FLAG_EPHEMERAL
from tests.helpers import ROOT

if TYPE_CHECKING:
    from tests.fakes.slow_engine import SlowEngine

# -- replies ---------------------------------------------------------------------------------------

#: the footer (with the frames of a moving picture counted), and the small lines under it
FOOTER = re.compile(
    r"\n-# ⏱ queue \d+\.\d\d s · image \d+\.\d\d s(?: \(\d+ frames\))? · prompt \d+\.\d\d s · \d+ tok @ [\d.]+ tok/s · total \d+\.\d\d s(?: · [\w.-]+)?"  # the engine's name, with several
    r"(?:\n-# [^\n]*)*$"
)


def ref(record: dict) -> str | None:
    """The id of the message a sent message replies to, as a string."""
    reference = record.get("message_reference")
    return str(reference["message_id"]) if reference else None


def assert_no_pings(record: dict) -> None:
    allowed = record["allowed_mentions"]
    assert allowed["parse"] == [] and not allowed.get("replied_user") and not allowed.get("users") and not allowed.get("roles")
    assert record["mentions"] == [] and record["mention_roles"] == [] and not record["mention_everyone"]


# -- hooks on a running bot's runtime ---------------------------------------------------------------


def record_requests(runtime) -> list:
    """Keep every VisionRequest the bot submits (the queue and engine still run)."""
    seen = []
    original = runtime.submit

    def submit(request, user_id=None, **kw):
        seen.append(request)
        return original(request, user_id, **kw)

    runtime.submit = submit
    return seen


def hold_engine(runtime) -> threading.Event:
    """Make the engine wait for the returned event before each answer."""
    gate = threading.Event()
    engine = runtime.engine
    original = engine.generate

    def generate(request, **kw):
        gate.wait(10)
        return original(request, **kw)

    engine.generate = generate
    return gate


def slow_settings(*servers: SlowEngine | str, **extra) -> dict:
    """Settings overrides that answer through the given OpenAI-compatible servers (or URLs)."""
    urls = [s if isinstance(s, str) else s.url for s in servers]
    return {"engines": [{"kind": "openai", "url": url, "name": f"engine-{i}", "timeout_s": 10} for i, url in enumerate(urls)], **extra}


# -- `llava-bot run` as a process ---------------------------------------------------------------------


def write_config(path: Path, fake: FakeDiscord, tiny_pair, journal: Path) -> Path:
    path.write_text(
        f"""
[model]
path = "{tiny_pair[0]}"
mmproj = "{tiny_pair[1]}"
n_ctx = 2048
[generation]
max_tokens = 12
[images]
allowed_hosts = ["127.0.0.1:{fake.port}"]
[state]
path = "{journal}"
[discord]
api_base = "{fake.api_base}"
gateway_url = "{fake.gateway_url}"
cdn_url = "{fake.cdn_url}"
media_url = "{fake.media_url}"
"""
    )
    return path


async def start_bot(config: Path, fake: FakeDiscord, *extra: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DISCORD_TOKEN": fake.token}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", "--config", str(config), *extra,
        cwd=config.parent, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    connects = fake.identifies + fake.resumes
    await fake.wait_until(lambda: fake.identifies + fake.resumes > connects and fake.connected, timeout=60, what="bot connected")
    return proc


def journal_rows(path: Path) -> int:
    """How many jobs the journal holds."""
    return sqlite3.connect(path).execute("SELECT count(*) FROM jobs").fetchone()[0]


# -- a plain discord.py client (the fake's own tests) ----------------------------------------------------

JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8 + b"\xff\xd9"


def make_bot() -> commands.Bot:
    intents = discord.Intents.default()  # no members/presences: no chunking wait
    intents.message_content = True
    return commands.Bot(command_prefix="!", intents=intents, guild_ready_timeout=0.05)


async def wait_for(cond: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := cond()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)
    return value


# -- waiting for "nothing more happens" ----------------------------------------------------------------


def _activity(fake: FakeDiscord) -> tuple[int, ...]:
    """Everything the fake records that a bot's action adds to."""
    return (
        len(fake.requests), len(fake.sent), len(fake.callbacks), len(fake.deleted),
        len(fake.reactions), len(fake.downloads), len(fake.typing),
    )


def _caught_up(fake: FakeDiscord, bot: Any) -> bool:
    """The bot's client has read every event the fake sent in this gateway session
    (discord.py parses an event, and schedules its handlers, as it reads it)."""
    sent = [e.seq for e in fake.events if e.session_id == fake.session_id and not e.filtered and e.sent]
    ws = getattr(bot, "ws", None)
    return not sent or (ws is not None and (ws.sequence or 0) >= max(sent))


async def wait_idle(fake: FakeDiscord, bot: Any, timeout: float = 15.0) -> None:
    """Until the bot has read every event the fake sent and no job (nor watched
    message) is between acceptance and its last reply."""
    await fake.wait_until(lambda: _caught_up(fake, bot), timeout, "the bot to read the gateway")
    await fake.wait_until(lambda: bot.jobs_in_flight == 0, timeout, "the bot idle")


async def settled(fake: FakeDiscord, bot: Any = None, *, grace: float = 0.2, timeout: float = 15.0) -> None:
    """Wait until nothing more happens, before checking that something did NOT
    (a duplicate, a second reply, a message left alone): with ``bot`` (in process),
    first until it is idle (:func:`wait_idle`: every reply's requests answered); then
    until nothing new has reached the fake for ``grace`` seconds.  A slow machine makes
    this wait longer, it cannot make the check pass early.  For a bot in another
    process, wait for its own end condition first (the journal emptied, the last
    answer final).  Requests whose response the fake holds do not count."""
    deadline = time.monotonic() + timeout
    if bot is not None:
        await wait_idle(fake, bot, timeout)
    last: tuple[int, ...] | None = None
    since = time.monotonic()
    while True:
        now = time.monotonic()
        state = _activity(fake)
        if state != last or (bot is not None and bot.jobs_in_flight):
            last, since = state, now
        elif now - since >= grace:
            return
        if now > deadline:
            raise TimeoutError(f"the fake was not quiet for {grace}s within {timeout}s")
        await asyncio.sleep(0.02)


async def private_answer(fake: FakeDiscord, user: int, channel: int, name: str, options: dict | None = None, **kw: Any) -> str:
    """Run a slash command and return its private answer's text (the follow-up's, when the bot
    deferred); fails if the answer is not ephemeral."""
    it = await fake.slash_command(user, channel, name, options or {}, **kw)
    first = await fake.wait_for_callback(lambda c: c["interaction_id"] == it.id, timeout=30)
    assert first["data"].get("flags", 0) & FLAG_EPHEMERAL, f"{name}: the answer is not private"
    if first["type"] == 5:  # deferred: the answer is the follow-up
        sent = await fake.wait_for_sent(lambda s: s["interaction_id"] == it.id and s["via"] == "followup", timeout=60)
        return str(sent["content"])
    return str(first["data"].get("content", ""))
