"""Helpers for the playground tests: settings on the tiny model, and reading
server-sent events the way a browser does."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from bot.config import Settings, load_settings
from bot.reply import CUT_MARK
from bot.testing.harness import deep_merge

FOOTER = re.compile(r"^⏱ queue \d+\.\d\d s · image \d+\.\d\d s · prompt \d+\.\d\d s · \d+ tok @ [\d.]+ tok/s · total \d+\.\d\d s$")

Event = tuple[str, dict[str, Any]]


def tiny_settings(tiny_pair: tuple[Path, Path], **overrides: Any) -> Settings:
    """Settings on the built-in tiny model (CPU), short answers, no journal."""
    base: dict[str, Any] = {
        "model": {"path": str(tiny_pair[0]), "mmproj": str(tiny_pair[1]), "n_ctx": 2048, "n_gpu_layers": 0},
        "generation": {"max_tokens": 16, "max_tokens_limit": 64},
        "state": {"journal": False},
    }
    return load_settings(overrides=deep_merge(base, overrides))


def parse_block(block: bytes) -> Event | None:
    """One ``event:``/``data:`` block; None for a comment (``: ping``)."""
    name, data = "message", ""
    for line in block.decode().split("\n"):
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].lstrip()
    return (name, json.loads(data)) if data else None


async def iter_events(resp: aiohttp.ClientResponse) -> AsyncIterator[Event]:
    """The events of an ``/api/ask`` answer as they arrive."""
    buffer = b""
    async for chunk in resp.content.iter_any():
        buffer += chunk
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            event = parse_block(block)
            if event is not None:
                yield event


async def all_events(resp: aiohttp.ClientResponse) -> list[Event]:
    return [event async for event in iter_events(resp)]


def answer_part(done_text: str) -> str:
    """The answer in a ``done`` event's text, without the cut mark."""
    return done_text.removesuffix(CUT_MARK)


def form(image: bytes | None = None, question: str = "What is this?", **fields: Any) -> aiohttp.FormData:
    data = aiohttp.FormData(default_to_multipart=True)  # what browsers send
    if image is not None:
        data.add_field("image", image, filename="picture.jpg", content_type="image/jpeg")
    data.add_field("question", question)
    for key, value in fields.items():
        data.add_field(key, str(value))
    return data
