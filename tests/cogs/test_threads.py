"""Conversation threads, the plain parts: names, the /ask response's head, and how the bot's
replies in a thread become the turns of the conversation."""

from __future__ import annotations

from types import SimpleNamespace

import discord

from bot.jobs.spec import ImageSource
from cogs.reading import Pictures, image_label
from cogs.threads import Threads, question_of_head, thread_head, thread_name, thread_permissions

FOOTER = "\n-# ⏱ queue 0.00 s · image 0.01 s · prompt 0.02 s · 9 tok @ 90.0 tok/s · total 0.10 s"


def replies(*contents: str) -> list[SimpleNamespace]:
    """The bot's replies to one question, newest first (as a thread's history reads them)."""
    return [SimpleNamespace(content=c) for c in reversed(contents)]


def test_thread_names_are_the_questions_first_line_within_discords_limit() -> None:
    assert thread_name("What breed?\nand its age", "cat.jpg") == "What breed?"
    assert thread_name("  \n", "cat.jpg") == "cat.jpg"
    long = thread_name("x" * 300, "cat.jpg")
    assert len(long) == 100 and long.endswith("…")


def test_the_head_of_an_ask_response_gives_its_question_back() -> None:
    for question in ("What is it?", "two\nlines", "> already quoted"):
        assert question_of_head(thread_head(question)) == question
    assert thread_head("a\nb") == "> a\n> b"


def test_thread_permissions_need_both_bits() -> None:
    assert thread_permissions(discord.Permissions(create_public_threads=True, send_messages_in_threads=True))
    assert not thread_permissions(discord.Permissions(create_public_threads=True))
    assert not thread_permissions(discord.Permissions(send_messages_in_threads=True))


def test_replies_become_turns_per_image_without_notes_or_refusals() -> None:
    one = replies("A cat." + FOOTER)
    assert Threads._turns("what?", one) == [("what?", "A cat.", None)]
    # two images answered: a labelled message starts each answer, a continuation joins it
    two = replies(
        image_label(1, 2, "a.png") + "\nA red square,",
        "and more." + FOOTER,
        image_label(2, 2, "b.png") + "\nA blue square." + FOOTER,
    )
    assert Threads._turns("which?", two) == [("which?", "A blue square.", 2), ("which?", "A red square,\nand more.", 1)]
    # a place-in-line note, a refusal, text still streaming
    assert Threads._turns("q", replies("⏳ #2 in line")) == []
    assert Threads._turns("q", replies("⚠️ That file is not an image.")) == []
    assert Threads._turns("q", replies("A half ▌")) == [("q", "A half", None)]


def test_each_picture_keeps_its_own_turns_and_the_last_depth_of_them() -> None:
    source = ImageSource("u", "a.png", 1, "image/png")
    topic = Pictures(found=[source, source])
    newest_first = [("q3", "both", None), ("q2", "blue", 2), ("q2", "red", 1), ("q1", "x", None)]
    assert Threads._histories(topic, newest_first, 6) == [
        [("q1", "x"), ("q2", "red"), ("q3", "both")],
        [("q1", "x"), ("q2", "blue"), ("q3", "both")],
    ]
    assert Threads._histories(topic, newest_first, 1) == [[("q3", "both")], [("q3", "both")]]
    assert Threads._histories(topic, newest_first, 0) == [[], []]
