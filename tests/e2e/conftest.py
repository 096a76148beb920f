"""The local fake Discord, and llava-bot (real discord.py client, real engine on
the tiny model) running against it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import discord
import discord.gateway
import discord.http
import pytest
import yarl

from bot.testing.fake_discord import FakeDiscord


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


async def settle(seconds: float = 0.3) -> None:
    """Give the bot a moment to (not) react: used only to show that nothing more happens."""
    await asyncio.sleep(seconds)


Starter = Callable[..., Awaitable[tuple[Any, Any]]]
