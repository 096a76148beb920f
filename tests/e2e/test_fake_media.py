"""The fake's pictures that are not attachments (embeds through its media proxy, stickers, forwards),
as the real discord.py client parses them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

import aiohttp
import discord
import pytest
from discord.ext import commands

from bot.testing.fake_discord import (
    BOB_ID,
    CAPTIONS_ID,
    GENERAL_ID,
    GUILD_ID,
    FakeDiscord,
    article_embed,
    embed_media,
    gifv_embed,
    image_embed,
    point_assets_at,
    source_of,
)
from tests.e2e.helpers import JPEG, make_bot, wait_for

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
GIF = b"GIF89a" + bytes(range(64))
MP4 = b"\x00\x00\x00\x18ftypmp42" + bytes(range(64))

RunBot = Callable[..., Awaitable[commands.Bot]]


async def fetch(url: str) -> tuple[int, bytes, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.read(), resp.headers.get("Content-Type", "")


async def listening_bot(run_bot: RunBot) -> tuple[commands.Bot, list[discord.Message]]:
    bot = make_bot()
    received: list[discord.Message] = []

    @bot.event
    async def on_message(message: discord.Message) -> None:
        received.append(message)

    await run_bot(bot)
    return bot, received


@pytest.fixture
def assets_at_fake(fake: FakeDiscord) -> Iterator[None]:
    restore = point_assets_at(fake)
    try:
        yield
    finally:
        restore()


async def test_image_and_article_embeds_come_from_the_media_proxy(fake: FakeDiscord, run_bot: RunBot):
    _, received = await listening_bot(run_bot)
    cat = fake.add_embed_media("cat.png", PNG, source_url="https://example.com/cat.png")
    hero = fake.add_embed_media("hero.jpg", JPEG, source_url="https://news.example.org/img/hero.jpg?w=800")
    assert cat.startswith(fake.media_url + "/external/") and cat.endswith("/https/example.com/cat.png")
    assert source_of(cat) == "https://example.com/cat.png"
    assert source_of(hero) == "https://news.example.org/img/hero.jpg?w=800" and "%3Fw=800" in hero
    embeds = [
        image_embed("https://example.com/cat.png", cat, 64, 48),
        article_embed(
            "https://news.example.org/story",
            "A story",
            description="with a picture",
            image=embed_media("https://news.example.org/img/hero.jpg?w=800", hero, 800, 600),
            provider="Example News",
        ),
    ]
    stored = await fake.user_message(BOB_ID, GENERAL_ID, "https://example.com/cat.png", embeds=embeds)
    message = await wait_for(lambda: received and received[-1])

    first, second = message.embeds
    assert first.type == "image" and first.url == "https://example.com/cat.png"
    assert first.thumbnail.url == "https://example.com/cat.png" and first.thumbnail.proxy_url == cat
    assert (first.thumbnail.width, first.thumbnail.height) == (64, 48) and not first.image
    assert second.type == "article" and second.title == "A story" and second.provider.name == "Example News"
    assert second.image.proxy_url == hero and second.image.url == "https://news.example.org/img/hero.jpg?w=800"

    assert fake.downloads_at(cat) == []
    assert await fetch(first.thumbnail.proxy_url) == (200, PNG, "image/png")
    assert await fetch(second.image.proxy_url) == (200, JPEG, "image/jpeg")
    assert [d["via"] for d in fake.downloads_at(cat)] == ["media_proxy"]
    assert fake.downloads_at(cat)[0]["source_url"] == "https://example.com/cat.png"
    assert len(fake.downloads_at(hero)) == 1
    assert fake.downloads_at("https://example.com/cat.png") == []  # another host: the fake cannot see it

    # REST returns the embeds too
    channel = message.channel
    assert isinstance(channel, discord.TextChannel)
    fetched = await channel.fetch_message(int(stored["id"]))
    assert fetched.embeds[0].thumbnail.proxy_url == cat
    history = [m async for m in channel.history(limit=5)]
    assert history[0].embeds[1].image.proxy_url == hero


async def test_gifv_embed_video_and_still(fake: FakeDiscord, run_bot: RunBot):
    _, received = await listening_bot(run_bot)
    video = fake.add_embed_media("cat.mp4", MP4, source_url="https://media.tenor.com/abcd/AAAPo/cat.mp4")
    still = fake.add_embed_media("cat.png", PNG, source_url="https://media.tenor.com/abcd/AAAAe/cat.png")
    embed = gifv_embed("https://tenor.com/view/cat-12345", video, still)
    await fake.user_message(BOB_ID, GENERAL_ID, "https://tenor.com/view/cat-12345", embeds=[embed])
    message = await wait_for(lambda: received and received[-1])

    gif = message.embeds[0]
    assert gif.type == "gifv" and gif.url == "https://tenor.com/view/cat-12345" and gif.provider.name == "Tenor"
    assert gif.video.url == "https://media.tenor.com/abcd/AAAPo/cat.mp4" and gif.video.proxy_url == video
    assert gif.thumbnail.url == "https://media.tenor.com/abcd/AAAAe/cat.png" and gif.thumbnail.proxy_url == still
    assert await fetch(gif.video.proxy_url) == (200, MP4, "video/mp4")
    assert await fetch(gif.thumbnail.proxy_url) == (200, PNG, "image/png")


async def test_third_party_stand_in_records_a_fetch(fake: FakeDiscord):
    url = fake.third_party_url("https://media.tenor.com/abcd/AAAPo/cat.mp4")
    assert url == fake.base_url + "/third-party/https/media.tenor.com/abcd/AAAPo/cat.mp4"
    assert fake.third_party_fetches == []
    status, _, _ = await fetch(url)
    assert status == 403
    assert [d["path"] for d in fake.third_party_fetches] == ["/third-party/https/media.tenor.com/abcd/AAAPo/cat.mp4"]


async def test_embeds_later_arrive_by_message_update(fake: FakeDiscord, run_bot: RunBot):
    bot, received = await listening_bot(run_bot)
    edits: list[tuple[discord.Message, discord.Message]] = []

    @bot.event
    async def on_message_edit(before: discord.Message, after: discord.Message) -> None:
        edits.append((before, after))

    cat = fake.add_embed_media("cat.png", PNG)
    start = len(fake.events)
    stored = await fake.user_message(
        BOB_ID,
        GENERAL_ID,
        "https://example.com/cat.png",
        embeds=[image_embed("https://example.com/cat.png", cat)],
        embeds_later=True,
    )
    assert [e.t for e in fake.events[start:]] == ["MESSAGE_CREATE", "MESSAGE_UPDATE"]
    assert fake.events[start].d["embeds"] == [] and fake.events[start + 1].d["embeds"][0]["thumbnail"]["proxy_url"] == cat
    before, after = await wait_for(lambda: edits and edits[-1])
    assert before.embeds == []  # as the message came in (discord.py updates its cached copy in place)
    assert received[-1].id == after.id
    assert after.id == int(stored["id"]) and after.embeds[0].thumbnail.proxy_url == cat
    assert after.edited_at is None  # an unfurl is not an edit
    assert await fetch(after.embeds[0].thumbnail.proxy_url) == (200, PNG, "image/png")


async def test_stickers(fake: FakeDiscord, run_bot: RunBot, assets_at_fake: None):
    _, received = await listening_bot(run_bot)
    wave = fake.add_sticker("wave", PNG, 1)
    dance = fake.add_sticker("dance", GIF, 4)
    assert fake.sticker_url(wave) == f"{fake.cdn_url}/stickers/{wave['id']}.png"
    assert fake.sticker_url(dance) == f"{fake.media_url}/stickers/{dance['id']}.gif"
    stored = await fake.user_message(BOB_ID, GENERAL_ID, "", stickers=[wave, dance])
    assert stored["sticker_items"] == [wave, dance]
    message = await wait_for(lambda: received and received[-1])

    png, gif = message.stickers
    assert (png.name, png.format, png.url) == ("wave", discord.StickerFormatType.png, fake.sticker_url(wave))
    assert (gif.name, gif.format, gif.url) == ("dance", discord.StickerFormatType.gif, fake.sticker_url(dance))
    assert await fetch(png.url) == (200, PNG, "image/png")
    assert await fetch(gif.url) == (200, GIF, "image/gif")
    assert [d["via"] for d in fake.downloads_at(gif.url)] == ["sticker"]
    status, _, _ = await fetch(f"{fake.cdn_url}/stickers/{dance['id']}.png")
    assert status == 404  # a GIF sticker is served as .gif only

    full = await png.fetch()
    assert isinstance(full, discord.GuildSticker) and full.guild_id == GUILD_ID and full.url == png.url
    channel = message.channel
    assert isinstance(channel, discord.TextChannel)
    fetched = await channel.fetch_message(int(stored["id"]))
    assert [s.url for s in fetched.stickers] == [png.url, gif.url]


async def test_forwards_carry_snapshots(fake: FakeDiscord, run_bot: RunBot):
    bot, received = await listening_bot(run_bot)
    att = fake.add_attachment("cat.jpg", JPEG, width=32, height=32)
    original = await fake.user_message(BOB_ID, GENERAL_ID, "look", attachments=[att])
    await wait_for(lambda: len(received) == 1)

    forward = await fake.user_forward(BOB_ID, CAPTIONS_ID, int(original["id"]), comment="what is it?")
    await wait_for(lambda: len(received) == 3)
    message, comment = received[1], received[2]
    assert message.content == "" and message.type is discord.MessageType.default and message.flags.forwarded
    assert comment.content == "what is it?" and comment.reference is None
    ref = message.reference
    assert ref is not None and ref.type is discord.MessageReferenceType.forward
    assert (ref.message_id, ref.channel_id, ref.guild_id) == (int(original["id"]), GENERAL_ID, GUILD_ID)
    snap = message.message_snapshots[0]
    assert snap.content == "look" and snap.attachments[0].filename == "cat.jpg"
    assert await fetch(snap.attachments[0].url) == (200, JPEG, "image/jpeg")
    assert len(fake.downloads_of(att)) == 1

    # from a channel nobody here can see: only the snapshot, with embeds and stickers
    cat = fake.add_embed_media("cat.png", PNG)
    wave = fake.add_sticker("wave", PNG)
    hidden_att = fake.add_attachment("dog.jpg", JPEG, channel_id=1234)
    await fake.user_forward(
        BOB_ID,
        GENERAL_ID,
        content="from elsewhere",
        attachments=[hidden_att],
        embeds=[image_embed("https://example.com/cat.png", cat)],
        stickers=[wave],
    )
    hidden = await wait_for(lambda: len(received) == 4 and received[3])
    ref = hidden.reference
    assert ref is not None and ref.type is discord.MessageReferenceType.forward
    assert ref.channel_id not in (GENERAL_ID, CAPTIONS_ID) and ref.guild_id != GUILD_ID
    snap = hidden.message_snapshots[0]
    assert snap.content == "from elsewhere" and snap.stickers[0].name == "wave"
    assert snap.embeds[0].thumbnail.proxy_url == cat
    assert await fetch(snap.attachments[0].url) == (200, JPEG, "image/jpeg")

    # REST: the message and history keep the reference type and the snapshots
    channel = bot.get_channel(CAPTIONS_ID)
    assert isinstance(channel, discord.TextChannel)
    fetched = await channel.fetch_message(int(forward["id"]))
    assert fetched.reference is not None and fetched.reference.type is discord.MessageReferenceType.forward
    assert fetched.message_snapshots[0].attachments[0].url == att["url"]
    history = [m async for m in channel.history(limit=5)]
    assert [bool(m.message_snapshots) for m in history] == [False, True]


async def test_without_message_content_intent_snapshots_are_empty(fake: FakeDiscord, run_bot: RunBot):
    intents = discord.Intents.default()  # no message_content
    bot = commands.Bot(command_prefix="!", intents=intents, guild_ready_timeout=0.05)
    received: list[discord.Message] = []

    @bot.event
    async def on_message(message: discord.Message) -> None:
        received.append(message)

    await run_bot(bot)
    wave = fake.add_sticker("wave", PNG)
    await fake.user_forward(BOB_ID, GENERAL_ID, content="secret", attachments=[fake.add_attachment("a.jpg", JPEG)])
    await fake.user_message(BOB_ID, GENERAL_ID, "hidden", stickers=[wave])
    await wait_for(lambda: len(received) == 2)
    snap = received[0].message_snapshots[0]
    assert snap.content == "" and snap.attachments == []
    assert received[1].content == "" and received[1].stickers[0].name == "wave"  # stickers are not content
