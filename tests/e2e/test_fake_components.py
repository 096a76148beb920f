"""The fake Discord's buttons (component interactions), attachment descriptions,
roles and message deletes, against a plain discord.py bot."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import discord
import pytest
from discord.ext import commands

from bot.testing.fake_discord import ALICE_ID, BOB_ID, GENERAL_ID, FakeDiscord, Perm
from bot.testing.fake_discord.ids import FLAG_EPHEMERAL
from tests.e2e.helpers import JPEG, make_bot, wait_for

ROLE_ID = 1300


class Buttons(discord.ui.View):
    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.button(label="Update", custom_id="t:update")
    async def update(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await interaction.response.edit_message(content=f"updated by {interaction.user.id}", view=None)

    @discord.ui.button(label="Private", custom_id="t:private")
    async def private(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await interaction.response.send_message("only you see this", ephemeral=True)

    @discord.ui.button(label="Later", custom_id="t:later")
    async def later(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await interaction.response.defer()
        await interaction.edit_original_response(content="edited after a deferred update")


async def test_buttons_roles_descriptions_and_deletes(fake: FakeDiscord, run_bot: Callable[..., Awaitable[commands.Bot]]) -> None:  # noqa: F811
    fake.add_role(ROLE_ID, "pingable", Perm.EVERYONE_DEFAULT)
    fake.give_role(BOB_ID, ROLE_ID)
    bot = make_bot()
    seen: list[discord.Message] = []
    deleted: list[int] = []

    async def on_message(message: discord.Message) -> None:
        seen.append(message)

    async def on_raw_message_delete(payload: discord.RawMessageDeleteEvent) -> None:
        deleted.append(payload.message_id)

    bot.add_listener(on_message)
    bot.add_listener(on_raw_message_delete)
    await run_bot(bot)
    bot.add_view(Buttons())  # persistent: found by custom id, whatever message it is on
    guild = bot.get_guild(int(fake.guild["id"]))
    assert guild is not None and guild.get_role(ROLE_ID) is not None

    channel = bot.get_channel(GENERAL_ID)
    allowed = discord.AllowedMentions(everyone=False, users=False, roles=[discord.Object(ROLE_ID)])
    sent = await channel.send(f"<@&{ROLE_ID}> <@{ALICE_ID}> look", view=Buttons(), allowed_mentions=allowed)  # type: ignore[union-attr]
    record = await fake.wait_for_sent(lambda s: s["id"] == sent.id)
    assert record["mention_roles"] == [ROLE_ID] and record["mentions"] == []  # only the allowed role
    assert [b["custom_id"] for b in fake.buttons_of(sent.id)] == ["t:update", "t:private", "t:later"]

    it = await fake.press_button(BOB_ID, sent.id, "t:private")
    cb = await fake.wait_for_callback(lambda c: c["interaction_id"] == it.id)
    assert cb["type"] == 4 and cb["data"]["flags"] & FLAG_EPHEMERAL and cb["data"]["content"] == "only you see this"
    assert it.payload["type"] == 3 and it.payload["message"]["id"] == str(sent.id)

    it = await fake.press_button(ALICE_ID, sent.id, "t:later")
    await fake.wait_for_sent(lambda s: s.get("interaction_id") == it.id and s["via"] == "edit")
    assert fake.messages[sent.id]["content"] == "edited after a deferred update"
    assert [c["type"] for c in fake.callbacks if c["interaction_id"] == it.id] == [6]

    it = await fake.press_button(ALICE_ID, sent.id, "t:update")
    update = await fake.wait_for_sent(lambda s: s.get("interaction_id") == it.id)
    assert update["via"] == "component_update" and fake.messages[sent.id]["content"] == f"updated by {ALICE_ID}"
    assert fake.buttons_of(sent.id) == []  # view=None took them away
    with pytest.raises(KeyError):
        await fake.press_button(ALICE_ID, sent.id, "t:update")

    att = fake.add_attachment("cat.jpg", JPEG, description="a grey cat")
    posted = await fake.user_message(BOB_ID, GENERAL_ID, "cat", attachments=[att])
    message = await wait_for(lambda: next((m for m in seen if m.id == int(posted["id"])), None))
    assert message.attachments[0].description == "a grey cat"
    assert ROLE_ID in {r.id for r in message.author.roles}  # type: ignore[union-attr]
    await message.delete()  # the bot's role has Manage Messages
    await wait_for(lambda: int(posted["id"]) in deleted)
    assert int(posted["id"]) not in fake.messages and fake.deleted[-1]["via"] == "channel"
