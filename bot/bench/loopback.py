"""The whole bot on a runtime against a fresh loopback fake Discord (bench parts 1 and 7)."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from bot.runtime import Runtime


@asynccontextmanager
async def loopback_bot(runtime: Runtime, **discord: Any) -> AsyncIterator[tuple[Any, Any]]:
    """The whole bot on ``runtime`` against a fresh fake Discord, discord.py's logs quiet:
    (the fake, the bot).  ``discord``: more [discord] settings."""
    from bot.testing.fake_discord import FakeDiscord
    from bot.testing.harness import running_bot

    discord_log = logging.getLogger("discord")
    saved_level = discord_log.level
    discord_log.setLevel(logging.ERROR)
    model = runtime.settings.model
    assert model.path is not None and model.mmproj is not None
    try:
        with tempfile.TemporaryDirectory() as state:
            async with FakeDiscord() as fake:
                async with running_bot(
                    fake, (model.path, model.mmproj), Path(state), runtime=runtime,
                    discord={"sync_commands": False, **discord}, queue={"per_user_per_minute": 0},
                ) as (bot, _):
                    yield fake, bot
    finally:
        discord_log.setLevel(saved_level)

