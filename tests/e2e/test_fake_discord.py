"""The real discord.py client (commands.Bot with app commands) against the local fake Discord."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable

import aiohttp
import discord
import discord.gateway
import discord.http
import pytest
from discord import app_commands
from discord.ext import commands

from bot.testing.fake_discord import (
    ALICE_ID,
    APP_ID,
    BOB_ID,
    BOT_ID,
    CAPTIONS_ID,
    DM_CHANNEL_ID,
    GENERAL_ID,
    GUILD_ID,
    MOD_LOG_ID,
    OWNER_ID,
    FakeDiscord,
    Perm,
)
from tests.e2e.helpers import JPEG, make_bot, settled, wait_for


async def test_login_ready_guild_and_heartbeats(fake: FakeDiscord, run_bot: Callable[..., Awaitable[commands.Bot]]):
    fake.heartbeat_interval = 250  # ms, sent in HELLO: see several heartbeats quickly
    bot = make_bot()
    ready = asyncio.Event()

    @bot.event
    async def on_ready() -> None:
        ready.set()

    await run_bot(bot)
    await asyncio.wait_for(ready.wait(), 5)

    # login over REST, JSON answered with a Content-Type discord.py accepts
    assert [(r.method, r.path) for r in fake.requests[:2]] == [("GET", "/users/@me"), ("GET", "/oauth2/applications/@me")]
    assert fake.requests[0].headers["Authorization"] == f"Bot {fake.token}"
    async with aiohttp.ClientSession() as http:
        async with http.get(fake.api_base + "/users/@me", headers={"Authorization": f"Bot {fake.token}"}) as resp:
            assert resp.headers["Content-Type"] == "application/json"
    assert bot.user is not None and bot.user.id == BOT_ID and bot.user.bot
    assert bot.application_id == APP_ID
    assert (await bot.application_info()).owner.id == OWNER_ID

    # gateway: one IDENTIFY, READY + GUILD_CREATE with the model
    assert fake.identifies == 1 and fake.resumes == 0
    assert fake.gateway_connections[0]["encoding"] == "json"
    assert fake.identify_payloads[0]["intents"] == bot.intents.value
    guild = bot.get_guild(GUILD_ID)
    assert guild is not None and guild.name == "Test guild" and not guild.unavailable
    assert guild.owner_id == OWNER_ID
    assert guild.default_role.id == GUILD_ID
    assert {c.id: c.name for c in guild.text_channels} == {GENERAL_ID: "general", CAPTIONS_ID: "captions", MOD_LOG_ID: "mod-log"}
    assert guild.me is not None and guild.me.id == BOT_ID
    mod_log = guild.get_channel(MOD_LOG_ID)
    assert not mod_log.permissions_for(guild.default_role).view_channel
    assert mod_log.permissions_for(guild.me).send_messages
    assert guild.get_member(BOB_ID) is None  # no members intent: only the bot's own member is cached

    # heartbeats flow and are acknowledged (latency is inf until the first ACK)
    before = fake.heartbeats
    await fake.wait_until(lambda: fake.heartbeats >= before + 3, timeout=4)
    assert math.isfinite(bot.latency)
    seqs = [e.seq for e in fake.events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


async def test_on_message_with_attachment_reply(fake: FakeDiscord, run_bot: Callable[..., Awaitable[commands.Bot]]):
    bot = make_bot()
    received: list[discord.Message] = []
    errors: list[BaseException] = []

    @bot.event
    async def on_message(message: discord.Message) -> None:
        received.append(message)
        if message.author.bot:
            return  # real Discord echoes the bot's own messages back
        try:
            data = await message.attachments[0].read()
            await message.reply(
                f"{len(data)} bytes: {message.content}",
                allowed_mentions=discord.AllowedMentions.none(),
                mention_author=False,
            )
        except BaseException as exc:  # surface handler errors in the test
            errors.append(exc)
            raise

    await run_bot(bot)
    att = fake.add_attachment("cat.jpg", JPEG, width=32, height=32)
    assert fake.downloads_of(att) == []
    user_msg = await fake.user_message(BOB_ID, GENERAL_ID, "what is this? @everyone", attachments=[att])

    sent = await fake.wait_for_sent(lambda s: s["channel_id"] == GENERAL_ID)
    assert not errors
    assert sent["via"] == "channel"
    assert sent["content"] == f"{len(JPEG)} bytes: what is this? @everyone"
    assert int(sent["message_reference"]["message_id"]) == int(user_msg["id"])
    assert sent["allowed_mentions"] == {"parse": [], "replied_user": False}
    assert sent["mentions"] == [] and sent["mention_everyone"] is False  # nobody pinged
    downloads = fake.downloads_of(att)
    assert len(downloads) == 1 and downloads[0]["via"] == "cdn"

    first = received[0]
    assert first.author.id == BOB_ID and isinstance(first.channel, discord.TextChannel)
    assert first.attachments[0].filename == "cat.jpg"
    assert first.attachments[0].size == len(JPEG) and first.attachments[0].content_type == "image/jpeg"
    assert first.attachments[0].url.startswith(fake.base_url + "/attachments/")

    # the echo of the bot's reply reached on_message, as a reply, and was ignored
    echo = await wait_for(lambda: next((m for m in received if m.author.id == BOT_ID), None))
    assert echo.id == sent["id"] and echo.reference is not None and echo.reference.message_id == int(user_msg["id"])
    await settled(fake)  # the echo was ignored: nothing more is sent
    assert len(fake.sent) == 1

    # a reply to the bot's message carries the referenced message; a DM arrives on a DMChannel
    reply = await fake.user_message(ALICE_ID, GENERAL_ID, "and now?", attachments=[att], reference_message_id=sent["id"])
    got = await wait_for(lambda: next((m for m in received if m.id == int(reply["id"])), None))
    assert got.reference.resolved is not None and got.reference.resolved.author.id == BOT_ID
    dm = await fake.user_message(ALICE_ID, DM_CHANNEL_ID, "in private", attachments=[att])
    got_dm = await wait_for(lambda: next((m for m in received if m.id == int(dm["id"])), None))
    assert isinstance(got_dm.channel, discord.DMChannel) and got_dm.guild is None
    dm_sent = await fake.wait_for_sent(lambda s: s["channel_id"] == DM_CHANNEL_ID)
    assert dm_sent["guild_id"] is None and dm_sent["content"].endswith("in private")


async def test_app_command_defer_followup_and_message_context_menu(
    fake: FakeDiscord, run_bot: Callable[..., Awaitable[commands.Bot]]
):
    bot = make_bot()
    errors: list[BaseException] = []

    @bot.tree.command(name="ask", description="Ask about an image")
    async def ask(interaction: discord.Interaction, image: discord.Attachment, question: str) -> None:
        await interaction.response.defer(thinking=True)
        data = await image.read()
        await interaction.followup.send(
            f"{image.filename} {len(data)} {question}", allowed_mentions=discord.AllowedMentions.none()
        )

    @bot.tree.context_menu(name="Describe image")
    async def describe(interaction: discord.Interaction, message: discord.Message) -> None:
        await interaction.response.send_message(
            f"target {message.id} by {message.author.id}: {message.content} [{message.attachments[0].filename}]"
        )

    @bot.tree.error
    async def on_app_command_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        errors.append(error)

    await run_bot(bot)
    synced = await bot.tree.sync()
    assert {c.name for c in synced} == {"ask", "Describe image"}
    assert {c["id"] for c in fake.global_commands} == {str(c.id) for c in synced}

    att = fake.add_attachment("dog.png", b"\x89PNG\r\n\x1a\n" + b"0" * 100)
    it = await fake.slash_command(ALICE_ID, GENERAL_ID, "ask", {"image": att, "question": "what breed?"})
    assert it.payload["data"]["options"][0] == {"name": "image", "type": 11, "value": att["id"]}
    sent = await fake.wait_for_sent(lambda s: s["interaction_id"] == it.id)
    assert not errors
    callbacks = [c for c in fake.callbacks if c["interaction_id"] == it.id]
    assert [c["type"] for c in callbacks] == [5]  # deferred, thinking
    assert callbacks[0]["time"] <= sent["time"]
    assert sent["via"] == "followup" and sent["edited_original"]  # fills in the "thinking" message
    assert sent["content"] == "dog.png 108 what breed?"
    assert sent["allowed_mentions"] == {"parse": []}
    assert len(fake.downloads_of(att)) == 1

    target = await fake.user_message(BOB_ID, GENERAL_ID, "look at this", attachments=[att])
    it2 = await fake.message_context_menu(ALICE_ID, GENERAL_ID, "Describe image", int(target["id"]))
    sent2 = await fake.wait_for_sent(lambda s: s["interaction_id"] == it2.id)
    assert not errors
    assert [c["type"] for c in fake.callbacks if c["interaction_id"] == it2.id] == [4]
    assert sent2["via"] == "interaction_callback"
    assert sent2["content"] == f"target {target['id']} by {BOB_ID}: look at this [dog.png]"


async def test_dropped_connection_resumes_and_replays(fake: FakeDiscord, run_bot: Callable[..., Awaitable[commands.Bot]]):
    bot = make_bot()
    seen: list[str] = []
    resumed = asyncio.Event()

    @bot.event
    async def on_message(message: discord.Message) -> None:
        if not message.author.bot:
            seen.append(message.content)

    @bot.event
    async def on_resumed() -> None:
        resumed.set()

    await run_bot(bot)
    await fake.user_message(BOB_ID, GENERAL_ID, "before")
    await wait_for(lambda: seen == ["before"])

    await fake.drop_connection()
    during = asyncio.create_task(fake.user_message(BOB_ID, GENERAL_ID, "during"))  # replayed on RESUME
    await asyncio.wait_for(resumed.wait(), 10)
    await during
    await fake.user_message(BOB_ID, GENERAL_ID, "after")
    await wait_for(lambda: seen == ["before", "during", "after"])

    assert fake.resumes == 1 and fake.identifies == 1
    assert len(fake.gateway_connections) == 2
    seqs = [e.seq for e in fake.events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # still talks REST after the resume
    await bot.get_channel(GENERAL_ID).send("still here")
    assert fake.sent[-1]["content"] == "still here"


async def test_rate_limit_is_retried_and_errors_surface(fake: FakeDiscord, run_bot: Callable[..., Awaitable[commands.Bot]]):
    bot = make_bot()
    await run_bot(bot)
    channel = bot.get_channel(CAPTIONS_ID)

    rule = fake.fail_next("POST", r"^/channels/\d+/messages$", 429, retry_after=0.2)
    msg = await channel.send("hello")
    assert rule.hits == 1
    posts = fake.requests_to("POST", rf"^/channels/{CAPTIONS_ID}/messages$")
    assert [r.status for r in posts] == [429, 200]
    assert posts[1].time - posts[0].time >= 0.2
    sent = fake.sent_to(CAPTIONS_ID)
    assert len(sent) == 1 and sent[0]["content"] == "hello" and sent[0]["id"] == msg.id

    fake.fail_next("POST", r"^/channels/\d+/messages$", 403)
    with pytest.raises(discord.Forbidden) as forbidden:
        await channel.send("nope")
    assert forbidden.value.code == 50013
    fake.fail_next("PATCH", r"^/channels/\d+/messages/\d+$", 404)
    with pytest.raises(discord.NotFound) as missing:
        await msg.edit(content="edited")
    assert missing.value.code == 10008
    assert len(fake.sent_to(CAPTIONS_ID)) == 1


async def test_failures_until_cleared_and_wait_for_request(fake: FakeDiscord, run_bot: Callable[..., Awaitable[commands.Bot]]):
    bot = make_bot()
    await run_bot(bot)
    channel = bot.get_channel(GENERAL_ID)

    # wait_for_request: only an answered request counts, and ``start`` skips the ones already seen
    sending = asyncio.create_task(channel.send("first"))
    rec = await fake.wait_for_request("POST", rf"^/channels/{GENERAL_ID}/messages$")
    assert rec.status == 200 and rec.json["content"] == "first" and not rec.injected
    await sending
    with pytest.raises(TimeoutError):
        await fake.wait_for_request("POST", r"/messages$", timeout=0.2, start=len(fake.requests))

    # times=None: every matching request fails until clear_failures()
    rule = fake.fail_next("POST", r"^/channels/\d+/messages$", 403, times=None)
    for _ in range(2):
        with pytest.raises(discord.Forbidden):
            await channel.send("refused")
    assert rule.hits == 2 and rule.times is None
    failed = await fake.wait_for_request("POST", r"/messages$", start=len(fake.requests) - 1)
    assert failed.status == 403 and failed.injected
    fake.clear_failures()
    assert fake.failures == []
    await channel.send("second")
    assert [s["content"] for s in fake.sent_to(GENERAL_ID)] == ["first", "second"]


async def test_cdn_redirects_are_followed_and_recorded(fake: FakeDiscord):
    att = fake.add_attachment("cat.jpg", JPEG)
    url = fake.add_redirect("/r/cat.jpg", att["url"])
    moved = fake.add_redirect("/r/moved.jpg", att["url"], status=301)
    assert url == fake.base_url + "/r/cat.jpg"
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as resp:
            assert resp.status == 200 and await resp.read() == JPEG
            assert [h.status for h in resp.history] == [302]
        async with http.get(moved, allow_redirects=False) as resp:
            assert resp.status == 301 and resp.headers["Location"] == att["url"]
    assert [(d["path"], d["via"]) for d in fake.downloads] == [
        ("/r/cat.jpg", "redirect"),
        (att["url"].removeprefix(fake.base_url), "cdn"),
        ("/r/moved.jpg", "redirect"),
    ]
    assert len(fake.downloads_of(att)) == 1


async def test_user_edit_and_any_dispatch_reach_the_client(fake: FakeDiscord, run_bot: Callable[..., Awaitable[commands.Bot]]):
    with pytest.raises(RuntimeError):  # no gateway session yet: nothing to dispatch on
        await fake.dispatch("CHANNEL_UPDATE", dict(fake.channels[GENERAL_ID]))
    bot = make_bot()
    edits: list[tuple[str, str, bool]] = []

    @bot.event
    async def on_message_edit(before: discord.Message, after: discord.Message) -> None:
        edits.append((before.content, after.content, after.edited_at is not None))

    await run_bot(bot)
    msg = await fake.user_message(BOB_ID, GENERAL_ID, "helo")
    await wait_for(lambda: bot.get_channel(GENERAL_ID).last_message_id == int(msg["id"]))
    stored = await fake.user_edit(int(msg["id"]), "hello")
    assert stored["content"] == "hello" and stored["edited_timestamp"] is not None
    assert fake.events[-1].t == "MESSAGE_UPDATE" and fake.events[-1].sent
    await wait_for(lambda: edits == [("helo", "hello", True)])

    last_seq = fake.events[-1].seq
    entry = await fake.dispatch("CHANNEL_UPDATE", dict(fake.channels[GENERAL_ID], name="renamed", topic="new topic"))
    assert entry.t == "CHANNEL_UPDATE" and entry.seq == last_seq + 1 and entry.sent
    channel = await wait_for(lambda: (c := bot.get_channel(GENERAL_ID)) is not None and c.name == "renamed" and c)
    assert channel.topic == "new topic"


@pytest.mark.slow
async def test_reconnect_and_invalid_sessions(fake: FakeDiscord, run_bot: Callable[..., Awaitable[commands.Bot]]):
    bot = make_bot()
    seen: list[str] = []

    @bot.event
    async def on_message(message: discord.Message) -> None:
        if not message.author.bot:
            seen.append(message.content)

    await run_bot(bot)
    await fake.wait_until_connected()
    session = fake.session_id

    # op 7: the client closes and resumes the same session
    fake.request_reconnect()
    assert not fake.connected
    await fake.wait_until_connected()
    assert (fake.resumes, fake.identifies, fake.session_id) == (1, 1, session)

    # op 9 resumable: resumes again
    fake.invalidate_session(resumable=True)
    await fake.wait_until(lambda: fake.resumes == 2, what="a second RESUME")
    await fake.wait_until_connected()
    assert fake.identifies == 1 and fake.invalid_sessions == 1

    # op 9 not resumable: a fresh IDENTIFY and a new session
    fake.invalidate_session(resumable=False)
    await fake.wait_until(lambda: fake.identifies == 2, what="a second IDENTIFY")
    await fake.wait_until_connected()
    assert fake.resumes == 2 and fake.invalid_sessions == 2 and fake.session_id != session
    assert len(fake.gateway_connections) == 4

    await fake.user_message(BOB_ID, GENERAL_ID, "still listening")
    await wait_for(lambda: seen == ["still listening"])


async def test_user_context_menu_on_a_guild_command(fake: FakeDiscord, run_bot: Callable[..., Awaitable[commands.Bot]]):
    bot = make_bot()
    guild = discord.Object(id=GUILD_ID)
    errors: list[BaseException] = []

    @bot.tree.context_menu(name="Who is this", guild=guild)
    async def who(interaction: discord.Interaction, member: discord.Member) -> None:
        await interaction.response.send_message(f"{member.id} {member.display_name} {isinstance(member, discord.Member)}")

    @bot.tree.error
    async def on_app_command_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        errors.append(error)

    await run_bot(bot)
    await bot.tree.sync(guild=guild)
    assert fake.global_commands == []
    assert [(c["name"], c["type"], c["guild_id"]) for c in fake.guild_commands()] == [("Who is this", 2, str(GUILD_ID))]

    it = await fake.user_context_menu(ALICE_ID, GENERAL_ID, "Who is this", BOB_ID)
    assert it.payload["data"]["type"] == 2 and it.payload["data"]["target_id"] == str(BOB_ID)
    assert it.payload["data"]["guild_id"] == str(GUILD_ID)  # the tree finds guild commands by it
    sent = await fake.wait_for_sent(lambda s: s["interaction_id"] == it.id)
    assert not errors
    assert [c["type"] for c in fake.callbacks if c["interaction_id"] == it.id] == [4]
    assert sent["content"] == f"{BOB_ID} Bob True"


def test_model_permissions_and_channels():
    fake = FakeDiscord()  # the model needs no server
    assert fake.permissions(OWNER_ID, MOD_LOG_ID) == Perm.ALL
    assert not fake.permissions(BOB_ID, MOD_LOG_ID) & Perm.VIEW_CHANNEL  # @everyone denied
    assert fake.permissions(BOT_ID, MOD_LOG_ID) & Perm.SEND_MESSAGES  # the bot's role allowed
    assert fake.permissions(BOT_ID, GENERAL_ID) & Perm.MANAGE_MESSAGES
    assert not fake.permissions(BOB_ID, GENERAL_ID) & Perm.MANAGE_MESSAGES

    # a member overwrite beats the roles
    secret = fake.add_text_channel(
        2004,
        "secret",
        overwrites=[{"id": str(BOB_ID), "type": 1, "allow": str(Perm.MANAGE_MESSAGES), "deny": str(Perm.SEND_MESSAGES)}],
    )
    assert secret["guild_id"] == str(GUILD_ID) and fake.channels[2004] is secret
    bob_there = fake.permissions(BOB_ID, 2004)
    assert bob_there & Perm.MANAGE_MESSAGES and not bob_there & Perm.SEND_MESSAGES

    # DM channels: one per user, DM permissions whatever the roles
    assert fake.add_dm_channel(ALICE_ID)["id"] == str(DM_CHANNEL_ID)
    bob_dm = fake.add_dm_channel(BOB_ID)
    assert bob_dm["type"] == 1 and bob_dm["recipients"][0]["id"] == str(BOB_ID)
    assert fake.add_dm_channel(BOB_ID) is bob_dm
    assert fake.permissions(BOB_ID, int(bob_dm["id"])) == Perm.DM_DEFAULT
