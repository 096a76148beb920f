"""Moderation: watched images (captions, rule alerts, alt text), the moderators' search,
and each server's settings and rules from Discord (``/settings``, ``/rule``).

A package: the listener (``watch``) and the slash commands (``search``) are
separate cogs; the alert buttons are registered here, once, so that they work
on alerts posted before a restart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.moderation.alerts import AlertView
from cogs.moderation.rules import Rules
from cogs.moderation.search import Search
from cogs.moderation.settings import Settings
from cogs.moderation.watch import Moderation

if TYPE_CHECKING:
    from bot.client import LlavaBot


async def setup(bot: LlavaBot) -> None:
    await bot.add_cog(Moderation(bot))
    await bot.add_cog(Search(bot))
    await bot.add_cog(Settings(bot))
    await bot.add_cog(Rules(bot))
    # persistent buttons: stable custom ids, no timeout; a press carries everything it needs
    watcher = bot.moderation
    bot.add_view(AlertView(watcher.mod, settings_for=watcher.mod_for, on_review=watcher.reviewed, persistent=True))
