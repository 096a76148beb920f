"""Fixtures of the playground tests: the real app over a real Runtime."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.runtime import Runtime
from bot.web import create_app
from tests.web.helpers import tiny_settings

Start = Callable[..., Awaitable[tuple[TestClient, Runtime]]]


@pytest.fixture
async def playground(tiny_pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[Start]:
    """``await playground(**settings)``: a started Runtime on the tiny model and a
    client of the playground app over it (both closed after the test)."""
    monkeypatch.chdir(tmp_path)  # no stray config/bot.toml
    async with contextlib.AsyncExitStack() as stack:

        async def start(**overrides: Any) -> tuple[TestClient, Runtime]:
            settings = tiny_settings(tiny_pair, **overrides)
            runtime = Runtime(settings)
            await runtime.start()
            stack.push_async_callback(runtime.close)
            client = TestClient(TestServer(create_app(runtime, settings.web)))
            await client.start_server()
            stack.push_async_callback(client.close)
            return client, runtime

        yield start
