"""The fake Discord's threads, against the real discord.py client: what Discord's API documentation
says happens when a thread is started (from a message or not), in it, and when it is archived."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import discord
import pytest
from discord.ext import commands

from bot.testing.fake_discord import ALICE_ID, BOB_ID, BOT_ID, BOT_ROLE_ID, GENERAL_ID, GUILD_ID, FakeDiscord, Perm
from bot.testing.fake_discord.ids import FLAG_HAS_THREAD, MSG_THREAD_STARTER, PUBLIC_THREAD
from tests.e2e.helpers import make_bot, wait_for

Run = Callable[..., Awaitable[commands.Bot]]


def events(fake: FakeDiscord, name: str) -> list[dict]:
    return [e.d for e in fake.events if e.t == name]


async def started_bot(fake: FakeDiscord, run_bot: Run) -> tuple[commands.Bot, list[tuple[str, object]]]:
    """A plain discord.py bot that notes the thread events it gets."""
    bot = make_bot()
    seen: list[tuple[str, object]] = []

    @bot.event
    async def on_thread_create(thread: discord.Thread) -> None:
        seen.append(("create", thread))

    @bot.event
    async def on_thread_join(thread: discord.Thread) -> None:
        seen.append(("join", thread))

    @bot.event
    async def on_thread_update(before: discord.Thread, after: discord.Thread) -> None:
        seen.append(("update", after))

    @bot.event
    async def on_message(message: discord.Message) -> None:
        seen.append(("message", message))

    await run_bot(bot)
    return bot, seen


async def test_a_thread_started_from_a_message(fake: FakeDiscord, run_bot: Run) -> None:
    bot, seen = await started_bot(fake, run_bot)
    posted = await fake.user_message(ALICE_ID, GENERAL_ID, "look at this")
    channel = bot.get_channel(GENERAL_ID)
    assert isinstance(channel, discord.TextChannel)
    message = await channel.fetch_message(int(posted["id"]))
    thread = await message.create_thread(name="about this", auto_archive_duration=60)

    # the thread has the message's id, is public, and the bot owns it
    assert thread.id == message.id and thread.parent_id == GENERAL_ID and thread.owner_id == BOT_ID
    assert thread.type is discord.ChannelType.public_thread and thread.auto_archive_duration == 60 and not thread.archived
    request = fake.requests_to("POST", rf"/channels/{GENERAL_ID}/messages/{message.id}/threads$")[0]
    assert request.json["name"] == "about this" and request.json["auto_archive_duration"] == 60
    stored = fake.channels[thread.id]
    assert stored["type"] == PUBLIC_THREAD and stored["guild_id"] == str(GUILD_ID) and stored["thread_metadata"]["create_timestamp"]

    # THREAD_CREATE (newly created), then the bot joins it, then the message says it has a thread
    assert events(fake, "THREAD_CREATE")[-1]["newly_created"] is True
    added = events(fake, "THREAD_MEMBERS_UPDATE")[-1]
    assert added["id"] == str(thread.id) and added["added_members"][0]["user_id"] == str(BOT_ID) and added["member_count"] == 1
    update = events(fake, "MESSAGE_UPDATE")[-1]
    assert update["thread"]["id"] == str(thread.id) and update["flags"] & FLAG_HAS_THREAD
    await wait_for(lambda: any(kind == "create" and getattr(t, "id", None) == thread.id for kind, t in seen))
    cached = bot.get_guild(GUILD_ID).get_thread(thread.id)  # type: ignore[union-attr]
    await wait_for(lambda: cached is not None and cached.me is not None)  # joined: THREAD_MEMBERS_UPDATE

    # the first message of the thread only points at the message it was started from
    marker = fake.thread_messages(thread.id)[0]
    assert marker["type"] == MSG_THREAD_STARTER and marker["content"] == "" and marker["position"] == 0
    assert marker["message_reference"] == {"type": 0, "message_id": posted["id"], "channel_id": str(GENERAL_ID), "guild_id": str(GUILD_ID)}

    # read back over REST: the message with its thread, the thread with the bot's membership
    again = await channel.fetch_message(message.id)
    assert again.flags.has_thread and again.thread is not None and again.thread.id == thread.id
    fetched = await bot.fetch_channel(thread.id)
    assert isinstance(fetched, discord.Thread) and fetched.owner_id == BOT_ID and fetched.me is not None

    # one thread per message
    with pytest.raises(discord.HTTPException) as exc:
        await message.create_thread(name="again")
    assert exc.value.status == 400 and exc.value.code == 160004


async def test_messages_in_a_thread(fake: FakeDiscord, run_bot: Run) -> None:
    bot, seen = await started_bot(fake, run_bot)
    posted = await fake.user_message(ALICE_ID, GENERAL_ID, "start")
    message = await bot.get_channel(GENERAL_ID).fetch_message(int(posted["id"]))  # type: ignore[union-attr]
    thread = await message.create_thread(name="chat")

    sent = await thread.send("first")
    assert sent.channel.id == thread.id
    record = fake.sent_to(thread.id)[-1]
    assert record["message"]["position"] == 1 and record["guild_id"] == GUILD_ID
    said = await fake.user_message(ALICE_ID, thread.id, "second")
    assert said["channel_id"] == str(thread.id) and said["position"] == 2 and said["guild_id"] == str(GUILD_ID)
    got = await wait_for(lambda: next((m for k, m in seen if k == "message" and getattr(m, "id", 0) == int(said["id"])), None))
    assert isinstance(got.channel, discord.Thread) and got.channel.id == thread.id  # type: ignore[attr-defined]
    assert fake.channels[thread.id]["message_count"] == 2 and fake.channels[thread.id]["total_message_sent"] == 2
    # alice joined by posting (the bot, without the members intent, is not told)
    assert ALICE_ID in fake.thread_members[thread.id]
    assert all(a["user_id"] == str(BOT_ID) for e in events(fake, "THREAD_MEMBERS_UPDATE") for a in e["added_members"])

    # the thread's history: newest first, the starter marker last; the parent's history has none of it
    history = [m async for m in thread.history(limit=10)]
    assert [m.content for m in history[:2]] == ["second", "first"]
    assert history[-1].type is discord.MessageType.thread_starter_message
    parent = [m.id async for m in bot.get_channel(GENERAL_ID).history(limit=10)]  # type: ignore[union-attr]
    assert int(said["id"]) not in parent and sent.id not in parent

    # a reply is in its message's channel: a reference to the parent's message is no reply in the thread
    plain = await thread.send("not a reply", reference=message.to_reference(fail_if_not_exists=False))
    assert plain.reference is None
    reply = await thread.send("a reply", reference=got)  # type: ignore[arg-type]
    assert reply.reference is not None and reply.reference.message_id == got.id  # type: ignore[attr-defined]


async def test_a_thread_without_a_message_and_one_a_member_started(fake: FakeDiscord, run_bot: Run) -> None:
    bot, seen = await started_bot(fake, run_bot)
    channel = bot.get_channel(GENERAL_ID)
    assert isinstance(channel, discord.TextChannel)
    lone = await channel.create_thread(name="lone", type=discord.ChannelType.public_thread)
    assert lone.id not in fake.messages and lone.owner_id == BOT_ID and lone.parent_id == GENERAL_ID
    private = await channel.create_thread(name="secret")  # discord.py asks for a private one by default
    assert private.type is discord.ChannelType.private_thread

    posted = await fake.user_message(BOB_ID, GENERAL_ID, "my thing")
    thread = await fake.user_start_thread(BOB_ID, GENERAL_ID, "bob's", int(posted["id"]))
    got = await wait_for(lambda: bot.get_guild(GUILD_ID).get_thread(int(thread["id"])))
    assert got.owner_id == BOB_ID and got.me is None  # the bot is no member of it
    assert any(kind == "create" and getattr(t, "id", None) == got.id for kind, t in seen)
    assert not any(a["user_id"] == str(BOB_ID) for e in events(fake, "THREAD_MEMBERS_UPDATE") for a in e["added_members"])
    assert fake.messages[int(posted["id"])]["flags"] & FLAG_HAS_THREAD


async def test_thread_permissions_are_the_parents(fake: FakeDiscord, run_bot: Run) -> None:
    no_threads, no_talk = 2101, 2102
    deny = lambda bits: [{"id": str(BOT_ROLE_ID), "type": 0, "allow": "0", "deny": str(bits)}]  # noqa: E731
    fake.add_text_channel(no_threads, "no-threads", overwrites=deny(Perm.CREATE_PUBLIC_THREADS))
    fake.add_text_channel(no_talk, "no-talk-in-threads", overwrites=deny(Perm.SEND_MESSAGES_IN_THREADS))
    bot, _ = await started_bot(fake, run_bot)
    guild = bot.get_guild(GUILD_ID)
    assert guild is not None

    first = await fake.user_message(ALICE_ID, no_threads, "here")
    message = await guild.get_channel(no_threads).fetch_message(int(first["id"]))  # type: ignore[union-attr]
    assert not message.channel.permissions_for(guild.me).create_public_threads  # type: ignore[union-attr]
    with pytest.raises(discord.Forbidden) as exc:
        await message.create_thread(name="nope")
    assert exc.value.code == 50013 and int(first["id"]) not in fake.channels

    second = await fake.user_message(ALICE_ID, no_talk, "there")
    talk = guild.get_channel(no_talk)
    thread = await (await talk.fetch_message(int(second["id"]))).create_thread(name="quiet")  # type: ignore[union-attr]
    assert not thread.permissions_for(guild.me).send_messages_in_threads
    await talk.send("the parent is fine")  # type: ignore[union-attr]
    with pytest.raises(discord.Forbidden):
        await thread.send("not in the thread")  # Send Messages does not count in threads


async def test_archived_threads(fake: FakeDiscord, run_bot: Run) -> None:
    bot, seen = await started_bot(fake, run_bot)
    guild = bot.get_guild(GUILD_ID)
    posted = await fake.user_message(ALICE_ID, GENERAL_ID, "start")
    thread = await (await bot.get_channel(GENERAL_ID).fetch_message(int(posted["id"]))).create_thread(name="t")  # type: ignore[union-attr]
    answer = await thread.send("an answer")

    await fake.archive_thread(thread.id)
    await wait_for(lambda: any(kind == "update" and t.archived for kind, t in seen))  # type: ignore[attr-defined]
    assert guild.get_thread(thread.id) is None  # discord.py forgets archived threads
    with pytest.raises(discord.HTTPException) as exc:
        await answer.edit(content="edited")
    assert exc.value.code == 50083

    # a member's message unarchives it (THREAD_UPDATE first): the bot knows the thread again
    said = await fake.user_message(ALICE_ID, thread.id, "back again")
    assert not fake.channels[thread.id]["thread_metadata"]["archived"]
    got = await wait_for(lambda: next((m for k, m in seen if k == "message" and getattr(m, "id", 0) == int(said["id"])), None))
    assert isinstance(got.channel, discord.Thread) and not got.channel.archived  # type: ignore[attr-defined]
    await answer.edit(content="edited")

    # a locked archived thread stays closed to the bot
    await fake.archive_thread(thread.id, locked=True)
    with pytest.raises(discord.HTTPException) as exc:
        await thread.send("no")
    assert exc.value.code == 50083


async def test_active_threads_come_with_the_guild(fake: FakeDiscord, run_bot: Run) -> None:
    bot, _ = await started_bot(fake, run_bot)
    one = await fake.user_message(ALICE_ID, GENERAL_ID, "one")
    two = await fake.user_message(ALICE_ID, GENERAL_ID, "two")
    channel = bot.get_channel(GENERAL_ID)
    active = await (await channel.fetch_message(int(one["id"]))).create_thread(name="active")  # type: ignore[union-attr]
    archived = await (await channel.fetch_message(int(two["id"]))).create_thread(name="archived")  # type: ignore[union-attr]
    await fake.archive_thread(archived.id)
    await bot.close()

    again, _ = await started_bot(fake, run_bot)  # a new session: GUILD_CREATE lists the active threads
    guild = again.get_guild(GUILD_ID)
    assert guild is not None
    kept = guild.get_thread(active.id)
    assert kept is not None and kept.owner_id == BOT_ID and kept.me is not None
    assert guild.get_thread(archived.id) is None
    assert all(c.id not in (active.id, archived.id) for c in guild.channels)  # threads are no guild channels
    listed = await guild.active_threads()
    assert [t.id for t in listed] == [active.id]
