"""Rule alerts in the moderation log channel, and their buttons.

An alert is one message: the rule's role mention (the only mention it may
make: allowed mentions name exactly that role, or nothing) and an embed with
the rule's name, the model's reason, the caption, the poster, the channel, a
jump link and the image's thumbnail (the attachment's own URL: nothing is
uploaded again).  Model text only ever goes into the embed, where nothing
pings.

The buttons survive restarts: :class:`AlertView` has no timeout and stable
custom ids, and one instance is registered with ``bot.add_view`` at start-up.
A press reads everything it needs from the alert itself (the embed's link),
so it works on alerts posted by an earlier process.  Only moderators
(``moderation.moderator_roles``, or Manage Messages) may press; anyone else
gets a one-line ephemeral refusal.
"""

from __future__ import annotations

import datetime
import logging
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import discord

from bot.jobs.delivery import NO_MENTIONS
from bot.reply import friendly

if TYPE_CHECKING:
    from bot.config import ModerationRule, ModerationSettings
    from bot.moderation.checker import ImageReport, Verdict, WatchedPost

log = logging.getLogger(__name__)

FINE_ID = "llava-bot:alert:fine"
DELETE_ID = "llava-bot:alert:delete"

ONLY_MODERATORS = "only moderators can use these buttons"
CANNOT_DELETE_THERE = "I am not allowed to delete messages in that channel"
NO_LINK = "this alert has no link to a message"
REVIEWED_FIELD = "Reviewed"
ALERT_COLOUR = discord.Colour.orange()
FINE_COLOUR = discord.Colour.green()
DELETED_COLOUR = discord.Colour.dark_grey()
ASSIST_NOTE = "The model assists; a moderator decides."

_JUMP = re.compile(r"/channels/(?:\d+|@me)/(\d+)/(\d+)")


def _cut(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def alert_mentions(rule: ModerationRule) -> tuple[str, discord.AllowedMentions]:
    """The alert's content and allowed mentions: exactly the rule's role, or nothing
    (a rule in trial pings nobody)."""
    if rule.alert_role is None or rule.trial:
        return "", NO_MENTIONS
    allowed = discord.AllowedMentions(everyone=False, users=False, roles=[discord.Object(rule.alert_role)], replied_user=False)
    return f"<@&{rule.alert_role}>", allowed


def alert_embed(rule: ModerationRule, verdict: Verdict, report: ImageReport, post: WatchedPost) -> discord.Embed:
    embed = discord.Embed(
        title=_cut(f"🧪 Trial: rule “{rule.name}” matched" if rule.trial else f"🚩 Rule “{rule.name}” matched", 256),
        url=post.jump_url,
        description=_cut(verdict.reason or "(the model gave no reason)", 1000),
        colour=ALERT_COLOUR,
        timestamp=datetime.datetime.fromtimestamp(post.created, tz=datetime.UTC),
    )
    caption = report.caption.text if report.caption is not None else ""
    embed.add_field(name="Caption", value=_cut(caption or "(no caption)", 1024), inline=False)
    embed.add_field(name="Posted by", value=_cut(f"<@{post.poster_id}> ({post.poster_name})", 1024), inline=True)
    embed.add_field(name="Channel", value=f"<#{post.channel_id}>", inline=True)
    embed.add_field(name="Image", value=_cut(report.image.filename or "image", 1024), inline=True)
    if verdict.where:  # a moving picture: which sampled frame matched
        embed.add_field(name="Frame", value=verdict.where, inline=True)
    embed.set_thumbnail(url=report.image.url)
    embed.set_footer(text=ASSIST_NOTE)
    return embed


def jump_target(message: discord.Message | None) -> tuple[int, int] | None:
    """(channel id, message id) of the message an alert is about, from its embed's link."""
    if message is None or not message.embeds or not message.embeds[0].url:
        return None
    m = _JUMP.search(message.embeds[0].url)
    return (int(m.group(1)), int(m.group(2))) if m else None


def is_moderator(settings: ModerationSettings, user: discord.abc.User, permissions: discord.Permissions | None) -> bool:
    if permissions is not None and permissions.manage_messages:
        return True
    if isinstance(user, discord.Member) and settings.moderator_roles:
        return bool({r.id for r in user.roles} & set(settings.moderator_roles))
    return False


def may_moderate(settings: ModerationSettings, interaction: discord.Interaction) -> bool:
    """Moderators: a role in ``moderation.moderator_roles``, or Manage Messages where they pressed."""
    perms = interaction.permissions if interaction.guild_id is not None else None
    return is_moderator(settings, interaction.user, perms)


class AlertView(discord.ui.View):
    """The buttons under an alert.  ``buttons`` False: only the link (a reviewed alert)."""

    def __init__(
        self,
        settings: ModerationSettings,
        *,
        jump_url: str | None = None,
        can_delete: bool = True,
        buttons: bool = True,
        settings_for: Callable[[int | None], ModerationSettings] | None = None,
    ) -> None:
        super().__init__(timeout=None)
        self.settings = settings
        #: the pressing server's own moderation settings (its moderator roles), when known
        self.settings_for = settings_for
        if buttons:
            fine: discord.ui.Button[AlertView] = discord.ui.Button(style=discord.ButtonStyle.success, label="Looks fine", custom_id=FINE_ID, emoji="✅")
            fine.callback = self._fine  # type: ignore[method-assign]
            self.add_item(fine)
            if can_delete:
                delete: discord.ui.Button[AlertView] = discord.ui.Button(style=discord.ButtonStyle.danger, label="Delete message", custom_id=DELETE_ID, emoji="🗑️")
                delete.callback = self._delete  # type: ignore[method-assign]
                self.add_item(delete)
        if jump_url:
            self.add_item(discord.ui.Button(style=discord.ButtonStyle.link, label="Go to message", url=jump_url))

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        settings = self.settings_for(interaction.guild_id) if self.settings_for is not None else self.settings
        if may_moderate(settings, interaction):
            return True
        await interaction.response.send_message(friendly(ONLY_MODERATORS), ephemeral=True)
        log.info("user %s pressed an alert button and is no moderator", interaction.user.id)
        return False

    async def on_error(self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item[AlertView]) -> None:
        log.error("an alert button failed", exc_info=error)
        try:
            if not interaction.response.is_done():
                await interaction.response.send_message(friendly("something went wrong on my side, sorry"), ephemeral=True)
        except discord.HTTPException:
            pass

    async def _fine(self, interaction: discord.Interaction) -> None:
        await _review(self.settings, interaction, f"✅ Looks fine · {interaction.user.mention} · <t:{int(time.time())}:f>", FINE_COLOUR)

    async def _delete(self, interaction: discord.Interaction) -> None:
        target = jump_target(interaction.message)
        if target is None or interaction.guild is None:
            await interaction.response.send_message(friendly(NO_LINK), ephemeral=True)
            return
        channel_id, message_id = target
        channel = interaction.guild.get_channel_or_thread(channel_id)
        me = interaction.guild.me
        if channel is None or me is None or not channel.permissions_for(me).manage_messages:
            await interaction.response.send_message(friendly(CANNOT_DELETE_THERE), ephemeral=True)
            return
        try:
            await channel.get_partial_message(message_id).delete()  # type: ignore[union-attr]
            what = "🗑️ Message deleted"
        except discord.NotFound:
            what = "🗑️ The message was already gone"
        except discord.Forbidden:
            await interaction.response.send_message(friendly(CANNOT_DELETE_THERE), ephemeral=True)
            return
        log.info("moderator %s deleted message %s after an alert", interaction.user.id, message_id)
        await _review(self.settings, interaction, f"{what} · {interaction.user.mention} · <t:{int(time.time())}:f>", DELETED_COLOUR, link=False)


async def _review(
    settings: ModerationSettings, interaction: discord.Interaction, line: str, colour: discord.Colour, *, link: bool = True
) -> None:
    """Mark the alert reviewed (who, what, when) and take its buttons away."""
    message = interaction.message
    if message is None or not message.embeds:
        await interaction.response.send_message(friendly(NO_LINK), ephemeral=True)
        return
    embed = message.embeds[0]
    done = next((f.value for f in embed.fields if f.name == REVIEWED_FIELD), None)
    if done:
        await interaction.response.send_message(f"Already reviewed: {done}", ephemeral=True, allowed_mentions=NO_MENTIONS)
        return
    embed.colour = colour
    embed.add_field(name=REVIEWED_FIELD, value=line, inline=False)
    view = AlertView(settings, jump_url=embed.url if link else None, buttons=False)
    await interaction.response.edit_message(embed=embed, view=view, allowed_mentions=NO_MENTIONS)
