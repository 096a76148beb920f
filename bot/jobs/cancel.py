"""The Cancel button on a question's "⏳ in line" note and on its answer while it streams.

The button's custom id names the job by its nonce key (:func:`bot.jobs.delivery.job_nonce`,
the same in every run: it comes from the journaled spec), so a press works on a
note posted before a restart too: it is a :class:`discord.ui.DynamicItem`,
registered once (``client.add_dynamic_items(CancelButton)``), and the bot's
:class:`bot.jobs.jobs.Jobs` finds the job by that key.

Who may press: the asker, or a moderator (Manage Messages there, or one of the
server's moderator roles).  Anyone else gets one private refusal line.  The
reply itself becomes "Cancelled." through the job's own delivery (exactly one
reply), and the button is gone from every final answer.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import discord

from bot.i18n import N_, translate

log = logging.getLogger(__name__)

PREFIX = "llava-bot:cancel:"
#: the button's label, in the locale in effect (the job's: the view is made in its task)
CANCEL_LABEL = N_("Cancel")
TEMPLATE = re.compile(re.escape(PREFIX) + r"(?P<key>[0-9a-f]{16})")


class CancelButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=TEMPLATE):
    """One job's Cancel button (the job's key is in its custom id)."""

    def __init__(self, key: str) -> None:
        super().__init__(discord.ui.Button(style=discord.ButtonStyle.secondary, label=translate(CANCEL_LABEL), emoji="✖️", custom_id=PREFIX + key))
        self.key = key

    @classmethod
    async def from_custom_id(  # type: ignore[override]
        cls, interaction: discord.Interaction, item: discord.ui.Button[Any], match: re.Match[str], /
    ) -> CancelButton:
        return cls(match["key"])

    async def callback(self, interaction: discord.Interaction) -> None:
        jobs = getattr(interaction.client, "jobs", None)
        if jobs is None:
            log.error("a Cancel button was pressed on a client without jobs")
            return
        await jobs.cancel_pressed(interaction, self.key)


def cancel_view(key: str) -> discord.ui.View:
    """The view a waiting or streaming reply carries (no timeout: it lives as long as the job)."""
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(key))
    return view
