"""Delivering a reply: a channel answer is split into messages Discord takes, never cut."""

from __future__ import annotations

import pytest

from bot.jobs.delivery import ChannelReplier
from bot.reply import split_text


@pytest.mark.parametrize("head_len", [0, 30])
async def test_channel_answers_are_split_never_cut(head_len: int) -> None:
    class Channel:
        def __init__(self) -> None:
            self.sent: list[str] = []

        async def send(self, text: str, **kw) -> None:
            assert len(text) <= 2000
            self.sent.append(text)

    channel = Channel()
    body = " ".join(f"w{i}" for i in range(1500))  # about 6,900 characters
    await ChannelReplier(channel, "H" * head_len).deliver(split_text(body))  # type: ignore[arg-type]
    joined = " ".join(channel.sent)
    assert joined.split() == (["H" * head_len] if head_len else []) + body.split()
