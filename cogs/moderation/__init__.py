"""Moderation: watched images (captions, rule alerts, alt text) and the moderators' search.

A package: the listener (``watch``) and the slash commands (``search``) are
separate cogs; the alert buttons are registered here, once, so that they work
on alerts posted before a restart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.moderation.alerts import AlertView
from cogs.moderation.search import Search
from cogs.moderation.watch import Moderation

if TYPE_CHECKING:
    from bot.client import LlavaBot


async def setup(bot: LlavaBot) -> None:
    await bot.add_cog(Moderation(bot))
    await bot.add_cog(Search(bot))
    # persistent buttons: stable custom ids, no timeout; a press carries everything it needs
    bot.add_view(AlertView(bot.settings.moderation))
