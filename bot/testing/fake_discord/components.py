"""Message components: users pressing buttons (INTERACTION_CREATE type 3), the bot's
UPDATE_MESSAGE / DEFERRED_UPDATE_MESSAGE answers, and roles for tests of who may press."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bot.testing.fake_discord.ids import GUILD_ID, Perm
from bot.testing.fake_discord.records import ApiError, FakeInteraction
from bot.testing.fake_discord.state import FakeState

#: data.type of component interactions in FakeInteraction.command_type
COMPONENT = 0


def _components_of(msg: dict[str, Any]) -> Iterable[dict[str, Any]]:
    """Every component of a message, rows and containers flattened."""
    stack = list(msg.get("components") or [])
    while stack:
        c = stack.pop(0)
        yield c
        stack[:0] = list(c.get("components") or [])


class ComponentsMixin(FakeState):
    """Part of :class:`FakeDiscord`: buttons on the bot's messages, and the roles of members."""

    def add_role(
        self,
        role_id: int,
        name: str,
        permissions: int = Perm.EVERYONE_DEFAULT,
        *,
        position: int = 1,
        mentionable: bool = False,
        guild_id: int = GUILD_ID,
    ) -> dict[str, Any]:
        """Add a role to ``guild_id``. Call before the bot connects (GUILD_CREATE carries the roles)."""
        role = self._role(role_id, name, permissions, position, mentionable=mentionable)
        self._guild_parts(guild_id)[1][role_id] = role
        return role

    def give_role(self, user_id: int, role_id: int) -> None:
        """Give a member a role (of the member's guild the role is in). Call before the bot connects
        (or before the member's next event)."""
        roles = self._guild_parts(self._role_guild(role_id))[2][user_id]["roles"]
        if str(role_id) not in roles:
            roles.append(str(role_id))

    def grant_manage_server(self, user_id: int, *, guild_id: int = GUILD_ID, role_id: int | None = None) -> dict[str, Any]:
        """Give ``user_id`` Manage Server in ``guild_id``: a "Server Manager" role (``role_id``, default a new
        snowflake; reused if it exists) with the @everyone defaults plus MANAGE_GUILD. Returns the role."""
        roles = self._guild_parts(guild_id)[1]
        if role_id is None:
            role_id = next((int(r["id"]) for r in roles.values() if r["name"] == "Server Manager"), None) or self._snowflake()
        role = roles.get(role_id) or self.add_role(role_id, "Server Manager", Perm.EVERYONE_DEFAULT | Perm.MANAGE_GUILD, guild_id=guild_id)
        self.give_role(user_id, role_id)
        return role

    def buttons_of(self, message_id: int) -> list[dict[str, Any]]:
        """The buttons (type 2) a stored message carries now."""
        return [c for c in _components_of(self.messages[int(message_id)]) if c.get("type") == 2]

    async def press_button(self, user_id: int, message_id: int, custom_id: str, *, timeout: float = 10.0) -> FakeInteraction:
        """A user presses the button ``custom_id`` of a stored message -> INTERACTION_CREATE (type 3).

        Raises KeyError when the message has no such enabled button (a user could not press it)."""
        msg = self.messages.get(int(message_id))
        if msg is None:
            raise KeyError(f"no stored message {message_id}")
        button = next((b for b in self.buttons_of(message_id) if b.get("custom_id") == custom_id), None)
        if button is None or button.get("disabled"):
            raise KeyError(f"message {message_id} has no enabled button {custom_id!r}")
        data = {"custom_id": custom_id, "component_type": 2}
        it = self._interaction_base(user_id, int(msg["channel_id"]), 3, data, COMPONENT)
        it.payload["message"] = self._rest_message(msg)
        await self._delivered(self._dispatch("INTERACTION_CREATE", it.payload), timeout)
        return it

    def _component_callback(self, it: FakeInteraction, ctype: int, data: dict[str, Any], files: list[dict[str, Any]]) -> dict[str, Any]:
        """Types 6 and 7 answer a button: 7 edits the message it is on, 6 only acknowledges
        (a later webhook edit of @original edits that message)."""
        if it.command_type != COMPONENT:
            raise ApiError(400, 40043, "Interaction type does not allow this response")
        msg = self.messages.get(int(it.payload["message"]["id"]))
        if msg is None:
            raise ApiError(404, 10008, "Unknown Message")
        it.original_message_id = int(msg["id"])
        if ctype == 7:
            self._apply_edit(msg, data, files)
            self._record_sent(msg, "component_update", data, files, interaction_id=it.id)
            self._echo("MESSAGE_UPDATE", msg)
        return msg
