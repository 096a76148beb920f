"""A reduced load test in CI (the full one: python -m tests.e2e.load)."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from bot.testing.fake_discord import FakeDiscord
from tests.e2e.load import run_load

pytestmark = pytest.mark.slow  # 300 questions at once


@pytest.mark.parametrize("corpus", ["plain", "odd"])
async def test_every_question_gets_exactly_one_reply_under_load(fake: FakeDiscord, tiny_pair, tmp_path, capsys, corpus: str) -> None:
    """300 questions at once, answers streaming in (the default): each ends in exactly one
    reply, final, no note left.  "odd": odd images and files that are not images."""
    result = await run_load(fake, tiny_pair, tmp_path, questions=300, users=30, max_size=16, corpus=corpus, max_tokens=24)
    with capsys.disabled():
        print("\nload test:", json.dumps(asdict(result)))
    assert result.unanswered == 0 and result.duplicated == 0
    assert result.answered + result.refused == result.questions
    assert result.answered == result.served_by_queue > 0
    assert result.refused > 0  # it really was over capacity
    assert result.identifies == 1 and result.resumes == 0  # the heartbeat never stalled
    assert result.heartbeats >= 1
