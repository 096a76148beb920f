"""The local fake Discord, and llava-bot (real discord.py client, real engine on
the tiny model) running against it; every test under tests/e2e/ is marked ``e2e``.
Plain helpers are in tests/e2e/helpers.py."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import discord
import discord.gateway
import discord.http
import pytest
import yarl
from discord.ext import commands

from bot.testing.fake_discord import FakeDiscord

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
async def fake():
    async with FakeDiscord(heartbeat_interval=1000) as f:
        old_base = discord.http.Route.BASE
        old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
        discord.http.Route.BASE = f.api_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(f.gateway_url)
        try:
            yield f
        finally:
            discord.http.Route.BASE = old_base
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway


@pytest.fixture
async def llava(fake: FakeDiscord, tiny_pair, monkeypatch: pytest.MonkeyPatch, tmp_path):
    """Start llava-bot against the fake; returns (bot, runtime). Closed afterwards."""
    from bot.testing.harness import running_bot

    monkeypatch.chdir(tmp_path)  # no stray config/bot.toml
    async with contextlib.AsyncExitStack() as stack:

        async def start(**settings_overrides: Any):
            return await stack.enter_async_context(running_bot(fake, tiny_pair, tmp_path, **settings_overrides))

        yield start


Starter = Callable[..., Awaitable[tuple[Any, Any]]]


@pytest.fixture
async def run_bot(fake: FakeDiscord):
    """Start plain discord.py bots against the fake; wait for on_ready; close them afterwards."""
    running: list[tuple[commands.Bot, asyncio.Task | None]] = []

    async def start(bot: commands.Bot) -> commands.Bot:
        running.append((bot, None))
        await bot.login(fake.token)  # REST login first: wait_until_ready() needs it
        task = asyncio.create_task(bot.connect())
        running[-1] = (bot, task)
        ready = asyncio.create_task(bot.wait_until_ready())
        done, _ = await asyncio.wait({task, ready}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            ready.cancel()
            task.result()  # raises the login/connect error
            raise AssertionError("bot stopped before ready")
        if ready not in done:
            ready.cancel()
            raise AssertionError("bot not ready within 10 s")
        return bot

    yield start
    for bot, task in running:
        await bot.close()
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 5)
