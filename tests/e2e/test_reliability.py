"""Bad input and faults: every accepted question ends in exactly one reply.

The real discord.py client and the real engine on the tiny model, against the
local fake Discord.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sqlite3

import pytest

from bot.cli import RESTARTING, _stop_gracefully
from bot.reply import TIMEOUT_MARK, parked_line
from bot.testing.fake_discord import ALICE_ID, BOB_ID, BOT_ID, GENERAL_ID, FakeDiscord
from tests.e2e.helpers import FOOTER, assert_no_pings, hold_engine, record_requests, ref, settled
from tests.e2e.odd_images import CASES
from tests.helpers import jpeg_bytes

CAROL_ID = 4


async def question_in_the_engine(fake: FakeDiscord, runtime) -> tuple:
    """Ask one question and hold it in the engine; returns (the gate that releases it, the message)."""
    gate = hold_engine(runtime)
    att = fake.add_attachment("a.jpg", jpeg_bytes())
    msg = await fake.user_message(ALICE_ID, GENERAL_ID, f"<@{BOT_ID}> hi", attachments=[att], mentions_bot=True)
    await fake.wait_until(lambda: runtime.queue.stats().busy == 1)
    return gate, msg


async def ask(fake: FakeDiscord, att: dict, text: str = "what is this?", user: int = ALICE_ID) -> dict:
    msg = await fake.user_message(user, GENERAL_ID, f"<@{BOT_ID}> {text}", attachments=[att], mentions_bot=True)
    return await fake.wait_for_final(lambda s: ref(s) == msg["id"], timeout=15)


async def test_bad_input_gets_its_line_and_the_next_job_still_works(fake: FakeDiscord, llava) -> None:
    bot, runtime = await llava(queue={"per_user_per_minute": 0})
    for name, data, ctype, size, line, downloaded in CASES:
        att = fake.add_attachment(name, data, content_type=ctype, size=size)
        reply = await ask(fake, att)
        if line is None:
            assert FOOTER.search(reply["content"]), (name, reply["content"])
        else:
            assert reply["content"] == line, name
        assert bool(fake.downloads_of(att)) is downloaded, name
        assert_no_pings(reply)
        good = await ask(fake, fake.add_attachment("good.jpg", jpeg_bytes()))
        assert FOOTER.search(good["content"]), f"the job after {name} failed"
    await settled(fake, bot)
    # exactly one reply per question
    assert len(fake.created_in(GENERAL_ID)) == 2 * len(CASES)
    assert await bot.journal.count() == 0


async def test_a_ten_thousand_character_question_is_trimmed(fake: FakeDiscord, llava) -> None:
    bot, runtime = await llava()
    seen = record_requests(runtime)
    reply = await ask(fake, fake.add_attachment("a.jpg", jpeg_bytes()), "why " * 2500)
    assert FOOTER.search(reply["content"])
    question, instruction = seen[0].question.rsplit("\n", 1)  # the cut question, then the language to answer in
    assert len(question) <= runtime.settings.generation.max_question_chars + 1
    assert question.endswith("…") and instruction == "Answer in the language of the question."


async def test_a_prompt_over_the_context_gets_a_clear_line(fake: FakeDiscord, llava) -> None:
    bot, runtime = await llava(model={"n_ctx": 256}, generation={"max_question_chars": 5000})
    reply = await ask(fake, fake.add_attachment("a.jpg", jpeg_bytes()), "why " * 700)
    assert re.fullmatch(
        r"⚠️ The question and image need \d+ tokens, more than the model's context of 256; ask a shorter question\.",
        reply["content"],
    )
    assert FOOTER.search((await ask(fake, fake.add_attachment("b.jpg", jpeg_bytes()), "hi"))["content"])


async def test_engine_failure_mid_job_gets_an_error_line_and_the_consumer_goes_on(fake: FakeDiscord, llava) -> None:
    bot, runtime = await llava()
    engine = runtime.engine
    original = engine.generate
    calls = []

    def generate(request, **kw):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return original(request, **kw)

    engine.generate = generate
    first = await ask(fake, fake.add_attachment("a.jpg", jpeg_bytes()))
    assert first["content"] == "⚠️ Something went wrong on my side, sorry; please try again."
    assert "CUDA" not in first["content"]
    second = await ask(fake, fake.add_attachment("b.jpg", jpeg_bytes()))
    assert FOOTER.search(second["content"])
    stats = runtime.queue.stats()
    assert (stats.failed, stats.served) == (1, 1)


async def test_time_limit_posts_the_partial_answer_marked(fake: FakeDiscord, llava) -> None:
    bot, runtime = await llava(generation={"timeout_s": 1e-6, "max_tokens": 64})
    reply = await ask(fake, fake.add_attachment("a.jpg", jpeg_bytes()))
    assert TIMEOUT_MARK.strip() in reply["content"]
    assert FOOTER.search(reply["content"])


async def test_gateway_drop_and_resume_while_a_job_runs(fake: FakeDiscord, llava) -> None:
    bot, runtime = await llava()
    gate, msg = await question_in_the_engine(fake, runtime)
    await fake.drop_connection()
    await fake.wait_until(lambda: fake.resumes == 1, what="resume")
    gate.set()
    reply = await fake.wait_for_final(lambda s: ref(s) == msg["id"])
    assert FOOTER.search(reply["content"])
    # the connection still works: a question after the resume is answered too
    assert FOOTER.search((await ask(fake, fake.add_attachment("b.jpg", jpeg_bytes())))["content"])
    assert fake.identifies == 1


@pytest.mark.parametrize("status", [429, pytest.param(500, marks=pytest.mark.slow), pytest.param(502, marks=pytest.mark.slow)])
async def test_rate_limits_and_server_errors_on_send_are_retried(fake: FakeDiscord, llava, status: int) -> None:
    bot, runtime = await llava()
    rule = fake.fail_next("POST", r"^/channels/\d+/messages$", status, times=1, retry_after=0.1 if status == 429 else None)
    reply = await ask(fake, fake.add_attachment("a.jpg", jpeg_bytes()))
    assert rule.hits == 1
    assert FOOTER.search(reply["content"])
    await settled(fake, bot)
    assert len(fake.created_in(GENERAL_ID)) == 1


async def test_no_permission_to_reply_is_logged_and_the_job_closed(fake: FakeDiscord, llava, caplog) -> None:
    bot, runtime = await llava()
    fake.fail_next("POST", r"^/channels/\d+/messages$", 403, times=None)  # a missing permission stays missing
    att = fake.add_attachment("a.jpg", jpeg_bytes())
    with caplog.at_level(logging.WARNING):
        await fake.user_message(ALICE_ID, GENERAL_ID, f"<@{BOT_ID}> hi", attachments=[att], mentions_bot=True)
        await fake.wait_until(lambda: runtime.queue.stats().served == 1)
        await fake.wait_until(lambda: bot.jobs_in_flight == 0)
    assert "no permission to reply there, job closed" in caplog.text
    assert fake.created_in(GENERAL_ID) == []
    assert await bot.journal.count() == 0
    fake.clear_failures()  # the permission is granted
    assert FOOTER.search((await ask(fake, fake.add_attachment("b.jpg", jpeg_bytes())))["content"])


async def test_deleted_question_is_answered_without_a_reference(fake: FakeDiscord, llava) -> None:
    bot, runtime = await llava()
    gate, msg = await question_in_the_engine(fake, runtime)
    await fake.user_delete(msg["id"])
    gate.set()
    reply = await fake.wait_for_final(lambda s: s["channel_id"] == GENERAL_ID)
    assert FOOTER.search(reply["content"])
    assert not reply["message"].get("message_reference")


async def test_channel_gone_drops_the_answer_with_a_log_line(fake: FakeDiscord, llava, caplog) -> None:
    bot, runtime = await llava()
    gate, _ = await question_in_the_engine(fake, runtime)
    fake.fail_next("POST", rf"^/channels/{GENERAL_ID}/messages$", 404, times=None, code=10003, message="Unknown Channel")
    with caplog.at_level(logging.WARNING):
        gate.set()
        await fake.wait_until(lambda: runtime.queue.stats().served == 1)
        await fake.wait_until(lambda: bot.jobs_in_flight == 0)
    assert "the channel or interaction is gone, answer dropped" in caplog.text
    assert await bot.journal.count() == 0


async def test_without_a_journal_a_graceful_stop_tells_the_waiting_to_ask_again(fake: FakeDiscord, llava) -> None:
    bot, runtime = await llava(state={"journal": False})
    gate = hold_engine(runtime)
    first = await fake.user_message(ALICE_ID, GENERAL_ID, f"<@{BOT_ID}> hi", attachments=[fake.add_attachment("a.jpg", jpeg_bytes())], mentions_bot=True)
    await fake.wait_until(lambda: runtime.queue.stats().busy == 1)
    second = await fake.user_message(BOB_ID, GENERAL_ID, f"<@{BOT_ID}> hi", attachments=[fake.add_attachment("b.jpg", jpeg_bytes())], mentions_bot=True)
    place = await fake.wait_for_sent(lambda s: ref(s) == second["id"] and s["content"].startswith("⏳"))
    stopping = asyncio.create_task(_stop_gracefully(bot, runtime, bound=20))
    told = await fake.wait_for_sent(lambda s: s["via"] == "edit" and s["id"] == place["id"])
    assert told["content"] == "⚠️ " + RESTARTING[0].upper() + RESTARTING[1:] + "."
    gate.set()
    assert await asyncio.wait_for(stopping, 20) is True
    assert FOOTER.search(fake.messages[next(s for s in fake.sent if ref(s) == first["id"])["id"]]["content"])  # as it ended


async def test_graceful_stop_finishes_the_running_job_and_keeps_the_waiting(fake: FakeDiscord, llava) -> None:
    """The waiting questions stay in the journal for the restart (and their notes say so)."""
    fake.add_user(CAROL_ID, "carol")
    bot, runtime = await llava()
    gate = hold_engine(runtime)
    msgs = []
    for n, user in enumerate((ALICE_ID, BOB_ID, CAROL_ID), 1):
        att = fake.add_attachment(f"{user}.jpg", jpeg_bytes())
        msgs.append(await fake.user_message(user, GENERAL_ID, f"<@{BOT_ID}> hi", attachments=[att], mentions_bot=True))
        await fake.wait_until(lambda n=n: runtime.queue.stats().depth + runtime.queue.stats().busy == n)
    stopping = asyncio.create_task(_stop_gracefully(bot, runtime, bound=20))
    for m in msgs[1:]:
        place = await fake.wait_for_sent(lambda s, m=m: ref(s) == m["id"] and s["content"].startswith("⏳"))
        told = await fake.wait_for_sent(lambda s, p=place: s["via"] == "edit" and s["id"] == p["id"])
        assert told["content"] == parked_line()
    assert not stopping.done()  # still waiting for the running job
    gate.set()
    assert await asyncio.wait_for(stopping, 20) is True
    answered = [{**s, "content": fake.messages[s["id"]]["content"]} for s in fake.sent if ref(s) == msgs[0]["id"]]  # as they ended
    assert len(answered) == 1 and FOOTER.search(answered[0]["content"])
    assert bot.is_closed()
    rows = sqlite3.connect(bot.journal.path).execute("SELECT payload FROM jobs").fetchall()
    assert sorted(json.loads(r[0])["user_id"] for r in rows) == [BOB_ID, CAROL_ID]


async def test_kill_leaves_the_job_in_the_journal(fake: FakeDiscord, llava, tmp_path) -> None:
    """What a kill -9 leaves behind: the accepted job is in the journal until its reply is sent."""
    bot, runtime = await llava()
    gate, _ = await question_in_the_engine(fake, runtime)
    rows = sqlite3.connect(tmp_path / "journal.sqlite3").execute("SELECT payload FROM jobs").fetchall()
    assert len(rows) == 1 and '"kind": "message"' in rows[0][0]
    gate.set()
    await fake.wait_for_final(lambda s: s["channel_id"] == GENERAL_ID)
    await fake.wait_until(lambda: bot.jobs_in_flight == 0)
    assert sqlite3.connect(tmp_path / "journal.sqlite3").execute("SELECT count(*) FROM jobs").fetchone()[0] == 0
