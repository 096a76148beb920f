"""The fake's slash command groups, option types, member permissions, a second guild and ephemeral files,
with the real discord.py client (app_commands.Group with subcommands and a subcommand group)."""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.testing.fake_discord import (
    ALICE_ID,
    BOB_ID,
    BOT_ID,
    CAPTIONS_ID,
    GENERAL_ID,
    GUILD_ID,
    MOD_ROLE_ID,
    FakeDiscord,
    Perm,
)
from tests.e2e.helpers import make_bot, wait_for

RunBot = Callable[..., Awaitable[commands.Bot]]

OTHER_GUILD_ID = 5000
OTHER_CHANNEL_ID = 5001
CAROL_ID = 4


def settings_bot(calls: list[dict[str, Any]], errors: list[BaseException]) -> commands.Bot:
    """A bot with ``/settings channel|export`` and ``/rule add`` + ``/rule limit set`` (a subcommand group),
    recording what each callback receives."""
    bot = make_bot()
    manage = discord.Permissions(manage_guild=True)
    settings = app_commands.Group(name="settings", description="Server settings", default_permissions=manage, guild_only=True)
    rule = app_commands.Group(name="rule", description="Rules", default_permissions=manage, guild_only=True)
    limit = app_commands.Group(name="limit", description="Limits", parent=rule)

    def record(interaction: discord.Interaction, **options: Any) -> None:
        calls.append(
            {
                "options": options,
                "guild_id": interaction.guild_id,
                "manage_guild": interaction.permissions.manage_guild,
                "app_manage_guild": interaction.app_permissions.manage_guild,
                "command": interaction.command.qualified_name if interaction.command else None,
            }
        )

    @settings.command(name="channel", description="Watch a channel")
    async def channel(interaction: discord.Interaction, kind: str, channel: discord.TextChannel, enabled: bool) -> None:
        record(interaction, kind=kind, channel=channel, enabled=enabled)
        await interaction.response.send_message(f"{kind} {channel.id} {enabled}", ephemeral=True)

    @settings.command(name="export", description="Export the settings")
    async def export(interaction: discord.Interaction) -> None:
        record(interaction)
        await interaction.response.send_message(
            "here", ephemeral=True, file=discord.File(io.BytesIO(b"[a]\nb = 1\n"), "first.toml")
        )
        await interaction.followup.send(file=discord.File(io.BytesIO(b'[server]\nname = "x"\n'), "settings.toml"), ephemeral=True)

    @rule.command(name="add", description="Add a rule")
    async def add(
        interaction: discord.Interaction,
        role: discord.Role,
        count: int,
        picture: discord.Attachment,
        where: app_commands.AppCommandChannel,
        note: str | None = None,
    ) -> None:
        record(interaction, role=role, count=count, picture=picture, where=where, note=note)
        await interaction.response.send_message("ok", ephemeral=True)

    @limit.command(name="set", description="Set a limit")
    async def set_limit(interaction: discord.Interaction, value: int, strict: bool = False) -> None:
        record(interaction, value=value, strict=strict)
        await interaction.response.send_message("ok", ephemeral=True)

    bot.tree.add_command(settings)
    bot.tree.add_command(rule)

    @bot.tree.error
    async def on_app_command_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        errors.append(error)

    return bot


async def test_groups_option_types_and_default_permissions(fake: FakeDiscord, run_bot: RunBot):
    calls: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    bot = await run_bot(settings_bot(calls, errors))
    synced = await bot.tree.sync()
    assert {c.name for c in synced} == {"settings", "rule"}

    # default_member_permissions round-trips: stored as sent, listed back to discord.py
    stored = fake.find_command("settings", guild_id=None)
    assert stored is not None and stored["default_member_permissions"] == str(Perm.MANAGE_GUILD)
    assert [o["name"] for o in stored["options"]] == ["channel", "export"]
    fetched = {c.name: c for c in await bot.tree.fetch_commands()}
    assert fetched["rule"].default_member_permissions == discord.Permissions(manage_guild=True)

    # subcommand: string, channel (resolved), boolean
    it = await fake.slash_command(
        ALICE_ID, GENERAL_ID, "settings channel", {"kind": "watch", "channel": CAPTIONS_ID, "enabled": True}
    )
    sub = it.payload["data"]["options"][0]
    assert sub["name"] == "channel" and sub["type"] == 1
    assert {o["name"]: (o["type"], o["value"]) for o in sub["options"]} == {
        "kind": (3, "watch"),
        "channel": (7, str(CAPTIONS_ID)),
        "enabled": (5, True),
    }
    resolved_channel = it.payload["data"]["resolved"]["channels"][str(CAPTIONS_ID)]
    assert resolved_channel["name"] == "captions" and resolved_channel["type"] == 0
    await wait_for(lambda: calls)
    assert not errors
    opts = calls[0]["options"]
    assert opts["kind"] == "watch" and opts["enabled"] is True
    assert isinstance(opts["channel"], discord.TextChannel) and opts["channel"].id == CAPTIONS_ID
    assert calls[0]["command"] == "settings channel" and calls[0]["guild_id"] == GUILD_ID

    # role, integer, attachment, raw channel, optional string left out
    att = fake.add_attachment("rule.png", b"\x89PNG\r\n\x1a\n" + b"0" * 20)
    it = await fake.slash_command(
        ALICE_ID, GENERAL_ID, "rule add", {"role": MOD_ROLE_ID, "count": 3, "where": GENERAL_ID}, {"picture": att}
    )
    resolved = it.payload["data"]["resolved"]
    assert set(resolved) == {"roles", "attachments", "channels"}
    await wait_for(lambda: len(calls) == 2)
    assert not errors
    opts = calls[1]["options"]
    assert isinstance(opts["role"], discord.Role) and opts["role"].id == MOD_ROLE_ID and opts["role"].name == "Moderator"
    assert opts["count"] == 3 and isinstance(opts["count"], int)
    assert isinstance(opts["picture"], discord.Attachment) and opts["picture"].filename == "rule.png"
    assert isinstance(opts["where"], app_commands.AppCommandChannel) and opts["where"].id == GENERAL_ID
    assert opts["where"].permissions.manage_guild  # the invoking member's (alice owns the guild)
    assert opts["note"] is None

    # a subcommand group: /rule limit set
    it = await fake.slash_command(ALICE_ID, GENERAL_ID, "rule limit set", {"value": 7, "strict": False})
    group = it.payload["data"]["options"][0]
    assert (group["name"], group["type"]) == ("limit", 2)
    assert group["options"][0]["name"] == "set" and group["options"][0]["type"] == 1
    assert group["options"][0]["options"] == [
        {"name": "value", "type": 4, "value": 7},
        {"name": "strict", "type": 5, "value": False},
    ]
    await wait_for(lambda: len(calls) == 3)
    assert not errors
    assert calls[2]["options"] == {"value": 7, "strict": False} and calls[2]["command"] == "rule limit set"


async def test_member_permissions_from_roles(fake: FakeDiscord, run_bot: RunBot):
    fake.add_user(CAROL_ID, "carol")
    role = fake.grant_manage_server(CAROL_ID)
    assert int(role["permissions"]) & Perm.MANAGE_GUILD and str(role["id"]) in fake.members[CAROL_ID]["roles"]
    calls: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    bot = await run_bot(settings_bot(calls, errors))
    await bot.tree.sync()

    expected = {ALICE_ID: True, BOB_ID: False, CAROL_ID: True}  # owner; no role; a role granting it
    for user in expected:
        it = await fake.slash_command(user, GENERAL_ID, "rule limit set", {"value": 1})
        assert (int(it.payload["member"]["permissions"]) & Perm.MANAGE_GUILD != 0) is expected[user]
        assert int(it.payload["app_permissions"]) == fake.permissions(BOT_ID, GENERAL_ID)
    await wait_for(lambda: len(calls) == 3)
    assert not errors
    assert [c["manage_guild"] for c in calls] == list(expected.values())
    assert not any(c["app_manage_guild"] for c in calls)  # the bot's own role has no Manage Server

    # given later (a role change before the member's next interaction)
    fake.grant_manage_server(BOB_ID)
    await fake.slash_command(BOB_ID, GENERAL_ID, "rule limit set", {"value": 1})
    await wait_for(lambda: len(calls) == 4)
    assert calls[3]["manage_guild"] is True


async def test_second_guild(fake: FakeDiscord, run_bot: RunBot):
    fake.add_user(CAROL_ID, "carol", member=False)
    fake.add_guild(
        OTHER_GUILD_ID, "Other guild", channels={OTHER_CHANNEL_ID: "lobby"}, members=[BOB_ID, CAROL_ID], owner_id=CAROL_ID
    )
    fake.grant_manage_server(BOB_ID, guild_id=OTHER_GUILD_ID)
    calls: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    seen: list[discord.Message] = []
    bot = settings_bot(calls, errors)

    @bot.event
    async def on_message(message: discord.Message) -> None:
        seen.append(message)

    await run_bot(bot)
    await bot.tree.sync()

    assert [e.d["id"] for e in fake.events if e.t == "GUILD_CREATE"] == [str(GUILD_ID), str(OTHER_GUILD_ID)]
    assert {g.id for g in bot.guilds} == {GUILD_ID, OTHER_GUILD_ID}
    other = bot.get_guild(OTHER_GUILD_ID)
    assert other is not None and other.name == "Other guild" and other.owner_id == CAROL_ID
    assert [c.id for c in other.text_channels] == [OTHER_CHANNEL_ID] and other.me.id == BOT_ID
    first = bot.get_guild(GUILD_ID)
    assert first is not None and OTHER_CHANNEL_ID not in {c.id for c in first.channels}

    msg = await fake.user_message(BOB_ID, OTHER_CHANNEL_ID, "hello over there")
    assert msg["guild_id"] == str(OTHER_GUILD_ID)
    await wait_for(lambda: seen)
    assert seen[0].guild is not None and seen[0].guild.id == OTHER_GUILD_ID and seen[0].channel.id == OTHER_CHANNEL_ID
    assert isinstance(seen[0].author, discord.Member) and seen[0].author.guild.id == OTHER_GUILD_ID
    await seen[0].channel.send("hi")
    sent = await fake.wait_for_sent(lambda s: s["channel_id"] == OTHER_CHANNEL_ID)
    assert sent["guild_id"] == OTHER_GUILD_ID

    # bob manages the other server, not the first
    it = await fake.slash_command(
        BOB_ID, OTHER_CHANNEL_ID, "settings channel", {"kind": "watch", "channel": OTHER_CHANNEL_ID, "enabled": False}
    )
    assert it.payload["guild_id"] == str(OTHER_GUILD_ID)
    await fake.slash_command(BOB_ID, GENERAL_ID, "settings channel", {"kind": "watch", "channel": GENERAL_ID, "enabled": True})
    await wait_for(lambda: len(calls) == 2)
    assert not errors
    assert [(c["guild_id"], c["manage_guild"]) for c in calls] == [(OTHER_GUILD_ID, True), (GUILD_ID, False)]
    ch = calls[0]["options"]["channel"]
    assert isinstance(ch, discord.TextChannel) and ch.guild.id == OTHER_GUILD_ID and calls[0]["options"]["enabled"] is False

    # guild-scoped commands synced to the second guild are found by the tree through data.guild_id
    bot.tree.copy_global_to(guild=discord.Object(OTHER_GUILD_ID))
    await bot.tree.sync(guild=discord.Object(OTHER_GUILD_ID))
    assert {c["name"] for c in fake.guild_commands(OTHER_GUILD_ID)} == {"settings", "rule"}
    it = await fake.slash_command(CAROL_ID, OTHER_CHANNEL_ID, "rule limit set", {"value": 2})
    assert it.payload["data"]["guild_id"] == str(OTHER_GUILD_ID)
    await wait_for(lambda: len(calls) == 3)
    assert not errors and calls[2]["manage_guild"] is True  # carol owns it


async def test_ephemeral_answer_and_followup_with_file(fake: FakeDiscord, run_bot: RunBot):
    calls: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    bot = await run_bot(settings_bot(calls, errors))
    await bot.tree.sync()
    before = len(fake.events)

    it = await fake.slash_command(ALICE_ID, GENERAL_ID, "settings export")
    followup = await fake.wait_for_sent(lambda s: s["interaction_id"] == it.id and s["via"] == "followup")
    answer = next(s for s in fake.sent if s["interaction_id"] == it.id and s["via"] == "interaction_callback")
    assert not errors
    assert it.ephemeral
    for rec in (answer, followup):
        assert rec["flags"] & discord.MessageFlags.ephemeral.flag
    assert answer["content"] == "here"
    assert [(f["filename"], f["data"]) for f in answer["files"]] == [("first.toml", b"[a]\nb = 1\n")]
    assert [(f["filename"], f["data"]) for f in followup["files"]] == [("settings.toml", b'[server]\nname = "x"\n')]
    assert followup["attachments"][0]["filename"] == "settings.toml"
    # ephemeral messages never reach the gateway
    assert not [e for e in fake.events[before:] if e.t == "MESSAGE_CREATE" and e.d.get("interaction_metadata")]
    assert not [e for e in fake.events[before:] if e.t == "MESSAGE_CREATE" and e.d["author"]["id"] == str(BOT_ID)]
