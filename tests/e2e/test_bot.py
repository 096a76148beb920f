"""llava-bot end to end: the real discord.py client, the real engine on the tiny
model, real Pillow, against the local fake Discord."""

from __future__ import annotations

import io
import re

import pytest

from bot.engine.base import Answer
from bot.testing.fake_discord import (
    ALICE_ID,
    BOB_ID,
    BOT_ID,
    CAPTIONS_ID,
    DM_CHANNEL_ID,
    GENERAL_ID,
    MOD_LOG_ID,
    OTHER_BOT_ID,
    OWNER_ID,
    FakeDiscord,
)
from tests.e2e.helpers import FOOTER, assert_no_pings, hold_engine, record_requests, ref, settled
from tests.helpers import jpeg_bytes, picture

CAROL_ID = 4


def png_bytes() -> bytes:
    buf = io.BytesIO()
    picture(colour=(20, 220, 20)).save(buf, "PNG")
    return buf.getvalue()


async def test_mention_with_an_image_gets_one_reply_with_the_footer(fake: FakeDiscord, llava) -> None:
    bot, runtime = await llava()
    att = fake.add_attachment("house.jpg", jpeg_bytes())
    msg = await fake.user_message(ALICE_ID, GENERAL_ID, f"<@{BOT_ID}> what is in this picture?", attachments=[att], mentions_bot=True)
    reply = await fake.wait_for_final(lambda s: s["channel_id"] == GENERAL_ID)
    assert ref(reply) == msg["id"]
    assert FOOTER.search(reply["content"]), reply["content"]
    assert_no_pings(reply)
    assert fake.typing  # "typing…" while the job ran
    await settled(fake, bot)
    assert len(fake.created_in(GENERAL_ID)) == 1  # the bot ignored its own echo
    assert runtime.queue.stats().served == 1


async def test_reply_chain_follow_up_is_about_the_earlier_image(fake: FakeDiscord, llava) -> None:
    bot, runtime = await llava()
    seen = record_requests(runtime)
    att = fake.add_attachment("cat.png", png_bytes())
    first_q = await fake.user_message(ALICE_ID, GENERAL_ID, f"<@{BOT_ID}> what is this?", attachments=[att], mentions_bot=True)
    first = await fake.wait_for_final(lambda s: s["channel_id"] == GENERAL_ID)
    # a reply to the bot's answer, no mention needed
    follow = await fake.user_message(ALICE_ID, GENERAL_ID, "and what colour is it?", reference_message_id=first["id"])
    second = await fake.wait_for_final(lambda s: ref(s) == follow["id"])
    assert FOOTER.search(second["content"])
    assert len(seen) == 2
    assert seen[1].images == seen[0].images  # the same image
    answer_text = first["content"].split("\n-# ")[0].removesuffix(" …(cut at the answer limit)")
    assert seen[1].history == (("what is this?", answer_text),)
    assert seen[1].question == "and what colour is it?\nAnswer in the language of the question."  # a mention: answered in its own language
    assert first_q["id"] != follow["id"]
    # the follow-up reused the cached image: no CLIP encode the second time
    assert "image 0.00 s" in second["content"]


async def test_mention_in_a_reply_to_someone_elses_image(fake: FakeDiscord, llava) -> None:
    bot, runtime = await llava()
    seen = record_requests(runtime)
    att = fake.add_attachment("dog.jpg", jpeg_bytes(picture(colour=(250, 250, 0))))
    posted = await fake.user_message(BOB_ID, GENERAL_ID, "look at my dog", attachments=[att])
    await settled(fake, bot)
    assert fake.created_in(GENERAL_ID) == []  # not addressed to the bot
    ask = await fake.user_message(ALICE_ID, GENERAL_ID, f"<@{BOT_ID}> what breed?", mentions_bot=True, reference_message_id=posted["id"])
    reply = await fake.wait_for_final(lambda s: s["channel_id"] == GENERAL_ID)
    assert ref(reply) == ask["id"]
    assert len(seen) == 1 and seen[0].question == "what breed?\nAnswer in the language of the question." and seen[0].history == ()
    assert len(fake.downloads_of(att)) == 1


async def test_slash_ask_defers_and_follows_up(fake: FakeDiscord, llava) -> None:
    bot, runtime = await llava()
    seen = record_requests(runtime)
    att = fake.add_attachment("photo.jpg", jpeg_bytes())
    inter = await fake.slash_command(ALICE_ID, GENERAL_ID, "ask", {"image": att, "question": "What is it?", "max_tokens": 8})
    follow = await fake.wait_for_final(lambda s: s.get("original"))
    callbacks = [c for c in fake.callbacks if c["interaction_id"] == inter.id]
    assert callbacks[0]["type"] == 5  # deferred, thinking
    assert FOOTER.search(follow["content"])
    assert_no_pings(follow)
    assert seen[0].max_tokens == 8 and seen[0].question == "What is it?\nAnswer in English."  # the asker's locale (en-US)
    # the option is bounded by generation.max_tokens_limit through app_commands.Range
    ask_cmd = fake.find_command("ask")
    option = next(o for o in ask_cmd["options"] if o["name"] == "max_tokens")
    assert (option["min_value"], option["max_value"]) == (1, 64)


async def test_caption_and_describe_image_menu(fake: FakeDiscord, llava) -> None:
    bot, runtime = await llava()
    seen = record_requests(runtime)
    att = fake.add_attachment("a.jpg", jpeg_bytes())
    await fake.slash_command(BOB_ID, GENERAL_ID, "caption", {"image": att})
    first = await fake.wait_for_final(lambda s: s.get("original"))
    assert FOOTER.search(first["content"])
    assert seen[0].question == runtime.settings.moderation.caption_prompt + "\nAnswer in English."
    assert seen[0].max_tokens == runtime.settings.moderation.caption_max_tokens

    att2 = fake.add_attachment("b.png", png_bytes())
    target = await fake.user_message(BOB_ID, GENERAL_ID, "holiday", attachments=[att2])
    await fake.message_context_menu(ALICE_ID, GENERAL_ID, "Describe image", target["id"])
    second = await fake.wait_for_final(lambda s: s.get("original") and s["id"] != first["id"])
    assert FOOTER.search(second["content"])
    assert seen[1].question == "Describe this image.\nAnswer in English."
    assert len(fake.downloads_of(att2)) == 1


@pytest.mark.parametrize("log_mode", [False, True])
async def test_moderation_channel_images_get_captions(fake: FakeDiscord, llava, log_mode: bool) -> None:
    mod = {"caption_channels": [CAPTIONS_ID]}
    if log_mode:
        mod["log_channel"] = MOD_LOG_ID
    bot, runtime = await llava(moderation=mod)
    att = fake.add_attachment("meme.jpg", jpeg_bytes(), channel_id=CAPTIONS_ID)
    posted = await fake.user_message(BOB_ID, CAPTIONS_ID, "", attachments=[att])
    if log_mode:
        record = await fake.wait_for_final(lambda s: s["channel_id"] == MOD_LOG_ID)
        assert f"/channels/{fake.guild['id']}/{CAPTIONS_ID}/{posted['id']}" in record["content"]
        assert "meme.jpg" in record["content"]
        await settled(fake, bot)
        assert fake.created_in(CAPTIONS_ID) == []
    else:
        record = await fake.wait_for_final(lambda s: s["channel_id"] == CAPTIONS_ID)
        assert ref(record) == posted["id"]
    assert FOOTER.search(record["content"])
    assert_no_pings(record)
    # an image posted elsewhere is not captioned
    other = fake.add_attachment("x.jpg", jpeg_bytes())
    await fake.user_message(BOB_ID, GENERAL_ID, "", attachments=[other])
    await settled(fake, bot)
    assert fake.created_in(GENERAL_ID) == [] and fake.downloads_of(other) == []


async def test_refusals_for_bad_attachments(fake: FakeDiscord, llava) -> None:
    bot, runtime = await llava(images={"max_bytes": 5 * 1024 * 1024})
    cases = [
        (fake.add_attachment("notes.txt", b"hello there", content_type="text/plain"), "⚠️ That file is not an image."),
        (fake.add_attachment("fake.jpg", b"this is not a jpeg at all", content_type="image/jpeg"), "⚠️ That file is not an image."),
        (fake.add_attachment("huge.png", b"\x89PNG", size=30 * 1024 * 1024), "⚠️ File is 30 MB, the limit is 5 MB."),
        (fake.add_attachment("far.jpg", jpeg_bytes(), url="https://images.example.com/far.jpg"), "⚠️ I only read pictures that Discord itself serves: attachments, stickers and Discord's previews of links."),
    ]
    for att, line in cases:
        msg = await fake.user_message(ALICE_ID, GENERAL_ID, f"<@{BOT_ID}> what?", attachments=[att], mentions_bot=True)
        reply = await fake.wait_for_final(lambda s, m=msg: ref(s) == m["id"])
        assert reply["content"] == line
        assert_no_pings(reply)
    assert fake.downloads_of(cases[0][0]) == []  # plainly not an image: never downloaded
    assert fake.downloads_of(cases[2][0]) == []  # too big by its declared size: never downloaded
    assert len(fake.downloads_of(cases[1][0])) == 1  # said image, checked by content
    # and the next question is still answered
    good = fake.add_attachment("ok.jpg", jpeg_bytes())
    msg = await fake.user_message(ALICE_ID, GENERAL_ID, f"<@{BOT_ID}>", attachments=[good], mentions_bot=True)
    reply = await fake.wait_for_final(lambda s: ref(s) == msg["id"])
    assert FOOTER.search(reply["content"])


async def test_full_queue_refuses_at_once_and_earlier_jobs_complete(fake: FakeDiscord, llava) -> None:
    fake.add_user(CAROL_ID, "carol")
    bot, runtime = await llava(queue={"max_size": 1, "per_user": 2})
    gate = hold_engine(runtime)
    msgs = []
    for user in (ALICE_ID, BOB_ID):
        att = fake.add_attachment(f"{user}.jpg", jpeg_bytes())
        msgs.append(await fake.user_message(user, GENERAL_ID, f"<@{BOT_ID}> hi", attachments=[att], mentions_bot=True))
        await fake.wait_until(lambda n=len(msgs): runtime.queue.stats().depth + runtime.queue.stats().busy == n)
    place = await fake.wait_for_sent(lambda s: s["content"].startswith("⏳"))
    assert place["content"] == "⏳ #1 in line" and ref(place) == msgs[1]["id"]
    att = fake.add_attachment("late.jpg", jpeg_bytes())
    late = await fake.user_message(CAROL_ID, GENERAL_ID, f"<@{BOT_ID}> me too", attachments=[att], mentions_bot=True)
    refusal = await fake.wait_for_final(lambda s: ref(s) == late["id"])
    assert refusal["content"] == "⚠️ The queue is full (1 waiting), please try again in a minute."
    assert runtime.queue.stats().served == 0  # refused while the others still wait
    gate.set()
    first = await fake.wait_for_final(lambda s: ref(s) == msgs[0]["id"])
    assert FOOTER.search(first["content"])
    edited = await fake.wait_for_sent(lambda s: s["via"] == "edit" and s["id"] == place["id"] and "⏱" in s["content"])
    assert FOOTER.search(edited["content"])
    # one message per job: the place-in-line note became the answer
    assert len([s for s in fake.sent if s["via"] == "channel" and ref(s) == msgs[1]["id"]]) == 1


async def test_no_mentions_even_when_the_model_writes_them(fake: FakeDiscord, llava) -> None:
    bot, runtime = await llava()
    engine = runtime.engine
    original = engine.generate

    def generate(request, **kw):
        answer = original(request, **kw)
        return Answer(f"@everyone @here <@{BOB_ID}> <@&1101> {answer.text}", answer.finish_reason,
                      answer.prompt_tokens, answer.completion_tokens, answer.timings)

    engine.generate = generate
    att = fake.add_attachment("x.jpg", jpeg_bytes())
    await fake.user_message(ALICE_ID, GENERAL_ID, f"<@{BOT_ID}>", attachments=[att], mentions_bot=True)
    reply = await fake.wait_for_final(lambda s: s["channel_id"] == GENERAL_ID)
    assert reply["content"].startswith("@everyone @here")
    assert_no_pings(reply)
    await fake.slash_command(ALICE_ID, GENERAL_ID, "ask", {"image": fake.add_attachment("y.jpg", jpeg_bytes()), "question": "q"})
    follow = await fake.wait_for_final(lambda s: s.get("original"))
    assert_no_pings(follow)


async def test_messages_from_bots_are_ignored(fake: FakeDiscord, llava) -> None:
    bot, runtime = await llava()
    att = fake.add_attachment("bot.jpg", jpeg_bytes())
    await fake.user_message(OTHER_BOT_ID, GENERAL_ID, f"<@{BOT_ID}> describe", attachments=[att], mentions_bot=True)
    await settled(fake, bot)
    assert fake.sent == [] and fake.downloads_of(att) == []


async def test_direct_messages(fake: FakeDiscord, llava) -> None:
    bot, runtime = await llava()
    att = fake.add_attachment("dm.jpg", jpeg_bytes(), channel_id=DM_CHANNEL_ID)
    await fake.user_message(ALICE_ID, DM_CHANNEL_ID, "what is this?", attachments=[att])
    reply = await fake.wait_for_final(lambda s: s["channel_id"] == DM_CHANNEL_ID)
    assert FOOTER.search(reply["content"])


async def test_direct_messages_can_be_turned_off(fake: FakeDiscord, llava) -> None:
    bot, runtime = await llava(discord={"dm": False})
    att = fake.add_attachment("dm.jpg", jpeg_bytes(), channel_id=DM_CHANNEL_ID)
    await fake.user_message(ALICE_ID, DM_CHANNEL_ID, "what is this?", attachments=[att])
    await settled(fake, bot)
    assert fake.sent == []


async def test_allowed_channels_and_several_images(fake: FakeDiscord, llava) -> None:
    bot, runtime = await llava(discord={"allowed_channels": [GENERAL_ID], "max_images": 2})
    att = fake.add_attachment("c.jpg", jpeg_bytes(), channel_id=CAPTIONS_ID)
    msg = await fake.user_message(ALICE_ID, CAPTIONS_ID, f"<@{BOT_ID}>", attachments=[att], mentions_bot=True)
    refusal = await fake.wait_for_final(lambda s: s["channel_id"] == CAPTIONS_ID)
    assert refusal["content"] == "⚠️ I don't answer in this channel."
    assert fake.downloads_of(att) == []

    atts = [fake.add_attachment(f"{i}.jpg", jpeg_bytes(picture(colour=(i * 60, 0, 0)))) for i in range(3)]
    msg = await fake.user_message(ALICE_ID, GENERAL_ID, f"<@{BOT_ID}> compare", attachments=atts, mentions_bot=True)
    await fake.wait_until(lambda: len(fake.created_in(GENERAL_ID)) == 2)
    await settled(fake, bot)
    replies = [{**r, "content": fake.messages[r["id"]]["content"]} for r in fake.created_in(GENERAL_ID)]  # as they ended
    assert len(replies) == 2
    assert replies[0]["content"].startswith("**Image 1 of 2** (0.jpg)")
    assert replies[1]["content"].startswith("**Image 2 of 2** (1.jpg)")
    assert replies[1]["content"].endswith("-# only the first 2 images are answered")
    assert all(ref(r) == msg["id"] for r in replies)
    assert fake.downloads_of(atts[2]) == []


async def test_status_and_owner_only_sync(fake: FakeDiscord, llava) -> None:
    bot, runtime = await llava()
    await fake.slash_command(BOB_ID, GENERAL_ID, "status", {})
    status = await fake.wait_for_callback(lambda c: c["type"] == 4)
    text = status["data"]["content"]
    for needle in ("llava-tiny", "llava-1-5", "text model on: CPU", "CLIP on: CPU", "0 waiting", "served", "p50", "uptime"):
        assert needle in text, needle
    assert "test-token" not in text

    await fake.user_message(BOB_ID, GENERAL_ID, f"<@{BOT_ID}> sync", mentions_bot=True)
    refused = await fake.wait_for_final(lambda s: s["via"] == "channel")
    assert refused["content"] == "⚠️ Only the bot's owner or admins can do that."
    syncs_before = len(fake.requests_to("PUT", r"/applications/\d+/commands"))
    await fake.user_message(OWNER_ID, GENERAL_ID, f"<@{BOT_ID}> sync", mentions_bot=True)
    done = await fake.wait_for_sent(lambda s: s["content"].startswith("Synced"))
    assert re.fullmatch(r"Synced \d+ application commands\.", done["content"])
    assert len(fake.requests_to("PUT", r"/applications/\d+/commands")) == syncs_before + 1


async def test_mention_without_an_image_explains_how_to_ask(fake: FakeDiscord, llava) -> None:
    bot, runtime = await llava()
    await fake.user_message(BOB_ID, GENERAL_ID, f"<@{BOT_ID}> hello?", mentions_bot=True)
    reply = await fake.wait_for_final(lambda s: s["channel_id"] == GENERAL_ID)
    assert reply["content"] == "⚠️ Attach an image (or reply to a message with one) and mention me with your question."


async def test_links_in_the_question_are_never_fetched(fake: FakeDiscord, llava) -> None:
    bot, runtime = await llava()
    url = fake.add_file("/files/pic.jpg", jpeg_bytes(), "image/jpeg")  # on an allowed host, even
    await fake.user_message(ALICE_ID, GENERAL_ID, f"<@{BOT_ID}> what is in {url} ?", mentions_bot=True)
    reply = await fake.wait_for_final(lambda s: s["channel_id"] == GENERAL_ID)
    assert reply["content"].startswith("⚠️ Attach an image")
    assert fake.downloads == []


async def test_admin_role_may_sync_and_allowed_roles_gate_questions(fake: FakeDiscord, llava) -> None:
    from bot.testing.fake_discord import MOD_ROLE_ID

    fake.add_user(CAROL_ID, "carol", roles=[MOD_ROLE_ID])
    bot, runtime = await llava(discord={"admin_roles": [MOD_ROLE_ID], "allowed_roles": [MOD_ROLE_ID]})
    await fake.user_message(CAROL_ID, GENERAL_ID, f"<@{BOT_ID}> sync", mentions_bot=True)
    done = await fake.wait_for_final(lambda s: s["via"] == "channel")
    assert done["content"].startswith("Synced")
    # bob has no allowed role: refused, nothing downloaded
    att = fake.add_attachment("x.jpg", jpeg_bytes())
    msg = await fake.user_message(BOB_ID, GENERAL_ID, f"<@{BOT_ID}> what?", attachments=[att], mentions_bot=True)
    refusal = await fake.wait_for_final(lambda s: ref(s) == msg["id"])
    assert refusal["content"] == "⚠️ You need one of the allowed roles to ask me."
    assert fake.downloads_of(att) == []
    await fake.slash_command(BOB_ID, GENERAL_ID, "ask", {"image": att, "question": "q"})
    callback = await fake.wait_for_callback(lambda c: c["type"] == 4)
    assert callback["data"]["content"] == "⚠️ You need one of the allowed roles to ask me."
    assert callback["data"]["flags"] & 64  # ephemeral


async def test_follow_up_on_one_of_several_images_is_about_that_image(fake: FakeDiscord, llava) -> None:
    bot, runtime = await llava()
    seen = record_requests(runtime)
    atts = [fake.add_attachment(f"{name}.jpg", jpeg_bytes(picture(colour=c))) for name, c in (("red", (250, 0, 0)), ("blue", (0, 0, 250)))]
    msg = await fake.user_message(ALICE_ID, GENERAL_ID, f"<@{BOT_ID}> compare", attachments=atts, mentions_bot=True)
    await fake.wait_until(lambda: len([s for s in fake.sent if ref(s) == msg["id"]]) == 2)
    second = [s for s in fake.sent if ref(s) == msg["id"]][1]
    assert second["content"].startswith("**Image 2 of 2** (blue.jpg)")
    follow = await fake.user_message(ALICE_ID, GENERAL_ID, "and this one?", reference_message_id=second["id"])
    await fake.wait_for_final(lambda s: ref(s) == follow["id"])
    assert len(seen) == 3
    assert seen[2].images == seen[1].images  # the blue one only
    question, answer = seen[2].history[0]
    assert question == "compare" and not answer.startswith("**Image")

