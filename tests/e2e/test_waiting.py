"""Waiting you can see and stop (issue 24), end to end: the real discord.py client and the
real queue against the fake Discord, answering through an OpenAI-compatible test engine of
known pace (tests/fakes/slow_engine.py).  Answers stream in, as users get them."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from bot.jobs.cancel import PREFIX
from bot.testing.fake_discord import ALICE_ID, BOB_ID, BOT_ID, GENERAL_ID, FakeDiscord
from bot.testing.fake_discord.ids import FLAG_EPHEMERAL
from tests.e2e.helpers import FOOTER, settled, slow_settings
from tests.fakes.slow_engine import SlowEngine
from tests.helpers import jpeg_bytes

CAROL_ID, DAVE_ID, ERIN_ID = 4, 6, 7
NOTE = re.compile(r"^⏳ #(\d+) in line(?:, about (\d+) (s|min))?$")


def people(fake: FakeDiscord) -> None:
    for uid, name in ((CAROL_ID, "carol"), (DAVE_ID, "dave"), (ERIN_ID, "erin")):
        fake.add_user(uid, name)


async def ask(fake: FakeDiscord, user: int, text: str = "what is it?") -> dict:
    att = fake.add_attachment("a.jpg", jpeg_bytes())
    return await fake.user_message(user, GENERAL_ID, f"<@{BOT_ID}> {text}", attachments=[att], mentions_bot=True)


def reply_to(fake: FakeDiscord, message: dict) -> dict | None:
    """The bot's reply to a message as it is now (its first part)."""
    return next(
        (m for m in fake.messages.values() if (m.get("message_reference") or {}).get("message_id") == str(message["id"])),
        None,
    )


def cancel_id(fake: FakeDiscord, message_id: Any) -> str | None:
    return next((b["custom_id"] for b in fake.buttons_of(message_id) if str(b.get("custom_id", "")).startswith(PREFIX)), None)


async def final_text(fake: FakeDiscord, message: dict, timeout: float = 30) -> str:
    def final() -> str | None:
        reply = reply_to(fake, message)
        content = reply["content"] if reply else ""
        return content if content and ("\n-# ⏱" in content or content.startswith(("Cancelled", "⚠️"))) else None

    return await fake.wait_until(final, timeout, "a final reply")


def ephemeral(fake: FakeDiscord, it) -> list[str]:
    return [c["data"].get("content", "") for c in fake.callbacks if c["interaction_id"] == it.id and c["data"].get("flags", 0) & FLAG_EPHEMERAL]


async def test_the_note_says_about_how_long_and_keeps_up(fake: FakeDiscord, llava) -> None:
    people(fake)
    async with SlowEngine(tokens=10, delay_s=0.2) as server:  # about 2 s an answer
        bot, runtime = await llava(**slow_settings(server), queue={"per_user_per_minute": 0})
        first = await ask(fake, ALICE_ID)  # measures the engine's pace
        await final_text(fake, first)
        assert runtime.queue.service_s

        burst = [await ask(fake, user) for user in (ALICE_ID, BOB_ID, CAROL_ID, DAVE_ID)]
        seen: dict[int, list[tuple[float, str]]] = {i: [] for i in range(4)}
        started: dict[int, float] = {}
        deadline = time.monotonic() + 40
        while len(started) < 4 and time.monotonic() < deadline:
            for i, message in enumerate(burst):
                reply = reply_to(fake, message)
                content = reply["content"] if reply else ""
                if content.startswith("⏳") and (not seen[i] or seen[i][-1][1] != content):
                    seen[i].append((time.monotonic(), content))
                elif content and not content.startswith("⏳") and i not in started:
                    started[i] = time.monotonic()
            await asyncio.sleep(0.02)
        assert len(started) == 4

        # the third waited behind a running and a waiting answer: its estimate is sensible
        assert seen[2], "the third question showed no note"
        noted_at, text = seen[2][0]
        m = NOTE.match(text)
        assert m and m.group(2), f"no estimate in {text!r}"
        estimate = int(m.group(2)) * (60 if m.group(3) == "min" else 1)
        waited = started[2] - noted_at
        assert estimate / 2 <= waited <= estimate * 2, (text, waited)

        # the last one's note was edited as its place changed: its place only goes down
        places = [int(NOTE.match(t).group(1)) for _, t in seen[3]]  # type: ignore[union-attr]
        assert len(places) >= 2 and places == sorted(places, reverse=True) and places[-1] < places[0], seen[3]
        for message in burst:
            final = await final_text(fake, message)
            assert FOOTER.search(final)
            assert cancel_id(fake, reply_to(fake, message)["id"]) is None  # no button on an answer  # type: ignore[index]


async def test_the_asker_cancels_a_waiting_question_and_others_may_not(fake: FakeDiscord, llava) -> None:
    people(fake)
    async with SlowEngine(tokens=4, delay_s=0.05) as server:
        bot, runtime = await llava(**slow_settings(server), queue={"per_user_per_minute": 0})
        server.hold()
        running = await ask(fake, ALICE_ID)
        await server.wait_holding()
        waiting = await ask(fake, BOB_ID, "and this one?")
        note = await fake.wait_until(lambda: (r := reply_to(fake, waiting)) and r["content"].startswith("⏳") and cancel_id(fake, r["id"]) and r)
        button = cancel_id(fake, note["id"])
        assert button is not None

        it = await fake.press_button(CAROL_ID, note["id"], button)  # not the asker, no moderator
        await fake.wait_for_callback(lambda c: c["interaction_id"] == it.id)
        assert ephemeral(fake, it) == ["⚠️ Only the member who asked (or a moderator) can cancel this."]
        assert reply_to(fake, waiting)["content"].startswith("⏳")  # type: ignore[index]

        it = await fake.press_button(BOB_ID, note["id"], button)
        assert await final_text(fake, waiting) == "Cancelled."
        assert fake.buttons_of(note["id"]) == []
        assert runtime.queue.stats().depth == 0 and runtime.queue.cancelled == 1
        assert server.requests == 1  # the engine never saw it

        # a press on a question that is over gets a line, nothing else changes
        it = await fake.press_button(BOB_ID, note["id"], button) if cancel_id(fake, note["id"]) else None
        assert it is None  # the button is gone: nobody can press it

        server.release()
        assert FOOTER.search(await final_text(fake, running))
        await settled(fake, bot)
        assert bot.journal.enabled and await bot.journal.count() == 0  # the journal forgot it
        assert bot.outcomes["cancelled"] == 1


async def test_the_asker_stops_a_streaming_answer_and_the_engine_takes_the_next(fake: FakeDiscord, llava) -> None:
    people(fake)
    async with SlowEngine(tokens=200, delay_s=0.05) as server:
        bot, runtime = await llava(**slow_settings(server), generation={"max_tokens": 200, "max_tokens_limit": 256})
        long = await ask(fake, BOB_ID)
        reply = await fake.wait_until(lambda: (r := reply_to(fake, long)) and "word" in r["content"] and cancel_id(fake, r["id"]) and r)
        next_one = await ask(fake, CAROL_ID)
        started = time.monotonic()
        await fake.press_button(BOB_ID, reply["id"], cancel_id(fake, reply["id"]))  # type: ignore[arg-type]
        assert await final_text(fake, long) == "Cancelled."
        await server.wait_for(lambda s: s.disconnected >= 1)  # its request was stopped
        assert server.completed == 0
        # the engine's time went to the next question at once (not after 200 tokens)
        await fake.wait_until(lambda: (r := reply_to(fake, next_one)) and "word" in r["content"], timeout=10)
        assert time.monotonic() - started < 5
        assert fake.buttons_of(reply["id"]) == []


async def test_a_moderator_may_cancel_and_slash_commands_have_the_button_too(fake: FakeDiscord, llava) -> None:
    people(fake)
    async with SlowEngine(tokens=4, delay_s=0.05) as server:
        bot, runtime = await llava(**slow_settings(server), queue={"per_user_per_minute": 0})
        server.hold()
        await ask(fake, ALICE_ID)
        await server.wait_holding()
        it = await fake.slash_command(BOB_ID, GENERAL_ID, "ask", {"image": fake.add_attachment("b.jpg", jpeg_bytes()), "question": "why?"})
        original = await fake.wait_until(
            lambda: next((m for m in fake.messages.values() if (m.get("interaction_metadata") or {}).get("id") == str(it.id)
                          and m["content"].startswith("⏳") and cancel_id(fake, m["id"])), None)
        )
        # alice may manage messages here: a moderator
        await fake.press_button(ALICE_ID, original["id"], cancel_id(fake, original["id"]))  # type: ignore[arg-type]
        await fake.wait_until(lambda: fake.messages[int(original["id"])]["content"] == "Cancelled.")
        assert fake.buttons_of(original["id"]) == []
        server.release()
        await settled(fake, bot)
        assert server.requests == 1


async def test_the_footer_names_the_engine_when_there_are_several(fake: FakeDiscord, llava) -> None:
    async with SlowEngine(tokens=3, delay_s=0.01) as one, SlowEngine(tokens=3, delay_s=0.01) as two:
        bot, runtime = await llava(**slow_settings(one, two))
        message = await ask(fake, ALICE_ID)
        final = await final_text(fake, message)
        assert re.search(r"total \d+\.\d\d s · engine-[01]$", final.splitlines()[-1]), final
    # with one engine the footer names none: every FOOTER match elsewhere ends at "total … s"


async def test_cancel_on_a_message_with_two_pictures_cancels_both(fake: FakeDiscord, llava) -> None:
    people(fake)
    async with SlowEngine(tokens=4, delay_s=0.05) as server:
        bot, runtime = await llava(**slow_settings(server), queue={"per_user_per_minute": 0})
        server.hold()
        await ask(fake, ALICE_ID)
        await server.wait_holding()
        atts = [fake.add_attachment(f"{n}.jpg", jpeg_bytes()) for n in ("one", "two")]
        both = await fake.user_message(BOB_ID, GENERAL_ID, f"<@{BOT_ID}> what are these?", attachments=atts, mentions_bot=True)
        note = await fake.wait_until(lambda: (r := reply_to(fake, both)) and r["content"].startswith("⏳") and cancel_id(fake, r["id"]) and r)
        await fake.press_button(BOB_ID, note["id"], cancel_id(fake, note["id"]))  # type: ignore[arg-type]
        await fake.wait_until(
            lambda: [m["content"] for m in fake.messages.values() if (m.get("message_reference") or {}).get("message_id") == str(both["id"])]
            == ["Cancelled.", "Cancelled."]
        )
        server.release()
        await settled(fake, bot)
        assert server.requests == 1 and runtime.queue.cancelled == 2


async def test_a_burst_leaves_no_stale_note_while_notes_are_kept_up_to_date(fake: FakeDiscord, llava) -> None:
    """Many waiting notes edited while answers stream in the same channel: every question
    ends with exactly one final reply, no "⏳" and no Cancel button left anywhere."""
    users = list(range(200, 224))
    for uid in users:
        fake.add_user(uid, f"user{uid}")
    async with SlowEngine(tokens=6, delay_s=0.08) as server:  # about 0.5 s an answer
        bot, runtime = await llava(**slow_settings(server), queue={"per_user_per_minute": 0})
        await final_text(fake, await ask(fake, ALICE_ID))  # the pace is known: notes carry estimates
        asked = await asyncio.gather(*(ask(fake, uid) for uid in users))
        finals = [await final_text(fake, m, timeout=60) for m in asked]
        await settled(fake, bot)
        assert all("\n-# ⏱" in f for f in finals)
        edited_notes = [s for s in fake.sent if s["via"] == "edit" and s["content"].startswith("⏳")]
        assert edited_notes, "no note was ever updated"
        for m in asked:
            replies = [x for x in fake.messages.values() if (x.get("message_reference") or {}).get("message_id") == str(m["id"])]
            assert len(replies) == 1, replies
            assert not replies[0]["content"].startswith("⏳") and cancel_id(fake, replies[0]["id"]) is None
