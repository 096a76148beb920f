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

from bot.config import load_settings
from tests.e2e.fake_discord import FakeDiscord


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


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@pytest.fixture
async def llava(fake: FakeDiscord, tiny_pair, monkeypatch: pytest.MonkeyPatch, tmp_path):
    """Start llava-bot against the fake; returns (bot, runtime). Closed afterwards."""
    from bot.client import LlavaBot, point_at
    from bot.journal import Journal
    from bot.runtime import Runtime

    monkeypatch.chdir(tiny_pair[0].parent)  # no stray config/bot.toml
    started: list[tuple[Any, Any, asyncio.Task[None]]] = []

    async def start(**settings_overrides: Any):
        overrides = deep_merge(
            {
                "model": {"path": str(tiny_pair[0]), "mmproj": str(tiny_pair[1]), "n_ctx": 2048, "n_gpu_layers": 0},
                "generation": {"max_tokens": 16, "max_tokens_limit": 64},
                "images": {"allowed_hosts": [f"127.0.0.1:{fake.port}"]},
                "discord": {"api_base": fake.api_base, "gateway_url": fake.gateway_url, "sync_commands": True},
                "state": {"path": str(tmp_path / "journal.sqlite3")},
            },
            settings_overrides,
        )
        settings = load_settings(overrides=overrides)
        point_at(settings.discord.api_base, settings.discord.gateway_url)
        runtime = Runtime(settings)
        await runtime.start()
        journal = Journal(settings.state.path if settings.state.journal else None)
        bot = LlavaBot(
            settings, runtime, sync_commands=settings.discord.sync_commands, journal=journal, guild_ready_timeout=0.05
        )
        await bot.login(fake.token)
        task = asyncio.create_task(bot.connect())
        started.append((bot, runtime, task))
        ready = asyncio.create_task(bot.wait_until_ready())
        done, _ = await asyncio.wait({task, ready}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if ready not in done:
            ready.cancel()
            if task in done:
                task.result()
            raise AssertionError("llava-bot was not ready within 10 s")
        await fake.wait_until(lambda: fake.commands, what="commands synced")
        return bot, runtime

    yield start
    for bot, runtime, task in started:
        await bot.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)
        await runtime.close()


async def settle(seconds: float = 0.3) -> None:
    """Give the bot a moment to (not) react: used only to show that nothing more happens."""
    await asyncio.sleep(seconds)


Starter = Callable[..., Awaitable[tuple[Any, Any]]]
