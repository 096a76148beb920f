"""A question's life under floods, restarts and broken engines (issue 10), in process.

The real discord.py client against the local fake Discord; the engine is a
slow OpenAI-compatible test server (``SlowEngine``) so that timing-dependent
cases are deterministic: a test holds an answer in the middle, looks, then
releases it.  The kill -9 cases run ``llava-bot run`` as a process: see
``test_crash_replay.py``.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import sqlite3
import time
from pathlib import Path

import aiohttp
import pytest
from PIL import Image

from bot.cli import _stop_gracefully
from bot.jobs.journal import Journal
from bot.jobs.streaming import CURSOR
from bot.testing.fake_discord import ALICE_ID, BOB_ID, BOT_ID, CAPTIONS_ID, DM_CHANNEL_ID, GENERAL_ID, OWNER_ID, FakeDiscord
from tests.e2e.helpers import FOOTER, assert_no_pings, ref, settled, slow_settings
from tests.fakes.slow_engine import SlowEngine, not_http_server
from tests.helpers import jpeg_bytes

SLOW_FOOTER = "-# ⏱ queue"
GAVE_UP_LINE = "⚠️ I could not answer this one, sorry."


def answers_to(fake: FakeDiscord, message_id: int) -> list[dict]:
    """Final replies (new messages) to a message."""
    return [s for s in fake.sent if s["via"] == "channel" and ref(s) == str(message_id)]


def current(fake: FakeDiscord, message_id: int) -> str:
    return fake.messages[int(message_id)]["content"]


def texts(fake: FakeDiscord, message_id: int) -> list[str]:
    """What the replies to a message say now (a place-in-line note is edited into its answer)."""
    return [current(fake, s["id"]) for s in answers_to(fake, message_id)]


async def final_reply(fake: FakeDiscord, message_id: int, timeout: float = 15) -> str:
    """The first reply to a message that is not (or no longer) a "⏳" note."""

    def find() -> str | None:
        return next((t for t in texts(fake, message_id) if not t.startswith("⏳") and not t.endswith(CURSOR)), None)

    return await fake.wait_until(find, timeout, "a final reply")


def coloured(colour: tuple[int, int, int]) -> bytes:
    return jpeg_bytes(Image.new("RGB", (64, 48), colour))


def channel_of(data_uri: str) -> int:
    """Which of red (0), green (1), blue (2) an image sent to the engine mostly is."""
    data = base64.b64decode(data_uri.split(",", 1)[1])
    pixel = Image.open(io.BytesIO(data)).convert("RGB").resize((1, 1)).getpixel((0, 0))
    return max(range(3), key=lambda i: pixel[i])


def journal_rows(path: Path) -> list[tuple]:
    return sqlite3.connect(path).execute("SELECT id, grp, note_id, active, crashes FROM jobs ORDER BY id").fetchall()


async def ask(fake: FakeDiscord, user: int, *attachments: dict, text: str = "what is it?", channel: int = GENERAL_ID) -> dict:
    return await fake.user_message(user, channel, f"<@{BOT_ID}> {text}", attachments=list(attachments), mentions_bot=True)


# -- 1. a message's images are accepted together -------------------------------------------


async def test_every_image_of_a_message_is_journaled_before_any_is_answered(fake: FakeDiscord, llava, tmp_path) -> None:
    async with SlowEngine(tokens=3, delay_s=0.01) as server:
        bot, runtime = await llava(**slow_settings(server))
        server.hold()
        atts = [fake.add_attachment("image.png", coloured(c), content_type="image/png") for c in [(250, 0, 0), (0, 250, 0), (0, 0, 250)]]
        msg = await ask(fake, ALICE_ID, *atts)
        await server.wait_holding(1)
        rows = journal_rows(tmp_path / "journal.sqlite3")
        assert len(rows) == 3 and len({r[1] for r in rows}) == 1  # one group, written together
        server.release()
        await fake.wait_until(lambda: len(answers_to(fake, msg["id"])) == 3, what="three answers")
        await fake.wait_until(lambda: bot.jobs_in_flight == 0)
        assert [t.split("\n")[0] for t in texts(fake, msg["id"])] == [f"**Image {i} of 3** (image.png)" for i in (1, 2, 3)]
        assert [channel_of(body["messages"][-1]["content"][0]["image_url"]["url"]) for body in server.bodies] == [0, 1, 2]
        assert journal_rows(tmp_path / "journal.sqlite3") == []


# -- 3. limits before cost ---------------------------------------------------------------------


async def test_a_flood_from_one_member_is_refused_before_anything_is_downloaded(fake: FakeDiscord, llava) -> None:
    async with SlowEngine(tokens=2, delay_s=0.01) as server:
        bot, runtime = await llava(**slow_settings(server), queue={"per_user": 2, "per_user_per_minute": 0})
        server.hold()
        atts = [fake.add_attachment(f"p{i}.jpg", jpeg_bytes()) for i in range(30)]
        msgs = [await ask(fake, ALICE_ID, att) for att in atts]
        await fake.wait_until(lambda: sum(1 for s in fake.sent if "already have 2" in s["content"]) == 28, what="28 refusals")
        assert sum(len(fake.downloads_of(a)) for a in atts) == 2  # only the two accepted ones were fetched
        server.release()
        await fake.wait_until(lambda: bot.jobs_in_flight == 0 and server.completed == 2)
        for msg in msgs:
            assert len([s for s in fake.sent if ref(s) == str(msg["id"])]) == 1  # one reply each


# -- 5. captions cannot starve questions ---------------------------------------------------------


async def test_a_caption_flood_neither_blocks_a_question_nor_posts_refusals(fake: FakeDiscord, llava) -> None:
    async with SlowEngine(tokens=2, delay_s=0.01) as server:
        bot, runtime = await llava(
            **slow_settings(server),
            moderation={"caption_channels": [CAPTIONS_ID]},
            queue={"max_size": 4, "caption_max_size": 8, "per_user_per_minute": 0},
            discord={"max_images": 4},
        )
        server.hold()
        for i in range(15):  # 60 images
            atts = [fake.add_attachment(f"c{i}-{j}.jpg", jpeg_bytes()) for j in range(4)]
            await fake.user_message(BOB_ID, CAPTIONS_ID, "look", attachments=atts)
        await fake.wait_until(lambda: runtime.queue.stats().captions_waiting + runtime.queue.stats().busy >= 5, what="captions queued")
        question = await ask(fake, ALICE_ID, fake.add_attachment("q.jpg", jpeg_bytes()))
        server.release()
        reply = await final_reply(fake, question["id"], timeout=20)
        assert SLOW_FOOTER in reply
        await fake.wait_until(lambda: bot.jobs_in_flight == 0, timeout=30)
        in_captions = fake.created_in(CAPTIONS_ID)
        assert in_captions and all(SLOW_FOOTER in s["content"] for s in in_captions)  # captions only, no refusal lines
        assert len(in_captions) == 8  # two messages of 4 fit the lane's cap
        assert bot.outcomes["refused"] == 13  # the other 13 messages: logged only


# -- 6. a follow-up picks its image by position ----------------------------------------------------


async def test_a_follow_up_about_image_2_of_3_pasted_images_is_about_that_image_only(fake: FakeDiscord, llava) -> None:
    async with SlowEngine(tokens=3, delay_s=0.0) as server:
        bot, runtime = await llava(**slow_settings(server), queue={"per_user_per_minute": 0})
        atts = [fake.add_attachment("image.png", coloured(c), content_type="image/png") for c in [(250, 0, 0), (0, 250, 0), (0, 0, 250)]]
        msg = await ask(fake, ALICE_ID, *atts)
        await fake.wait_until(lambda: [SLOW_FOOTER in t for t in texts(fake, msg["id"])] == [True] * 3)
        second = answers_to(fake, msg["id"])[1]
        assert current(fake, second["id"]).startswith("**Image 2 of 3**")
        follow = await fake.user_message(ALICE_ID, GENERAL_ID, "and what colour is it?", reference_message_id=second["id"])
        await fake.wait_until(lambda: len(answers_to(fake, follow["id"])) >= 1)
        await settled(fake, bot)
        assert len(answers_to(fake, follow["id"])) == 1  # one answer, not three
        body = server.bodies[-1]
        images = [p for m in body["messages"] if isinstance(m["content"], list) for p in m["content"] if p["type"] == "image_url"]
        assert len(images) == 1 and channel_of(images[0]["image_url"]["url"]) == 1


# -- 7. engines that are wrong, down or answer garbage ------------------------------------------------


async def test_a_wrong_engine_port_neither_stops_start_up_nor_loses_questions(fake: FakeDiscord, llava) -> None:
    async with not_http_server() as wrong, SlowEngine(tokens=2, delay_s=0.0) as good:
        bot, runtime = await llava(**slow_settings(wrong, good), queue={"per_user_per_minute": 0})
        msgs = [await ask(fake, user, fake.add_attachment("a.jpg", jpeg_bytes())) for user in (ALICE_ID, BOB_ID, ALICE_ID)]
        for msg in msgs:
            reply = await final_reply(fake, msg["id"], timeout=20)
            assert reply.startswith("word1") and SLOW_FOOTER in reply
        assert "engine-0" in runtime.queue.down and good.completed == 3


async def test_an_engine_that_answers_garbage_is_treated_as_down(fake: FakeDiscord, llava) -> None:
    async with SlowEngine(mode="garbage") as bad, SlowEngine(tokens=2, delay_s=0.0) as good:
        bot, runtime = await llava(**slow_settings(bad, good), queue={"per_user_per_minute": 0})
        for user in (ALICE_ID, BOB_ID):
            msg = await ask(fake, user, fake.add_attachment("a.jpg", jpeg_bytes()))
            reply = await final_reply(fake, msg["id"], timeout=20)
            assert SLOW_FOOTER in reply
        assert "engine-0" in runtime.queue.down


# -- 8. delivery -----------------------------------------------------------------------------------------


def fail_sends(bot, times: int) -> list[int]:
    """The next ``times`` message sends die below discord.py's HTTP layer (a reset connection)."""
    original = bot.http.request
    failed = [0]

    async def request(route, **kw):
        if route.method == "POST" and route.path.endswith("/messages") and failed[0] < times:
            failed[0] += 1
            raise aiohttp.ServerDisconnectedError("connection reset by the test")
        return await original(route, **kw)

    bot.http.request = request
    return failed


async def test_a_network_error_while_replying_is_retried_then_the_answer_arrives_once(fake: FakeDiscord, llava, tmp_path) -> None:
    async with SlowEngine(tokens=2, delay_s=0.0) as server:
        bot, runtime = await llava(**slow_settings(server))
        failed = fail_sends(bot, 2)
        msg = await ask(fake, ALICE_ID, fake.add_attachment("a.jpg", jpeg_bytes()))
        reply = await final_reply(fake, msg["id"])
        await fake.wait_until(lambda: bot.jobs_in_flight == 0)
        assert failed[0] == 2 and SLOW_FOOTER in reply
        assert len(answers_to(fake, msg["id"])) == 1
        assert journal_rows(tmp_path / "journal.sqlite3") == []


@pytest.mark.slow
async def test_a_reply_that_never_gets_through_ends_the_job_with_a_log_line(fake: FakeDiscord, llava, tmp_path, caplog) -> None:
    async with SlowEngine(tokens=2, delay_s=0.0) as server:
        bot, runtime = await llava(**slow_settings(server))
        fail_sends(bot, 100)
        with caplog.at_level(logging.WARNING):
            await ask(fake, ALICE_ID, fake.add_attachment("a.jpg", jpeg_bytes()))
            await fake.wait_until(lambda: bot.outcomes["undeliverable"] == 1, timeout=20)
        await fake.wait_until(lambda: bot.jobs_in_flight == 0)
        assert "could not deliver a reply after 4 attempts" in caplog.text
        assert journal_rows(tmp_path / "journal.sqlite3") == []


@pytest.mark.slow
async def test_an_interaction_that_expired_while_waiting_is_answered_in_the_channel(fake: FakeDiscord, llava, monkeypatch) -> None:
    import bot.jobs.delivery

    async with SlowEngine(tokens=2, delay_s=0.0) as server:
        bot_, runtime = await llava(**slow_settings(server))
        server.hold()
        monkeypatch.setattr(bot.jobs.delivery, "INTERACTION_TOKEN_LIFE_S", 1.0)
        await fake.slash_command(BOB_ID, GENERAL_ID, "ask", {"image": fake.add_attachment("b.jpg", jpeg_bytes()), "question": "why?"})
        await server.wait_holding(1)
        await asyncio.sleep(1.1)  # the token is now "too old"
        server.release()
        late = await fake.wait_for_final(lambda s: s["via"] == "channel" and s["channel_id"] == GENERAL_ID, timeout=15)
        assert late["content"].startswith(f"Answer to <@{BOB_ID}>'s question (b.jpg), sorry for the delay:")
        assert SLOW_FOOTER in late["content"]
        assert not [s for s in fake.sent if s["via"] in ("followup", "edit") and SLOW_FOOTER in s["content"]]
        assert_no_pings(late)


# -- 9, 10. replay: poison jobs, stale rows, old notes ---------------------------------------------------------


def spec_json(fake: FakeDiscord, message: dict, att: dict, **extra) -> dict:
    from bot.jobs.spec import ImageSource, JobSpec

    source = ImageSource(att["url"], att["filename"], att["size"], att["content_type"])
    spec = JobSpec(kind="message", channel_id=GENERAL_ID, message_id=int(message["id"]), source=source, question="what?", user_id=ALICE_ID, **extra)
    return spec.to_json()


def old_message(fake: FakeDiscord, content: str, author: int = ALICE_ID, **kw) -> dict:
    """A message posted while the bot was down (stored by the fake, never dispatched)."""
    return fake._make_message(author_id=author, channel_id=GENERAL_ID, content=content, **kw)


async def crash_with(path: Path, payloads: list[dict], crashes: int, note_id: int | None = None) -> None:
    """Leave rows as ``crashes`` processes that died while working on them would."""
    journal = Journal(path)
    await journal.open()
    ids = await journal.add_group(payloads)
    for entry in ids:
        await journal.set_note(entry, note_id)
    for _ in range(crashes):
        for entry in ids:
            await journal.mark_active(entry)
        await journal.close()  # no park(): like a kill
        journal = Journal(path)
        await journal.open()
    await journal.close()


async def test_a_job_in_flight_during_two_crashes_gets_one_line_instead_of_a_third_try(fake: FakeDiscord, llava, tmp_path, caplog) -> None:
    att = fake.add_attachment("poison.jpg", jpeg_bytes())
    poison, fine, stale = (old_message(fake, f"<@{BOT_ID}> question {i}") for i in range(3))
    path = tmp_path / "journal.sqlite3"
    await crash_with(path, [spec_json(fake, poison, att)], crashes=2)
    await crash_with(path, [spec_json(fake, fine, att)], crashes=1)
    await crash_with(path, [spec_json(fake, stale, att, created=time.time() - 25 * 3600)], crashes=0)
    async with SlowEngine(tokens=2, delay_s=0.0) as server:
        with caplog.at_level(logging.ERROR):
            bot, runtime = await llava(**slow_settings(server))
            await fake.wait_until(lambda: all(answers_to(fake, m["id"]) for m in (poison, fine, stale)), timeout=15)
        await fake.wait_until(lambda: bot.jobs_in_flight == 0)
        assert texts(fake, poison["id"]) == [GAVE_UP_LINE]
        assert texts(fake, stale["id"]) == [GAVE_UP_LINE]
        await fake.wait_until(lambda: SLOW_FOOTER in texts(fake, fine["id"])[0])  # one crash: replayed
        assert server.requests == 1
        assert "in flight during 2 crash(es)" in caplog.text and "25.0 h old" in caplog.text
        assert journal_rows(path) == []


async def test_a_replayed_job_turns_its_old_note_into_the_answer(fake: FakeDiscord, llava, tmp_path) -> None:
    msg = old_message(fake, f"<@{BOT_ID}> an old question")
    # the note the previous process posted: a message by the bot replying to the question
    note = old_message(fake, "⏳ #3 in line", author=BOT_ID, reference={"message_id": msg["id"]})
    await crash_with(tmp_path / "journal.sqlite3", [spec_json(fake, msg, fake.add_attachment("a.jpg", jpeg_bytes()))], 0, int(note["id"]))
    async with SlowEngine(tokens=2, delay_s=0.0) as server:
        bot, runtime = await llava(**slow_settings(server))
        await fake.wait_until(lambda: SLOW_FOOTER in current(fake, int(note["id"])), timeout=15)
        await fake.wait_until(lambda: bot.jobs_in_flight == 0)
        assert answers_to(fake, msg["id"]) == []  # no second message: the note became the answer


# -- 11. shutdown within its bound ----------------------------------------------------------------------------------


@pytest.mark.slow
async def test_shutdown_stops_a_long_answer_in_time_and_answers_it_after_the_restart(fake: FakeDiscord, llava, tmp_path) -> None:
    async with SlowEngine(tokens=400, delay_s=0.05) as server:  # a 20-second answer
        bot, runtime = await llava(**slow_settings(server), generation={"max_tokens": 400, "max_tokens_limit": 400})
        running = await ask(fake, ALICE_ID, fake.add_attachment("a.jpg", jpeg_bytes()))
        await server.wait_for(lambda s: s.requests == 1)
        waiting = await ask(fake, BOB_ID, fake.add_attachment("b.jpg", jpeg_bytes()))
        note = await fake.wait_for_sent(lambda s: ref(s) == str(waiting["id"]) and s["content"] == "⏳ #1 in line")
        started = time.monotonic()
        clean = await _stop_gracefully(bot, runtime, 2.0)
        took = time.monotonic() - started
        assert clean and took < 4.0, took  # bounded: not the 20 s the answer would take
        rows = journal_rows(tmp_path / "journal.sqlite3")
        assert len(rows) == 2 and all(r[3] == 0 for r in rows)  # parked, not counted as crashes
        assert current(fake, note["id"]).startswith("⏳ The bot is restarting")
        assert texts(fake, running["id"])[0].startswith("⏳ The bot is restarting")
        server.tokens = 2
        bot2, _ = await llava(**slow_settings(server))
        await fake.wait_until(lambda: SLOW_FOOTER in current(fake, note["id"]), timeout=15)
        await fake.wait_until(lambda: bot2.jobs_in_flight == 0 and journal_rows(tmp_path / "journal.sqlite3") == [])
        for msg in (running, waiting):
            (only,) = [s for s in fake.sent if s["via"] == "channel" and ref(s) == str(msg["id"])]
            assert SLOW_FOOTER in current(fake, only["id"])


# -- 12. bounded tables, DMs, /status -----------------------------------------------------------------------------------


async def test_dms_obey_allowed_roles(fake: FakeDiscord, llava) -> None:
    from bot.testing.fake_discord import MOD_ROLE_ID

    async with SlowEngine(tokens=2, delay_s=0.0) as server:
        bot, runtime = await llava(**slow_settings(server), discord={"allowed_roles": [MOD_ROLE_ID]})
        bob_dm = fake.add_dm_channel(BOB_ID)
        refused = await fake.user_message(BOB_ID, int(bob_dm["id"]), "hi", attachments=[fake.add_attachment("a.jpg", jpeg_bytes())])
        assert await final_reply(fake, refused["id"]) == "⚠️ You need one of the allowed roles to ask me."
        allowed = await fake.user_message(ALICE_ID, DM_CHANNEL_ID, "hi", attachments=[fake.add_attachment("a.jpg", jpeg_bytes())])
        assert SLOW_FOOTER in await final_reply(fake, allowed["id"])  # Alice has the role in the server


async def test_status_shows_engine_urls_to_admins_only(fake: FakeDiscord, llava) -> None:
    async with SlowEngine() as server:
        secret_url = server.url.replace("http://", "http://user:hunter2@")
        bot, runtime = await llava(**slow_settings(secret_url))
        member = await fake.slash_command(BOB_ID, GENERAL_ID, "status")
        shown = await fake.wait_for_callback(lambda c: c["interaction_id"] == member.id)
        text = shown["data"]["content"]
        assert "engine-0" in text and "127.0.0.1" not in text and "hunter2" not in text
        admin = await fake.slash_command(OWNER_ID, GENERAL_ID, "status")
        shown = await fake.wait_for_callback(lambda c: c["interaction_id"] == admin.id)
        assert f"127.0.0.1:{server.port}" in shown["data"]["content"] and "hunter2" not in shown["data"]["content"]
        assert shown["data"]["flags"] & 64  # ephemeral


async def test_parallel_slots_answer_several_members_each_once(fake: FakeDiscord, llava) -> None:
    """model.parallel = 4: the queue runs 4 consumers on the one engine, whose one
    decode thread batches their answers; every question still gets exactly one reply."""
    bot, runtime = await llava(
        model={"parallel": 4}, generation={"max_tokens": 48, "max_tokens_limit": 64}, queue={"per_user": 4, "per_user_per_minute": 0}
    )
    assert runtime.engine.slots == 4 and len(runtime.queue._consumers) == 4
    asked = []
    for i, user in enumerate([ALICE_ID, BOB_ID, OWNER_ID] * 2):
        att = fake.add_attachment(f"{i}.jpg", coloured((40 * i, 200 - 30 * i, 90)))
        asked.append(await fake.user_message(user, GENERAL_ID, f"<@{BOT_ID}> what is this?", attachments=[att], mentions_bot=True))
    for msg in asked:
        assert FOOTER.search(await final_reply(fake, msg["id"]))
    await settled(fake, bot)
    for msg in asked:
        assert len(texts(fake, msg["id"])) == 1  # one reply each (a place-in-line note became the answer)
    assert runtime.queue.stats().served == 6
