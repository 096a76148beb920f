"""Exactly one reply per question, with the defaults users get (answers stream in).

* the place-in-line note and the first streamed words are one message, however
  their requests interleave;
* a create whose request landed but whose answer was lost is retried under the
  same nonce: Discord hands back the message it made, nothing is posted twice;
* ``llava-bot run`` killed (-9) while a reply request has landed but its answer
  has not come back (a note, the first streamed words, the final text), then
  restarted: one final reply per question, no "⏳", no "▌", nothing lost, with
  Discord's nonce memory intact and after it has expired (the replay reads the
  channel and adopts what the earlier run posted).
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from bot.jobs.streaming import CURSOR
from bot.reply import BUSY_MARK
from bot.testing.fake_discord import ALICE_ID, BOB_ID, BOT_ID, GENERAL_ID, FakeDiscord
from tests.e2e.helpers import journal_rows, settled, slow_settings, start_bot, write_config
from tests.fakes.slow_engine import SlowEngine
from tests.helpers import jpeg_bytes

CREATE = r"/channels/\d+/messages$"
EDIT = r"/channels/\d+/messages/\d+$"
FOOTER_MARK = "-# ⏱ queue"


def replies_now(fake: FakeDiscord, question: dict) -> list[dict]:
    """The bot's messages that exist now and reply to ``question``, oldest first."""
    found = [
        m
        for m in fake.messages.values()
        if m["author"]["id"] == str(BOT_ID) and (m.get("message_reference") or {}).get("message_id") == str(question["id"])
    ]
    return sorted(found, key=lambda m: int(m["id"]))


def final(fake: FakeDiscord, question: dict) -> bool:
    got = replies_now(fake, question)
    return bool(got) and FOOTER_MARK in got[-1]["content"]


def assert_one_final_reply(fake: FakeDiscord, question: dict) -> None:
    got = replies_now(fake, question)
    assert len(got) == 1, [m["content"] for m in got]
    content = got[0]["content"]
    assert FOOTER_MARK in content and not content.startswith(BUSY_MARK) and CURSOR not in content, content


async def ask(fake: FakeDiscord, user: int = ALICE_ID, name: str = "a.jpg") -> dict:
    att = fake.add_attachment(name, jpeg_bytes())
    return await fake.user_message(user, GENERAL_ID, f"<@{BOT_ID}> describe it", attachments=[att], mentions_bot=True)


# -- in process: the race and the lost answer ----------------------------------------------


@pytest.mark.parametrize("nonces", ["honoured", "ignored"])
@pytest.mark.slow
async def test_the_note_and_the_first_streamed_words_are_one_message(fake: FakeDiscord, llava, nonces: str) -> None:
    """The note's create is slow to come back while the job starts and streams:
    the stream waits for that create and edits the note, it never posts beside it.
    Two guards, each enough alone: the reply's lock, and the part's nonce (a second
    create of part 0 gets the note back); "ignored" is a server without nonces."""
    fake.honour_nonces = nonces == "honoured"
    async with SlowEngine(tokens=6, delay_s=0.05) as server:
        bot, _ = await llava(**slow_settings(server), discord={"stream_edit_s": 0.5})
        server.hold()
        first = await ask(fake)
        await server.wait_holding(1)
        await fake.wait_until(lambda: replies_now(fake, first), what="the first answer streaming")
        slow_note = fake.hold_response_next("POST", CREATE, seconds=1.5)
        second = await ask(fake, BOB_ID, "b.jpg")
        await fake.wait_until(lambda: slow_note.held == 1, what="the note created, its answer held")
        assert replies_now(fake, second)[0]["content"].startswith(BUSY_MARK)
        server.release()  # the first answer ends, the second starts and streams at once
        await fake.wait_until(lambda: final(fake, first) and final(fake, second), timeout=20, what="both answered")
        await settled(fake, bot)
        assert_one_final_reply(fake, first)
        assert_one_final_reply(fake, second)


@pytest.mark.slow
async def test_a_burst_with_streaming_leaves_no_note_beside_an_answer(fake: FakeDiscord, llava) -> None:
    """Forty questions at once against a slow engine, streaming on: each ends as one final message."""
    async with SlowEngine(tokens=4, delay_s=0.01) as server:
        bot, _ = await llava(**slow_settings(server), queue={"per_user": 50, "per_user_per_minute": 0, "max_size": 64},
                    discord={"stream_edit_s": 0.5})
        questions = [await ask(fake, ALICE_ID, f"q{i}.jpg") for i in range(40)]
        await fake.wait_until(lambda: all(final(fake, q) for q in questions), timeout=60, what="every question answered")
        await settled(fake, bot)
        for q in questions:
            assert_one_final_reply(fake, q)


async def test_a_create_whose_answer_is_lost_is_not_posted_twice(fake: FakeDiscord, llava) -> None:
    """The reply's create lands but the connection drops before its answer: the retry
    carries the same nonce, and Discord answers it with the message already made."""
    bot, _ = await llava()
    fake.drop_response_next("POST", CREATE)
    question = await ask(fake)
    await fake.wait_until(lambda: final(fake, question), timeout=20, what="the answer")
    await settled(fake, bot)
    assert_one_final_reply(fake, question)
    assert len(fake.nonce_hits) == 1
    creates = [r for r in fake.requests if r.method == "POST" and r.path.endswith("/messages") and isinstance(r.json, dict)]
    nonces = [r.json.get("nonce") for r in creates if str((r.json.get("message_reference") or {}).get("message_id")) == str(question["id"])]
    assert len(nonces) == 2 and nonces[0] == nonces[1] and len(nonces[0]) <= 25


async def test_a_deleted_reply_is_posted_again_under_a_fresh_nonce(fake: FakeDiscord, llava) -> None:
    """Discord answers a create whose nonce named a deleted message with 404 10008: a new nonce."""
    async with SlowEngine(tokens=8, delay_s=0.1) as server:
        await llava(**slow_settings(server), discord={"stream_edit_s": 0.5})
        question = await ask(fake)
        await fake.wait_until(lambda: replies_now(fake, question), what="the answer streaming")
        await fake.user_delete(replies_now(fake, question)[0]["id"])  # a moderator deletes the partial answer
        await fake.wait_until(lambda: final(fake, question), timeout=20, what="the answer posted again")
        assert_one_final_reply(fake, question)


# -- a real process, kill -9 at a reply request, restart -----------------------------------------


@pytest.mark.parametrize("nonce_memory", ["kept", "expired"])
@pytest.mark.parametrize("moment", ["note", "first words", "final text", "second part"])
@pytest.mark.slow
async def test_kill_while_a_reply_request_is_unanswered_then_restart(
    fake: FakeDiscord, tmp_path: Path, tiny_pair, moment: str, nonce_memory: str
) -> None:
    journal = tmp_path / "journal.sqlite3"
    config = write_config(tmp_path / "bot.toml", fake, tiny_pair, journal)
    long_answer = moment == "second part"  # over 2,000 characters: two messages
    async with SlowEngine(tokens=420 if long_answer else 5, delay_s=0.002 if long_answer else 0.05) as server:
        text = config.read_text().replace("[generation]", "[queue]\nper_user_per_minute = 0\n[generation]")
        if long_answer:
            text = text.replace("max_tokens = 12", "max_tokens = 500\nmax_tokens_limit = 1024")
        # one streamed edit at most before the final text: the final text is the next PATCH
        text = text.replace("[discord]", "[discord]\nstream_edit_s = 30.0")
        config.write_text(text + f'\n[[engines]]\nkind = "openai"\nurl = "{server.url}"\nname = "slow"\n')
        proc = await start_bot(config, fake)
        output = ""
        try:
            if moment == "note":
                server.hold()
                first = await ask(fake)
                await server.wait_holding(1)
                await fake.wait_until(lambda: replies_now(fake, first), what="the first answer streaming")
                held = fake.hold_response_next("POST", CREATE)
                questions = [first, await ask(fake, BOB_ID, "b.jpg")]
            elif moment == "first words":
                held = fake.hold_response_next("POST", CREATE)
                questions = [await ask(fake)]
            elif moment == "second part":
                server.hold()
                questions = [await ask(fake)]
                await server.wait_holding(1)
                await fake.wait_until(lambda: replies_now(fake, questions[0]), what="the first words")
                held = fake.hold_response_next("POST", CREATE)  # the next create is the second part
                server.release()
            else:
                held = fake.hold_response_next("PATCH", EDIT)
                questions = [await ask(fake)]
            await fake.wait_until(lambda: held.held == 1, timeout=20, what=f"the {moment} request landed")
            await fake.wait_until(lambda: journal_rows(journal) == len(questions), what="the jobs journaled")
            proc.kill()
            await proc.wait()
            output += (await proc.stdout.read()).decode(errors="replace")
            fake.clear_failures()
            server.release()
            if nonce_memory == "expired":
                fake.nonce_window_s = 0.0  # the restart took longer than Discord remembers nonces
            proc = await start_bot(config, fake)
            await fake.wait_until(lambda: all(final(fake, q) for q in questions), timeout=60, what="every question answered")
            await fake.wait_until(lambda: journal_rows(journal) == 0, what="journal emptied")
            await settled(fake)
            for q in questions:
                if long_answer:
                    got = replies_now(fake, q)
                    assert len(got) == 2 and FOOTER_MARK in got[1]["content"] and FOOTER_MARK not in got[0]["content"]
                else:
                    assert_one_final_reply(fake, q)
            assert not any(
                m["author"]["id"] == str(BOT_ID) and (m["content"].startswith(BUSY_MARK) or m["content"].endswith(CURSOR))
                for m in fake.messages.values()
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)
            output += (await proc.stdout.read()).decode(errors="replace")
    assert "Traceback" not in output
    assert "to find replies made before the restart" in output


def no_note_or_cursor_left(fake: FakeDiscord) -> bool:
    return not any(
        m["author"]["id"] == str(BOT_ID) and (m["content"].startswith(BUSY_MARK) or m["content"].endswith(CURSOR))
        for m in fake.messages.values()
    )


@pytest.mark.slow
async def test_kill_while_a_reply_chain_is_read_then_restart(fake: FakeDiscord, tmp_path: Path, tiny_pair) -> None:
    """A follow-up question (a reply to the bot's answer) is journaled as received before the
    bot reads its reply chain; killed while that read is in flight, the restarted bot reads the
    message again from Discord and answers it once."""
    journal = tmp_path / "journal.sqlite3"
    config = write_config(tmp_path / "bot.toml", fake, tiny_pair, journal)
    proc = await start_bot(config, fake)
    output = ""
    try:
        first = await ask(fake)
        await fake.wait_until(lambda: final(fake, first), timeout=30, what="the first answer")
        answer = replies_now(fake, first)[-1]
        # the bot's answer comes resolved with the follow-up; the question it answers is fetched
        held = fake.hold_response_next("GET", rf"/channels/{GENERAL_ID}/messages/{first['id']}$")
        follow_up = await fake.user_message(
            ALICE_ID, GENERAL_ID, f"<@{BOT_ID}> and the colour?", reference_message_id=int(answer["id"]), mentions_bot=True
        )
        await fake.wait_until(lambda: held.held == 1, timeout=20, what="the reply chain read")
        assert journal_rows(journal) == 1  # journaled as received, before the read
        proc.kill()
        await proc.wait()
        output += (await proc.stdout.read()).decode(errors="replace")
        fake.clear_failures()
        proc = await start_bot(config, fake)
        await fake.wait_until(lambda: final(fake, follow_up), timeout=60, what="the follow-up answered")
        await fake.wait_until(lambda: journal_rows(journal) == 0, what="journal emptied")
        await settled(fake)
        assert_one_final_reply(fake, first)
        assert_one_final_reply(fake, follow_up)
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
        output += (await proc.stdout.read()).decode(errors="replace")
    assert "Traceback" not in output
    assert "received but not journaled as jobs before the restart" in output


def interaction_messages(fake: FakeDiscord, it) -> list[dict]:
    """The messages that answer an interaction now (its original response and follow-ups), oldest first."""
    found = [m for m in fake.messages.values() if str((m.get("interaction_metadata") or {}).get("id")) == str(it.id)]
    return sorted(found, key=lambda m: int(m["id"]))


@pytest.mark.parametrize("moment", ["final edit", "second part"])
@pytest.mark.slow
async def test_kill_at_a_slash_commands_reply_then_restart(fake: FakeDiscord, tmp_path: Path, tiny_pair, moment: str) -> None:
    """/ask killed while its final edit (PATCH @original) or its second part (a follow-up, which
    takes no nonce) has landed unanswered: the replay reads the channel, finds the responses by
    the interaction's id and answers nothing twice."""
    journal = tmp_path / "journal.sqlite3"
    config = write_config(tmp_path / "bot.toml", fake, tiny_pair, journal)
    long_answer = moment == "second part"
    async with SlowEngine(tokens=420 if long_answer else 5, delay_s=0.002 if long_answer else 0.05) as server:
        text = config.read_text().replace("[discord]", "[discord]\nstream_edit_s = 30.0")
        config.write_text(text + f'\n[[engines]]\nkind = "openai"\nurl = "{server.url}"\nname = "slow"\n')
        proc = await start_bot(config, fake, "--sync")
        await fake.wait_until(lambda: fake.commands, what="commands synced")
        output = ""
        try:
            server.hold()
            options = {"image": fake.add_attachment("s.jpg", jpeg_bytes()), "question": "what is it?"}
            if long_answer:
                options["max_tokens"] = 500
            it = await fake.slash_command(BOB_ID, GENERAL_ID, "ask", options)
            await server.wait_holding(1)
            await fake.wait_until(lambda: any(m["content"] for m in interaction_messages(fake, it)), what="the first words")
            if long_answer:
                held = fake.hold_response_next("POST", r"/webhooks/\d+/[^/]+$")
            else:
                held = fake.hold_response_next("PATCH", r"/messages/@original$")
            server.release()
            await fake.wait_until(lambda: held.held == 1, timeout=20, what=f"the {moment} landed")
            proc.kill()
            await proc.wait()
            output += (await proc.stdout.read()).decode(errors="replace")
            fake.clear_failures()
            proc = await start_bot(config, fake)
            await fake.wait_until(lambda: journal_rows(journal) == 0, timeout=60, what="journal emptied")
            await settled(fake)
            got = interaction_messages(fake, it)
            assert len(got) == (2 if long_answer else 1), [m["content"][:40] for m in got]
            assert FOOTER_MARK in got[-1]["content"] and CURSOR not in got[0]["content"]
            assert no_note_or_cursor_left(fake)
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)
            output += (await proc.stdout.read()).decode(errors="replace")
    assert "Traceback" not in output
    assert "was answered before the restart" in output
