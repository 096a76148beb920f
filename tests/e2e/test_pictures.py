"""Every picture people post, end to end: linked pictures (embeds through Discord's
media proxy, also when the embed comes a moment after the message), GIF-picker
clips, animated GIFs, stickers, forwards, and what is refused (a host off the
allow-list, an oversized or damaged video, sound); in watched channels, rules
asked about each frame of a moving picture, and forwards and late embeds checked.
The real discord.py client and the real bot against the fake Discord; questions
on the real tiny model, moderation with the colour engine."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.config import load_settings
from bot.moderation.checker import RULE_SUFFIX
from bot.reply import friendly
from bot.runtime import Runtime
from bot.testing.fake_discord import (
    ALICE_ID,
    BOB_ID,
    BOT_ID,
    CAPTIONS_ID,
    DM_CHANNEL_ID,
    GENERAL_ID,
    MOD_LOG_ID,
    FakeDiscord,
    gifv_embed,
    image_embed,
)
from bot.testing.harness import deep_merge, running_bot
from cogs.reading import LOTTIE_STICKER
from tests.e2e.helpers import FOOTER, record_requests, ref, settled
from tests.fakes.colour_engine import PALETTE, ColourEngine
from tests.helpers import picture
from tests.media.makers import animation, clip, sound

ASK = f"<@{BOT_ID}> what is this?"
#: the small line under the footer: what the model saw of a moving picture
FRAMES_LINE = re.compile(r"\n-# (\d+) frames of a [\d.]+ s (clip|animation)(?:\n|$)")
REFUSED_HOST = "⚠️ I only read pictures that Discord itself serves: attachments, stickers and Discord's previews of links."


def png(colour: tuple[int, int, int] = (20, 220, 20)) -> bytes:
    buf = io.BytesIO()
    picture(colour=colour).save(buf, "PNG")
    return buf.getvalue()


def frames_footer(content: str) -> int | None:
    """The frames counted in the footer ("image 0.12 s (4 frames)"), None for a still."""
    m = re.search(r"· image \d+\.\d\d s(?: \((\d+) frames\))? ·", content)
    assert m is not None, content
    return int(m.group(1)) if m.group(1) else None


async def ask(fake: FakeDiscord, channel: int = GENERAL_ID, content: str = ASK, **kw: Any) -> tuple[dict, dict]:
    """Alice asks the bot; (her message, the bot's final reply to it)."""
    msg = await fake.user_message(ALICE_ID, channel, content, mentions_bot=channel != DM_CHANNEL_ID, **kw)
    reply = await fake.wait_for_final(lambda s: ref(s) == msg["id"], timeout=60)
    return msg, reply


def linked_picture(fake: FakeDiscord, name: str = "cat.png", data: bytes | None = None) -> tuple[str, str, dict]:
    """A link to a picture on a third-party host: (the link as posted, the proxy URL, the embed)."""
    source = f"https://example.com/pics/{name}"
    proxy = fake.add_embed_media(name, data or png(), source_url=source)
    link = fake.third_party_url(source)  # a fetch of the original would be recorded
    return link, proxy, image_embed(link, proxy, 96, 64)


# -- linked pictures ------------------------------------------------------------------------------


async def test_a_linked_picture_is_read_from_the_media_proxy_never_the_link(fake: FakeDiscord, llava) -> None:
    bot, runtime = await llava()
    seen = record_requests(runtime)
    link, proxy, embed = linked_picture(fake)
    _, reply = await ask(fake, content=f"{ASK} {link}", embeds=[embed])
    assert FOOTER.search(reply["content"]), reply["content"]
    assert len(seen) == 1 and len(seen[0].images) == 1
    assert len(fake.downloads_at(proxy)) == 1
    assert fake.third_party_fetches == [] and fake.downloads_at(link) == []


@pytest.mark.parametrize("when", ["right after", "half a second after"])
async def test_a_link_whose_embed_comes_after_the_message_is_answered_about_the_picture(fake: FakeDiscord, llava, when: str) -> None:
    bot, runtime = await llava()
    seen = record_requests(runtime)
    link, proxy, embed = linked_picture(fake)
    if when == "right after":
        msg = await fake.user_message(ALICE_ID, GENERAL_ID, f"{ASK} {link}", mentions_bot=True, embeds=[embed], embeds_later=True)
    else:
        msg = await fake.user_message(ALICE_ID, GENERAL_ID, f"{ASK} {link}", mentions_bot=True)
        await asyncio.sleep(0.5)  # the bot is waiting for the embed by now
        await fake.unfurl(int(msg["id"]), [embed])
    reply = await fake.wait_for_final(lambda s: ref(s) == msg["id"], timeout=60)
    assert FOOTER.search(reply["content"]), reply["content"]  # not "attach an image"
    assert len(seen) == 1 and len(seen[0].images) == 1
    assert len(fake.downloads_at(proxy)) == 1 and fake.third_party_fetches == []


async def test_a_link_to_a_host_off_the_allow_list_is_never_fetched(fake: FakeDiscord, llava, caplog) -> None:
    bot, runtime = await llava()
    link = fake.third_party_url("https://example.com/far.png")
    proxy = "https://images-ext-1.discordapp.net/external/abc/https/example.com/far.png"  # not the fake: not allowed here
    _, reply = await ask(fake, content=f"{ASK} {link}", embeds=[image_embed(link, proxy, 64, 48)])
    assert reply["content"] == REFUSED_HOST
    await settled(fake, bot)
    assert fake.downloads == [] and len(fake.created_in(GENERAL_ID)) == 1
    _, good = await ask(fake, attachments=[fake.add_attachment("ok.png", png())])  # and the bot goes on
    assert FOOTER.search(good["content"])
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # refused, not crashed


# -- moving pictures --------------------------------------------------------------------------------


async def test_a_gif_picker_clip_is_answered_about_its_frames(fake: FakeDiscord, llava) -> None:
    bot, runtime = await llava()
    seen = record_requests(runtime)
    video = fake.add_embed_media("cat.mp4", clip(), "video/mp4", source_url="https://media.tenor.com/abc/cat.mp4")
    still = fake.add_embed_media("cat.png", png(), source_url="https://media.tenor.com/abc/cat.png")
    page = "https://tenor.com/view/cat-123"
    embed = gifv_embed(
        page, video, still,
        video_url=fake.third_party_url("https://media.tenor.com/abc/cat.mp4"),
        thumbnail_url=fake.third_party_url("https://media.tenor.com/abc/cat.png"),
    )
    _, reply = await ask(fake, content=f"{ASK} {page}", embeds=[embed])
    content = reply["content"]
    assert FOOTER.search(content), content
    assert len(seen) == 1 and len(seen[0].images) == runtime.settings.images.frames == 4
    assert frames_footer(content) == 4
    m = FRAMES_LINE.search(content)
    assert m is not None and m.groups() == ("4", "clip"), content
    assert len(fake.downloads_at(video)) == 1 and fake.downloads_at(still) == []  # the clip, not its still
    assert fake.third_party_fetches == []


@pytest.mark.parametrize("frames", [4, 1])
async def test_an_animated_gif_gives_images_frames_pictures(fake: FakeDiscord, llava, frames: int) -> None:
    bot, runtime = await llava(images={"frames": frames})
    seen = record_requests(runtime)
    att = fake.add_attachment("dance.gif", animation("GIF", 4))
    _, reply = await ask(fake, attachments=[att])
    content = reply["content"]
    assert FOOTER.search(content), content
    assert len(seen) == 1 and len(seen[0].images) == frames
    if frames == 1:
        assert frames_footer(content) is None and FRAMES_LINE.search(content) is None, content
    else:
        assert frames_footer(content) == 4
        m = FRAMES_LINE.search(content)
        assert m is not None and m.groups() == ("4", "animation"), content


async def test_a_follow_up_about_a_gif_keeps_its_frames(fake: FakeDiscord, llava) -> None:
    """A reply to the bot's answer about an animation asks about the same frames again
    (the same pictures, so the prefix cache can serve them), with the conversation so far."""
    bot, runtime = await llava()
    seen = record_requests(runtime)
    att = fake.add_attachment("dance.gif", animation("GIF", 4))
    _, answer = await ask(fake, attachments=[att])
    follow = await fake.user_message(ALICE_ID, GENERAL_ID, "and then?", reference_message_id=int(answer["id"]))
    reply = await fake.wait_for_final(lambda s: ref(s) == follow["id"], timeout=60)
    assert FOOTER.search(reply["content"]) and frames_footer(reply["content"]) == 4
    assert len(seen) == 2 and seen[1].images == seen[0].images and len(seen[1].images) == 4
    assert seen[1].history and seen[1].question == "and then?\nAnswer in the language of the question."


# -- stickers and forwards --------------------------------------------------------------------------


async def test_stickers_png_and_gif_answered_lottie_refused_in_one_line(fake: FakeDiscord, llava) -> None:
    bot, runtime = await llava()
    seen = record_requests(runtime)
    still = fake.add_sticker("smile", png(), format_type=1)
    _, reply = await ask(fake, stickers=[still])
    assert FOOTER.search(reply["content"]), reply["content"]
    assert len(seen) == 1 and len(seen[0].images) == 1
    assert len(fake.downloads_at(fake.sticker_url(still))) == 1

    lottie = fake.add_sticker("dance", b'{"v": "5.7.4", "layers": []}', format_type=3)
    _, refusal = await ask(fake, stickers=[lottie])
    assert refusal["content"] == friendly(LOTTIE_STICKER.format(name="dance"))
    assert "Lottie" in refusal["content"] and "\n" not in refusal["content"]
    assert fake.downloads_at(fake.sticker_url(lottie)) == [] and len(seen) == 1

    moving = fake.add_sticker("wave", animation("GIF", 4), format_type=4)
    _, reply = await ask(fake, stickers=[moving])
    assert FOOTER.search(reply["content"]), reply["content"]
    assert len(seen) == 2 and len(seen[1].images) == 4
    assert len(fake.downloads_at(fake.sticker_url(moving))) == 1


async def test_a_forward_in_a_dm_is_answered_about_its_picture(fake: FakeDiscord, llava) -> None:
    bot, runtime = await llava()
    seen = record_requests(runtime)
    att = fake.add_attachment("far.png", png(), channel_id=CAPTIONS_ID)  # from a server the bot may not see
    forward = await fake.user_forward(ALICE_ID, DM_CHANNEL_ID, attachments=[att])
    reply = await fake.wait_for_final(lambda s: ref(s) == forward["id"], timeout=60)
    assert FOOTER.search(reply["content"]), reply["content"]
    assert len(seen) == 1 and len(seen[0].images) == 1 and len(fake.downloads_of(att)) == 1


async def test_a_question_replying_to_a_forward_asks_about_the_forwarded_picture(fake: FakeDiscord, llava) -> None:
    bot, runtime = await llava()
    seen = record_requests(runtime)
    att = fake.add_attachment("dog.png", png((250, 250, 0)), channel_id=CAPTIONS_ID)
    original = await fake.user_message(BOB_ID, CAPTIONS_ID, "my dog", attachments=[att])
    forward = await fake.user_forward(BOB_ID, GENERAL_ID, int(original["id"]))
    await settled(fake, bot)
    assert fake.sent == []  # nobody asked yet
    _, reply = await ask(fake, content=f"<@{BOT_ID}> what breed?", reference_message_id=int(forward["id"]))
    assert FOOTER.search(reply["content"]), reply["content"]
    assert len(seen) == 1 and len(seen[0].images) == 1 and seen[0].question == "what breed?\nAnswer in the language of the question."
    assert len(fake.downloads_of(att)) == 1


# -- refused: too big, damaged, sound -----------------------------------------------------------------


async def test_a_video_declared_over_max_video_bytes_is_refused_unread(fake: FakeDiscord, llava) -> None:
    bot, runtime = await llava(images={"max_video_bytes": 1024 * 1024})
    att = fake.add_attachment("long.mp4", clip(), "video/mp4", 5 * 1024 * 1024)
    _, reply = await ask(fake, attachments=[att])
    assert reply["content"] == "⚠️ File is 5 MB, the limit is 1 MB."
    await settled(fake, bot)
    assert fake.downloads_of(att) == [] and fake.downloads_at(att["url"]) == []


async def test_a_damaged_clip_gets_one_line(fake: FakeDiscord, llava) -> None:
    bot, runtime = await llava()
    damaged = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(range(256)) * 16
    att = fake.add_attachment("broken.mp4", damaged, "video/mp4")
    _, reply = await ask(fake, attachments=[att])
    assert reply["content"] == "⚠️ That video could not be read."
    assert len(fake.downloads_of(att)) == 1


async def test_sound_gets_one_line(fake: FakeDiscord, llava) -> None:
    bot, runtime = await llava()
    voice = fake.add_attachment("voice-message.ogg", sound("ogg", "libopus"), "audio/ogg")
    voice.update(duration_secs=1.0, waveform="AAAA")  # as Discord sends a voice message
    _, reply = await ask(fake, attachments=[voice])
    assert reply["content"] == "⚠️ That file has no picture, only sound."
    # no declared type: downloaded and looked at, only sound in it
    untyped = fake.add_attachment("song.m4a", sound())
    untyped.pop("content_type", None)
    _, reply = await ask(fake, attachments=[untyped])
    assert reply["content"] == "⚠️ That file has no picture, only sound."
    await settled(fake, bot)
    assert fake.downloads_of(voice) == [] and len(fake.downloads_of(untyped)) == 1


# -- watched channels -----------------------------------------------------------------------------------

RED_RULE = {"name": "red-things", "question": "Is this image mostly red?"}
MODERATION = {"watch_channels": [GENERAL_ID], "log_channel": MOD_LOG_ID, "rules": [RED_RULE]}


def gif_of(*colours: str) -> bytes:
    """An animated GIF whose frames are the palette's flat colours, in order (all different:
    Pillow merges equal neighbours)."""
    return animation_of([Image.new("RGB", (64, 48), PALETTE[c]) for c in colours])


def animation_of(frames: list[Image.Image]) -> bytes:
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


def solid(colour: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), PALETTE[colour]).save(buf, "PNG")
    return buf.getvalue()


def alerts(fake: FakeDiscord) -> list[dict]:
    return [s for s in fake.sent_to(MOD_LOG_ID) if s["via"] == "channel"]


@contextlib.asynccontextmanager
async def moderated_bot(fake: FakeDiscord, tiny_pair, state: Path, engine: ColourEngine) -> AsyncIterator[Any]:
    settings = load_settings(overrides={"generation": {"max_tokens": 16, "max_tokens_limit": 128}, "queue": {"per_user_per_minute": 0}})
    runtime = Runtime(settings, engine=engine)
    await runtime.start()
    try:
        overrides = deep_merge({"moderation": MODERATION}, {"queue": {"per_user_per_minute": 0}})
        async with running_bot(fake, tiny_pair, state, runtime=runtime, **overrides) as (bot, _):
            yield bot
    finally:
        await runtime.close()


@pytest.fixture
async def watched(fake: FakeDiscord, tiny_pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The bot watching GENERAL_ID with one rule (red things), answering with the colour engine."""
    monkeypatch.chdir(tmp_path)
    engine = ColourEngine()
    async with moderated_bot(fake, tiny_pair, tmp_path, engine) as bot:
        yield bot, engine


async def checked(bot, message: dict, timeout: float = 10) -> None:
    """Wait until the bot finished with a watched message."""
    store = bot.moderation.store

    def done() -> bool:
        row = store._db.execute("SELECT payload FROM mod_seen WHERE message_id = ?", (int(message["id"]),)).fetchone()
        return row is not None and row[0] is None and bot.jobs_in_flight == 0

    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "the message was never checked"
        await asyncio.sleep(0.02)


def rule_requests(engine: ColourEngine) -> list:
    return [r for r in engine.requests if RULE_SUFFIX in r.question]


async def test_a_rule_is_asked_about_every_frame_and_the_alert_names_the_frame(fake: FakeDiscord, watched) -> None:
    bot, engine = watched
    att = fake.add_attachment("late-red.gif", gif_of("blue", "green", "red", "black"))
    posted = await fake.user_message(BOB_ID, GENERAL_ID, "", attachments=[att])
    alert = await fake.wait_for_sent(lambda s: s["channel_id"] == MOD_LOG_ID)
    [embed] = alert["embeds"]
    assert "red-things" in embed["title"] and embed["url"].endswith(str(posted["id"]))
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Frame"] == "frame 3 of 4"
    await checked(bot, posted)
    assert [len(r.images) for r in rule_requests(engine)] == [1, 1, 1, 1]  # one frame per question

    never = fake.add_attachment("never-red.gif", gif_of("blue", "green", "black", "white"))
    calm = await fake.user_message(BOB_ID, GENERAL_ID, "", attachments=[never])
    await checked(bot, calm)
    await settled(fake, bot)
    assert len(alerts(fake)) == 1 and len(rule_requests(engine)) == 8
    assert bot.moderation.checker.matches["red-things"] == 1


async def test_a_forward_in_a_watched_channel_is_checked(fake: FakeDiscord, watched) -> None:
    bot, engine = watched
    att = fake.add_attachment("red.png", solid("red"), channel_id=CAPTIONS_ID)
    forward = await fake.user_forward(BOB_ID, GENERAL_ID, attachments=[att])
    alert = await fake.wait_for_sent(lambda s: s["channel_id"] == MOD_LOG_ID)
    [embed] = alert["embeds"]
    assert embed["url"].endswith(str(forward["id"])) and "Frame" not in {f["name"] for f in embed["fields"]}
    await checked(bot, forward)
    assert len(fake.downloads_of(att)) == 1


async def test_a_link_embed_that_comes_late_in_a_watched_channel_is_checked(fake: FakeDiscord, watched) -> None:
    bot, engine = watched
    link, proxy, embed = linked_picture(fake, "red.png", solid("red"))
    posted = await fake.user_message(BOB_ID, GENERAL_ID, f"look {link}", embeds=[embed], embeds_later=True)
    alert = await fake.wait_for_sent(lambda s: s["channel_id"] == MOD_LOG_ID)
    assert alert["embeds"][0]["url"].endswith(str(posted["id"]))
    await checked(bot, posted)
    await settled(fake, bot)
    assert len(alerts(fake)) == 1 and len(fake.downloads_at(proxy)) == 1 and fake.third_party_fetches == []
