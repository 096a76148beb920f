"""Operations: metrics and health, one JSON log line per job, sharding."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from bot.client import ShardedLlavaBot
from bot.metrics import Metrics
from bot.testing.fake_discord import ALICE_ID, BOT_ID, GENERAL_ID, FakeDiscord
from tests.e2e.helpers import FOOTER, ref, write_config
from tests.helpers import ROOT, http_get, jpeg_bytes


async def test_metrics_and_health(fake: FakeDiscord, llava) -> None:
    bot, runtime = await llava()
    metrics = Metrics(runtime, bot)
    port = await metrics.start("127.0.0.1", 0)
    try:
        status, text = await http_get(f"http://127.0.0.1:{port}/healthz")
        assert (status, text.strip()) == (200, "ok")
        msg = await fake.user_message(ALICE_ID, GENERAL_ID, f"<@{BOT_ID}> hi", attachments=[fake.add_attachment("a.jpg", jpeg_bytes())], mentions_bot=True)
        await fake.wait_for_final(lambda s: ref(s) == msg["id"])
        await fake.wait_until(lambda: bot.jobs_in_flight == 0)
        status, text = await http_get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        for line in (
            'llava_bot_jobs_total{outcome="answered"} 1.0',
            'llava_bot_replies_total{outcome="answered"} 1.0',
            "llava_bot_queue_depth 0.0",
            'llava_bot_model_loaded{engine="local"} 1.0',
            'llava_bot_gpu_offload{engine="local"} 0.0',
            "llava_bot_gateway_connected 1.0",
            'llava_bot_stage_seconds_count{stage="total"} 1.0',
            "llava_bot_tokens_per_second_count 1.0",
        ):
            assert line in text, line
        await bot.close()
        status, text = await http_get(f"http://127.0.0.1:{port}/healthz")
        assert (status, text.strip()) == (503, "Discord gateway not connected")
    finally:
        await metrics.stop()


@pytest.mark.parametrize("shards", ["auto", 1])
async def test_sharded_bot_answers(fake: FakeDiscord, llava, shards) -> None:
    bot, runtime = await llava(discord={"shard_count": shards})
    assert isinstance(bot, ShardedLlavaBot)
    msg = await fake.user_message(ALICE_ID, GENERAL_ID, f"<@{BOT_ID}> hi", attachments=[fake.add_attachment("a.jpg", jpeg_bytes())], mentions_bot=True)
    reply = await fake.wait_for_final(lambda s: ref(s) == msg["id"])
    assert FOOTER.search(reply["content"])
    if shards == "auto":
        assert fake.requests_to("GET", r"^/gateway/bot$")


@pytest.mark.slow
async def test_json_logs_one_line_per_job_without_content(fake: FakeDiscord, tmp_path: Path, tiny_pair) -> None:
    config = write_config(tmp_path / "bot.toml", fake, tiny_pair, tmp_path / "journal.sqlite3")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DISCORD_TOKEN": fake.token, "LLAVA_BOT_LOG_FORMAT": "json"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", "--config", str(config),
        cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        await fake.wait_until(lambda: fake.connected, timeout=60, what="connected")
        secret_question = "what colour is my secret diary"
        msg = await fake.user_message(ALICE_ID, GENERAL_ID, f"<@{BOT_ID}> {secret_question}", attachments=[fake.add_attachment("a.jpg", jpeg_bytes())], mentions_bot=True)
        first = await fake.wait_for_final(lambda s: ref(s) == msg["id"], timeout=30)
        await fake.wait_for_final(lambda s: s["id"] == first["id"] and "⏱" in s["content"], timeout=30)  # streamed, then final
        await fake.user_message(ALICE_ID, GENERAL_ID, f"<@{BOT_ID}> {secret_question}", attachments=[fake.add_attachment("b.txt", b"x")], mentions_bot=True)
        await fake.wait_for_final(lambda s: "not an image" in s["content"], timeout=30)
        await asyncio.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
    lines = (await proc.stdout.read()).decode().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]  # every line is JSON
    jobs = [r["job"] for r in records if "job" in r]
    assert sorted(j["outcome"] for j in jobs) == ["answered", "refused"]
    answered = next(j for j in jobs if j["outcome"] == "answered")
    assert answered["user"] == ALICE_ID and answered["channel"] == GENERAL_ID and answered["tokens"] > 0
    assert not any(secret_question in line for line in lines)  # no message content in the logs
