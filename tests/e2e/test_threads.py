"""Conversations in threads (issue 24), end to end: the real discord.py client, the real queue and
real Pillow against the fake Discord, with the colour engine (its answer names the picture's
colour) so that which picture a follow-up is about shows in the answer.  Streaming is on, as
users get it."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.config import load_settings
from bot.jobs.journal import Journal
from bot.jobs.spec import ImageSource, JobSpec
from bot.runtime import Runtime
from bot.testing.fake_discord import ALICE_ID, BOB_ID, BOT_ID, BOT_ROLE_ID, GENERAL_ID, GUILD_ID, FakeDiscord, Perm
from bot.testing.fake_discord.ids import FLAG_HAS_THREAD
from bot.testing.harness import running_bot
from tests.e2e.helpers import FOOTER, assert_no_pings, ref, settled
from tests.fakes.colour_engine import PALETTE, ColourEngine, dominant_colour

NO_THREADS_ID = 2101  # a channel where the bot may not start threads


def solid(colour: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), PALETTE[colour]).save(buf, "PNG")
    return buf.getvalue()


def said(colour: str) -> str:
    """What the colour engine answers about a picture of ``colour``."""
    return f"A {colour} square on a plain background."


def text_of(record: dict) -> str:
    """A final answer without its footer."""
    return record["content"].split("\n-# ")[0]


@contextlib.asynccontextmanager
async def colour_bot(fake: FakeDiscord, tiny_pair, state: Path, engine: ColourEngine, **overrides: Any) -> AsyncIterator[Any]:
    settings = load_settings(overrides={"generation": {"max_tokens": 16, "max_tokens_limit": 64}, **overrides})
    runtime = Runtime(settings, engine=engine)
    await runtime.start()
    try:
        async with running_bot(fake, tiny_pair, state, runtime=runtime, **overrides) as (bot, _):
            yield bot
    finally:
        await runtime.close()


@pytest.fixture
async def conversing(fake: FakeDiscord, tiny_pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    async with contextlib.AsyncExitStack() as stack:

        async def start(engine: ColourEngine | None = None, **overrides: Any) -> tuple[Any, ColourEngine]:
            engine = engine or ColourEngine()
            bot = await stack.enter_async_context(colour_bot(fake, tiny_pair, tmp_path, engine, **overrides))
            return bot, engine

        yield start


async def answer_in(fake: FakeDiscord, thread_id: int, to: dict | None = None, *, start: int = 0) -> dict:
    """The bot's final answer in a thread: to the message ``to``, else the thread's first (no reply)."""
    wanted = None if to is None else to["id"]
    return await fake.wait_for_final(lambda s: s["channel_id"] == thread_id and ref(s) == wanted, timeout=20, start=start)


async def ask_in_thread(fake: FakeDiscord, question: str, colour: str = "red", channel: int = GENERAL_ID):
    picture = fake.add_attachment(f"{colour}.png", solid(colour), channel_id=channel)
    return await fake.slash_command(ALICE_ID, channel, "ask", {"image": picture, "question": question, "thread": True})


async def test_a_conversation_in_a_thread_from_ask(fake: FakeDiscord, conversing) -> None:
    bot, engine = await conversing()
    it = await ask_in_thread(fake, "What colour is it?")

    # the response is the question with its picture, and a thread is started from it
    first = await fake.wait_for_final(lambda s: fake.is_thread(s["channel_id"]), timeout=20)
    thread_id = first["channel_id"]
    thread = fake.channels[thread_id]
    assert thread_id == it.original_message_id  # started from the response (same id)
    assert (thread["owner_id"], thread["parent_id"], thread["name"]) == (str(BOT_ID), str(GENERAL_ID), "What colour is it?")
    assert thread["thread_metadata"]["auto_archive_duration"] == 60 and not thread["thread_metadata"]["archived"]
    head = fake.messages[thread_id]
    assert head["content"] == "> What colour is it?" and [a["filename"] for a in head["attachments"]] == ["red.png"]
    # the answer is in the thread, a new message (the question is in the channel), streamed, with its footer
    assert text_of(first) == said("red") and FOOTER.search(first["content"]) and first["message_reference"] is None
    assert_no_pings(first)
    assert [s["id"] for s in fake.created_in(thread_id)] == [first["id"]]

    # three plain messages of the asker: each a follow-up about the picture, with the turns before it
    turns = [("What colour is it?", said("red"))]
    for question in ("Is it bright?", "Which shape is it?", "Anything else in it?"):
        start = len(fake.sent)
        asked = await fake.user_message(ALICE_ID, thread_id, question)
        reply = await answer_in(fake, thread_id, asked, start=start)
        assert text_of(reply) == said("red") and FOOTER.search(reply["content"])
        request = engine.requests[-1]
        assert question in request.question and request.images == engine.requests[0].images
        assert request.history == tuple(turns)
        turns.append((question, said("red")))
    assert len(engine.requests) == 4

    # another member's plain message in the thread is no question
    await fake.user_message(BOB_ID, thread_id, "nice picture")
    await settled(fake, bot)
    assert len(engine.requests) == 4 and len(fake.created_in(thread_id)) == 4

    # a new picture in the thread starts a new topic: the engine sees it, the history starts again
    blue = fake.add_attachment("blue.png", solid("blue"), channel_id=thread_id)
    start = len(fake.sent)
    new = await fake.user_message(ALICE_ID, thread_id, "And this one?", attachments=[blue])
    reply = await answer_in(fake, thread_id, new, start=start)
    assert text_of(reply) == said("blue")
    assert dominant_colour(engine.requests[-1].images[0]) == "blue" and engine.requests[-1].history == ()
    start = len(fake.sent)
    later = await fake.user_message(ALICE_ID, thread_id, "Is it dark?")
    reply = await answer_in(fake, thread_id, later, start=start)
    assert text_of(reply) == said("blue")
    assert engine.requests[-1].images == engine.requests[-2].images
    assert engine.requests[-1].history == (("And this one?", said("blue")),)

    # nothing of the conversation went to the channel itself
    await settled(fake, bot)
    assert fake.created_in(GENERAL_ID) == []
    assert bot.outcomes["answered"] == 6


async def test_a_mention_starts_a_thread_with_discord_threads_on(fake: FakeDiscord, conversing) -> None:
    bot, engine = await conversing(discord={"threads": True})
    red = fake.add_attachment("red.png", solid("red"))
    asked = await fake.user_message(ALICE_ID, GENERAL_ID, "what colour is it?", attachments=[red], mentions_bot=True)
    thread_id = int(asked["id"])  # a thread started from the question has its id

    first = await answer_in(fake, thread_id)
    assert text_of(first) == said("red") and first["message_reference"] is None
    thread = fake.channels[thread_id]
    assert (thread["owner_id"], thread["parent_id"], thread["name"]) == (str(BOT_ID), str(GENERAL_ID), "what colour is it?")
    assert fake.messages[thread_id]["flags"] & FLAG_HAS_THREAD

    start = len(fake.sent)
    follow = await fake.user_message(ALICE_ID, thread_id, "how big is it?")
    reply = await answer_in(fake, thread_id, follow, start=start)
    assert text_of(reply) == said("red")
    assert engine.requests[-1].images == engine.requests[0].images
    assert engine.requests[-1].history == (("what colour is it?", said("red")),)

    # another member is answered when they mention the bot, about the thread's picture
    start = len(fake.sent)
    other = await fake.user_message(BOB_ID, thread_id, "is it really red?", mentions_bot=True)
    reply = await answer_in(fake, thread_id, other, start=start)
    assert text_of(reply) == said("red") and engine.requests[-1].images == engine.requests[0].images

    await settled(fake, bot)
    assert fake.created_in(GENERAL_ID) == [] and len(fake.threads) == 1


async def test_follow_ups_about_several_pictures_keep_each_pictures_turns(fake: FakeDiscord, conversing) -> None:
    bot, engine = await conversing(discord={"threads": True})
    pictures = [fake.add_attachment("red.png", solid("red")), fake.add_attachment("blue.png", solid("blue"))]
    asked = await fake.user_message(ALICE_ID, GENERAL_ID, "which colour?", attachments=pictures, mentions_bot=True)
    thread_id = int(asked["id"])
    await fake.wait_until(lambda: len(engine.requests) == 2 and bot.jobs_in_flight == 0, timeout=20)
    labelled = [text_of(s) for s in fake.created_in(thread_id)]
    assert len(labelled) == 2 and all(text.startswith("**Image ") for text in labelled)

    start = len(fake.sent)
    follow = await fake.user_message(ALICE_ID, thread_id, "and the edges?")
    await fake.wait_until(lambda: len(engine.requests) == 4 and bot.jobs_in_flight == 0, timeout=20)
    replies = [s for s in fake.sent[start:] if s["channel_id"] == thread_id and ref(s) == follow["id"]]
    assert replies
    by_colour = {dominant_colour(r.images[0]): r.history for r in engine.requests[2:]}
    assert by_colour == {
        "red": (("which colour?", said("red")),),
        "blue": (("which colour?", said("blue")),),
    }


async def test_a_thread_the_bot_did_not_start_is_ignored_unless_it_is_mentioned(fake: FakeDiscord, conversing) -> None:
    bot, engine = await conversing(discord={"threads": True})
    red = fake.add_attachment("red.png", solid("red"))
    posted = await fake.user_message(BOB_ID, GENERAL_ID, "my picture", attachments=[red])
    thread = await fake.user_start_thread(BOB_ID, GENERAL_ID, "bob's thread", int(posted["id"]))
    thread_id = int(thread["id"])
    await fake.user_message(BOB_ID, thread_id, "what do you all think?")
    await fake.user_message(ALICE_ID, thread_id, "looks red to me")
    await settled(fake, bot)
    assert engine.requests == [] and fake.sent == []

    # a mention there is answered, in place (a thread is not started inside a thread)
    blue = fake.add_attachment("blue.png", solid("blue"), channel_id=thread_id)
    asked = await fake.user_message(BOB_ID, thread_id, "what colour?", attachments=[blue], mentions_bot=True)
    reply = await answer_in(fake, thread_id, asked)
    assert text_of(reply) == said("blue") and len(fake.threads) == 1
    # and the asker's plain follow-up there is still not a question: the thread is not the bot's
    await fake.user_message(BOB_ID, thread_id, "and now?")
    await settled(fake, bot)
    assert len(engine.requests) == 1
    # /ask thread:true inside a thread: answered in the response (no thread in a thread)
    await ask_in_thread(fake, "What colour is it?", channel=thread_id)
    response = await fake.wait_for_final(lambda s: s.get("original"), timeout=20)
    assert text_of(response) == said("red") and response["channel_id"] == thread_id and len(fake.threads) == 1


async def test_no_thread_without_the_permissions_answers_in_place(fake: FakeDiscord, conversing, caplog) -> None:
    deny = str(Perm.CREATE_PUBLIC_THREADS)
    fake.add_text_channel(NO_THREADS_ID, "no-threads", overwrites=[{"id": str(BOT_ROLE_ID), "type": 0, "allow": "0", "deny": deny}])
    with caplog.at_level(logging.INFO):
        bot, engine = await conversing(discord={"threads": True})
        await ask_in_thread(fake, "What colour is it?", channel=NO_THREADS_ID)
        response = await fake.wait_for_final(lambda s: s.get("original"), timeout=20)
        assert text_of(response) == said("red") and response["channel_id"] == NO_THREADS_ID
        red = fake.add_attachment("red.png", solid("red"), channel_id=NO_THREADS_ID)
        asked = await fake.user_message(ALICE_ID, NO_THREADS_ID, "and this?", attachments=[red], mentions_bot=True)
        reply = await fake.wait_for_final(lambda s: ref(s) == asked["id"], timeout=20)
        assert text_of(reply) == said("red") and reply["channel_id"] == NO_THREADS_ID
        await settled(fake, bot)
    assert fake.threads == [] and fake.requests_to("POST", r"/threads$") == []
    assert caplog.text.count("lacks Create Public Threads or Send Messages in Threads") == 2


async def test_the_bot_knows_its_threads_after_a_restart(fake: FakeDiscord, tiny_pair, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    engine = ColourEngine()
    async with colour_bot(fake, tiny_pair, tmp_path, engine):
        await ask_in_thread(fake, "What colour is it?")
        first = await fake.wait_for_final(lambda s: fake.is_thread(s["channel_id"]), timeout=20)
    thread_id = first["channel_id"]
    async with colour_bot(fake, tiny_pair, tmp_path, engine) as bot:  # nothing kept but what Discord holds
        assert bot.get_guild(GUILD_ID).get_thread(thread_id) is not None  # an active thread comes with the guild
        start = len(fake.sent)
        follow = await fake.user_message(ALICE_ID, thread_id, "Is it bright?")
        reply = await answer_in(fake, thread_id, follow, start=start)
        assert text_of(reply) == said("red")
        assert engine.requests[-1].history == (("What colour is it?", said("red")),)
        assert engine.requests[-1].images == engine.requests[0].images
        # archived by Discord's rules: the asker's message opens it again, and it is still a follow-up
        await fake.archive_thread(thread_id)
        start = len(fake.sent)
        again = await fake.user_message(ALICE_ID, thread_id, "Still there?")
        reply = await answer_in(fake, thread_id, again, start=start)
        assert text_of(reply) == said("red") and len(engine.requests[-1].history) == 2
        await settled(fake, bot)


async def test_a_thread_answer_cut_short_by_a_crash_is_finished_not_posted_again(fake: FakeDiscord, conversing, tmp_path: Path) -> None:
    # what a killed process left: the thread on the question, part of the answer streamed into it,
    # its job journaled (the partial message's id was not), and Discord no longer knows the nonce
    red = fake.add_attachment("red.png", solid("red"))
    question = fake._make_message(author_id=ALICE_ID, channel_id=GENERAL_ID, content=f"<@{BOT_ID}> what colour?", attachments=[red])
    thread_id = int(question["id"])
    fake.add_thread(GENERAL_ID, "what colour?", thread_id)
    partial = fake._make_message(author_id=BOT_ID, channel_id=thread_id, content="A red ▌")
    source = ImageSource(red["url"], red["filename"], red["size"], red["content_type"])
    spec = JobSpec(kind="message", channel_id=thread_id, message_id=thread_id, source=source, question="what colour?", user_id=ALICE_ID)
    journal = Journal(tmp_path / "journal.sqlite3")
    await journal.open()
    await journal.add_group([spec.to_json()])
    await journal.close()
    fake.nonce_window_s = 0.0

    bot, engine = await conversing(discord={"threads": True})
    await fake.wait_until(lambda: FOOTER.search(fake.messages[int(partial["id"])]["content"]), timeout=20, what="the answer")
    await settled(fake, bot)
    assert text_of({"content": fake.messages[int(partial["id"])]["content"]}) == said("red")
    mine = [m for m in fake.thread_messages(thread_id) if m["author"]["id"] == str(BOT_ID) and m["type"] == 0]
    assert [m["id"] for m in mine] == [partial["id"]]  # the partial answer became the answer: no second one
    assert len(engine.requests) == 1
