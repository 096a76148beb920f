"""Answers stream into Discord: edits at a bounded pace, a cursor while partial, the
footer only at the end, long answers continued on whole words, failures never leave a
dangling cursor.  The engine is the slow OpenAI-compatible test server, whose tokens
arrive at a known pace; the bot is the real one against the fake Discord."""

from __future__ import annotations

import pytest

from bot.engine.base import EngineError
from bot.jobs.streaming import CURSOR
from bot.reply import TIMEOUT_MARK
from bot.testing.fake_discord import ALICE_ID, BOB_ID, BOT_ID, CAPTIONS_ID, GENERAL_ID, MOD_LOG_ID, FakeDiscord
from tests.e2e.helpers import FOOTER, assert_no_pings, ref, slow_settings
from tests.fakes.slow_engine import SlowEngine, word_text
from tests.helpers import jpeg_bytes

EVERY_S = 0.5


def streaming(server: SlowEngine, **extra) -> dict:
    return {
        **slow_settings(server),
        "discord": {"stream": True, "stream_edit_s": EVERY_S},
        "generation": {"max_tokens": 500, "max_tokens_limit": 500},
        **extra,
    }


def history_of(fake: FakeDiscord, message_id: int) -> list[dict]:
    """Every version of one message the bot posted: its creation, then its edits."""
    return [s for s in fake.sent if s["id"] == message_id]


async def ask(fake: FakeDiscord, user: int = ALICE_ID) -> dict:
    att = fake.add_attachment("a.jpg", jpeg_bytes())
    return await fake.user_message(user, GENERAL_ID, f"<@{BOT_ID}> describe it", attachments=[att], mentions_bot=True)


@pytest.mark.slow
async def test_the_reply_grows_at_most_once_per_interval_and_ends_with_the_footer(fake: FakeDiscord, llava) -> None:
    async with SlowEngine(tokens=24, delay_s=0.1) as server:  # 2.4 s of tokens
        bot, runtime = await llava(**streaming(server))
        msg = await ask(fake)
        first = await fake.wait_for_sent(lambda s: ref(s) == str(msg["id"]))
        final = await fake.wait_for_sent(lambda s: s["id"] == first["id"] and FOOTER.search(s["content"]), timeout=15)
        versions = history_of(fake, first["id"])
        partial, last = versions[:-1], versions[-1]
        assert last is final and last["content"].startswith(word_text(24))
        assert len(partial) >= 3  # it grew while the tokens arrived (2.4 s at one edit per 0.5 s)
        assert all(v["content"].endswith(CURSOR) and "⏱" not in v["content"] for v in partial)
        texts = [v["content"].removesuffix(CURSOR) for v in partial]
        assert all(b.startswith(a) and len(b) > len(a) for a, b in zip(texts, texts[1:]))  # only ever grows
        gaps = [b["time"] - a["time"] for a, b in zip(partial, partial[1:])]
        assert min(gaps) >= EVERY_S * 0.9, gaps  # the pace is bounded (the final edit may follow at once)
        assert all(v["allowed_mentions"]["parse"] == [] for v in versions)
        assert_no_pings(final)


@pytest.mark.slow
async def test_a_long_answer_continues_in_a_new_message_on_whole_words(fake: FakeDiscord, llava) -> None:
    async with SlowEngine(tokens=400, delay_s=0.004) as server:  # about 3,100 characters
        bot, runtime = await llava(**streaming(server))
        msg = await ask(fake)
        await fake.wait_until(lambda: bot.jobs_in_flight == 0 and server.completed == 1, timeout=20)
        await fake.wait_until(lambda: bot.jobs_in_flight == 0)
        replies = [s for s in fake.sent if ref(s) == str(msg["id"])]
        assert len(replies) == 2
        final = [fake.messages[r["id"]]["content"] for r in replies]
        assert all(len(t) <= 2000 for t in final) and not any(t.endswith(CURSOR) for t in final)
        words = " ".join(final).split("\n-# ")[0].split()
        assert words == word_text(400).split()  # nothing cut, nothing repeated
        assert FOOTER.search(final[-1])


@pytest.mark.slow
async def test_a_time_limit_mid_answer_leaves_the_partial_text_marked_without_a_cursor(fake: FakeDiscord, llava) -> None:
    async with SlowEngine(tokens=100, delay_s=0.05) as server:
        bot, runtime = await llava(**streaming(server, generation={"max_tokens": 500, "max_tokens_limit": 500, "timeout_s": 1.2}))
        msg = await ask(fake)
        first = await fake.wait_for_sent(lambda s: ref(s) == str(msg["id"]))
        final = await fake.wait_for_sent(lambda s: s["id"] == first["id"] and FOOTER.search(s["content"]), timeout=15)
        assert TIMEOUT_MARK.strip() in final["content"] and CURSOR not in final["content"]
        assert final["content"].startswith("word1 word2")


@pytest.mark.slow
async def test_an_engine_failure_mid_answer_keeps_the_text_and_adds_the_reason(fake: FakeDiscord, llava) -> None:
    async with SlowEngine(tokens=2, delay_s=0.0) as server:
        bot, runtime = await llava(**streaming(server))
        engine = runtime.engine

        def fails_midway(request, *, on_text=None, **kw):
            for word in ("The", " picture", " shows"):
                on_text(word)
                __import__("time").sleep(0.3)
            raise EngineError("the model server failed on this question")

        engine.generate = fails_midway
        msg = await ask(fake)
        first = await fake.wait_for_sent(lambda s: ref(s) == str(msg["id"]))
        final = await fake.wait_for_sent(lambda s: s["id"] == first["id"] and "⚠️" in s["content"], timeout=15)
        assert final["content"] == "The picture shows\n⚠️ The model server failed on this question."
        await fake.wait_until(lambda: bot.jobs_in_flight == 0)
        assert not any(m["content"].endswith(CURSOR) for m in fake.messages.values())


@pytest.mark.parametrize("status", [404, 429])
@pytest.mark.slow
async def test_failing_edits_never_slow_the_answer_and_the_final_text_still_arrives(fake: FakeDiscord, llava, status) -> None:
    async with SlowEngine(tokens=16, delay_s=0.1) as server:
        bot, runtime = await llava(**streaming(server))
        # every edit fails for a while: the message was deleted (404), or Discord rate-limits us (429)
        if status == 429:
            rule = fake.fail_next("PATCH", r"/channels/\d+/messages/\d+$", status, times=None, retry_after=1.0)
        msg = await ask(fake)
        first = await fake.wait_for_sent(lambda s: ref(s) == str(msg["id"]))
        if status == 404:  # a moderator deletes the partial answer: Discord answers its edits 404
            await fake.user_delete(first["id"])
        await server.wait_for(lambda s: s.completed == 1, timeout=15)
        if status == 429:
            fake.clear_failures()  # the rate limit ends; a deleted message stays deleted
        await fake.wait_until(lambda: bot.jobs_in_flight == 0, timeout=15)
        fake.clear_failures()
        body = server.bodies[0]
        assert body  # one request, answered at the engine's own pace
        finals = [fake.messages[s["id"]]["content"] for s in fake.sent if ref(s) == str(msg["id"]) and s["id"] in fake.messages]
        assert len(finals) == 1 and FOOTER.search(finals[0]) and finals[0].startswith(word_text(16)), finals
        if status == 429:
            assert rule.hits >= 1
        else:  # streaming stopped at the first failed edit; the answer went to a new reply (a fresh nonce)
            assert first["id"] not in fake.messages and len(history_of(fake, first["id"])) == 1
            assert len([s for s in fake.sent if ref(s) == str(msg["id"])]) == 2


@pytest.mark.slow
async def test_slash_ask_streams_into_its_original_response(fake: FakeDiscord, llava) -> None:
    async with SlowEngine(tokens=12, delay_s=0.1) as server:
        bot, runtime = await llava(**streaming(server))
        inter = await fake.slash_command(BOB_ID, GENERAL_ID, "ask", {"image": fake.add_attachment("b.jpg", jpeg_bytes()), "question": "why?"})
        final = await fake.wait_for_sent(lambda s: s.get("interaction_id") == inter.id and FOOTER.search(s["content"]), timeout=15)
        edits = [s for s in fake.sent if s.get("interaction_id") == inter.id and s["via"] == "edit" and s.get("original")]
        assert len(edits) >= 2 and edits[-1] is final
        assert all(e["content"].endswith(CURSOR) for e in edits[:-1])
        assert not [s for s in fake.sent if s.get("interaction_id") == inter.id and s["via"] == "followup"]


async def test_captions_in_the_log_channel_post_only_the_final_text(fake: FakeDiscord, llava) -> None:
    async with SlowEngine(tokens=12, delay_s=0.05) as server:
        bot, runtime = await llava(**streaming(server, moderation={"caption_channels": [CAPTIONS_ID], "log_channel": MOD_LOG_ID}))
        await fake.user_message(ALICE_ID, CAPTIONS_ID, "look", attachments=[fake.add_attachment("c.jpg", jpeg_bytes())])
        caption = await fake.wait_for_sent(lambda s: s["channel_id"] == MOD_LOG_ID, timeout=15)
        await fake.wait_until(lambda: bot.jobs_in_flight == 0)
        assert FOOTER.search(caption["content"]) and len(history_of(fake, caption["id"])) == 1  # no edits
