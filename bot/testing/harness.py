"""Start llava-bot (real discord.py client, real engine) against a FakeDiscord.

Used by the e2e fixtures and by the load test's command line.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bot.client import LlavaBot, make_bot, point_at
from bot.config import load_settings
from bot.jobs.journal import Journal
from bot.runtime import Runtime
from bot.testing.fake_discord import FakeDiscord


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@contextlib.asynccontextmanager
async def running_bot(
    fake: FakeDiscord,
    model_files: tuple[Path, Path],
    state_dir: Path,
    /,
    runtime: Runtime | None = None,
    **settings_overrides: Any,
) -> AsyncIterator[tuple[LlavaBot, Runtime]]:
    """Run llava-bot against ``fake``; with ``runtime``, use that (already
    started) model side instead of loading one, and leave it running."""
    overrides = deep_merge(
        {
            "model": {"path": str(model_files[0]), "mmproj": str(model_files[1]), "n_ctx": 2048, "n_gpu_layers": 0},
            "generation": {"max_tokens": 16, "max_tokens_limit": 64},
            "images": {"allowed_hosts": [f"127.0.0.1:{fake.port}"]},
            # The defaults users get (answers stream in); a test that needs streaming off says so.
            "discord": {
                "api_base": fake.api_base, "gateway_url": fake.gateway_url, "sync_commands": True,
                "cdn_url": fake.cdn_url, "media_url": fake.media_url,
            },
            "state": {"path": str(state_dir / "journal.sqlite3")},
        },
        settings_overrides,
    )
    settings = load_settings(overrides=overrides)
    point_at(settings.discord.api_base, settings.discord.gateway_url)
    own_runtime = runtime is None
    if runtime is None:
        runtime = Runtime(settings)
        await runtime.start()
    journal = Journal(settings.state.path if settings.state.journal else None)
    bot = make_bot(settings, runtime, sync_commands=settings.discord.sync_commands, journal=journal, guild_ready_timeout=0.05)
    task: asyncio.Task[None] | None = None
    try:
        await bot.login(fake.token)
        task = asyncio.create_task(bot.connect())
        ready = asyncio.create_task(bot.wait_until_ready())
        done, _ = await asyncio.wait({task, ready}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if ready not in done:
            ready.cancel()
            if task in done:
                task.result()
            raise AssertionError("llava-bot was not ready within 10 s")
        if settings.discord.sync_commands:
            await fake.wait_until(lambda: fake.commands, what="commands synced")
        yield bot, runtime
    finally:
        await bot.close()
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 5)
        if own_runtime:
            await runtime.close()
