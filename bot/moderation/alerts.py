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
(the server's moderator roles, or Manage Messages) may press; anyone else
gets a one-line ephemeral refusal.

A rule on trial posts its alerts marked "🧪 Trial", pinging nobody, with no
delete button: "Looks fine" (the rule was wrong) and "Right call" (it was
right) build its track record before it goes live.  Each press is handed to
``on_review`` (the rule's track record and the memory of the image).
"""

from __future__ import annotations

import datetime
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import discord

from bot.i18n import N_, localize, set_locale, translate, variants
from bot.jobs.delivery import NO_MENTIONS
from bot.reply import OUR_FAULT, friendly

if TYPE_CHECKING:
    from bot.config import ModerationRule, ModerationSettings
    from bot.moderation.checker import ImageReport, Verdict, WatchedPost
    from bot.moderation.record import Fate

log = logging.getLogger(__name__)

FINE_ID = "llava-bot:alert:fine"
DELETE_ID = "llava-bot:alert:delete"
CONFIRM_ID = "llava-bot:alert:confirm"

ONLY_MODERATORS = N_("only moderators can use these buttons")
CANNOT_DELETE_THERE = N_("I am not allowed to delete messages in that channel")
NO_LINK = N_("this alert has no link to a message")
REVIEWED_FIELD = N_("Reviewed")
ALERT_COLOUR = discord.Colour.orange()
FINE_COLOUR = discord.Colour.green()
DELETED_COLOUR = discord.Colour.dark_grey()
CONFIRMED_COLOUR = discord.Colour.blurple()
ASSIST_NOTE = N_("The model assists; a moderator decides.")
#: the buttons' labels (in the server's preferred language)
FINE_LABEL = N_("Looks fine")
CONFIRM_LABEL = N_("Right call")
DELETE_LABEL = N_("Delete message")
LINK_LABEL = N_("Go to message")

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


def alert_title(rule: ModerationRule, verdict: Verdict, locale: object = None) -> str:
    if verdict.remembered is not None:
        what = translate(N_("rule “{name}”: posted again after a delete"), locale).format(name=rule.name)
    else:
        what = translate(N_("rule “{name}” matched"), locale).format(name=rule.name)
    trial = translate(N_("🧪 Trial: {what}"), locale).format(what=what)
    return _cut(trial if rule.trial else f"🚩 {what[0].upper()}{what[1:]}", 256)


def alert_embed(rule: ModerationRule, verdict: Verdict, report: ImageReport, post: WatchedPost, locale: object = None) -> discord.Embed:
    """The alert; its labels in ``locale``'s language (the server's preferred one; None: the locale in effect)."""

    def _(text: str) -> str:
        return translate(text, locale)

    embed = discord.Embed(
        title=alert_title(rule, verdict, locale),
        url=post.jump_url,
        description=_cut(verdict.reason or _(N_("(the model gave no reason)")), 1000),
        colour=ALERT_COLOUR,
        timestamp=datetime.datetime.fromtimestamp(post.created, tz=datetime.UTC),
    )
    caption = report.caption.text if report.caption is not None else ""
    embed.add_field(name=_(N_("Caption")), value=_cut(caption or _(N_("(no caption)")), 1024), inline=False)
    embed.add_field(name=_(N_("Posted by")), value=_cut(f"<@{post.poster_id}> ({post.poster_name})", 1024), inline=True)
    embed.add_field(name=_(N_("Channel")), value=f"<#{post.channel_id}>", inline=True)
    embed.add_field(name=_(N_("Image")), value=_cut(report.image.filename or "image", 1024), inline=True)
    if verdict.where:  # a moving picture: which sampled frame matched
        embed.add_field(name=_(N_("Frame")), value=localize(verdict.where, locale), inline=True)
    if verdict.remembered is not None:  # the same (or a near-identical) image was judged before
        decided = verdict.remembered
        embed.add_field(
            name=_(N_("Decided before")),
            value=_(N_("Deleted before by {who} on {day} (the model was not asked again)")).format(
                who=f"<@{decided.by_user}>", day=decided.day
            ),
            inline=False,
        )
    embed.set_thumbnail(url=report.image.url)
    embed.set_footer(text=_(ASSIST_NOTE))
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
    """The buttons under an alert.  ``buttons`` False: only the link (a reviewed alert).
    ``persistent``: every button, for the one instance registered at start-up that
    answers presses on any alert (posted by this process or an earlier one)."""

    def __init__(
        self,
        settings: ModerationSettings,
        *,
        jump_url: str | None = None,
        can_delete: bool = True,
        buttons: bool = True,
        trial: bool = False,
        settings_for: Callable[[int | None], ModerationSettings] | None = None,
        on_review: Callable[[int, Fate, int], Awaitable[None]] | None = None,
        persistent: bool = False,
        locale: object = None,
    ) -> None:
        super().__init__(timeout=None)
        self.settings = settings
        #: the pressing server's own moderation settings (its moderator roles), when known
        self.settings_for = settings_for
        #: (alert message id, fate, moderator id): the track record and the decision memory
        self.on_review = on_review
        if buttons:
            fine: discord.ui.Button[AlertView] = discord.ui.Button(style=discord.ButtonStyle.success, label=translate(FINE_LABEL, locale), custom_id=FINE_ID, emoji="✅")
            fine.callback = self._fine  # type: ignore[method-assign]
            self.add_item(fine)
            if trial or persistent:  # a rule on trial: was it right?  Nothing is deleted on a trial's word.
                right: discord.ui.Button[AlertView] = discord.ui.Button(
                    style=discord.ButtonStyle.secondary, label=translate(CONFIRM_LABEL, locale), custom_id=CONFIRM_ID, emoji="🎯"
                )
                right.callback = self._confirm  # type: ignore[method-assign]
                self.add_item(right)
            if (can_delete and not trial) or persistent:
                delete: discord.ui.Button[AlertView] = discord.ui.Button(style=discord.ButtonStyle.danger, label=translate(DELETE_LABEL, locale), custom_id=DELETE_ID, emoji="🗑️")
                delete.callback = self._delete  # type: ignore[method-assign]
                self.add_item(delete)
        if jump_url:
            self.add_item(discord.ui.Button(style=discord.ButtonStyle.link, label=translate(LINK_LABEL, locale), url=jump_url))

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        set_locale(interaction.locale)  # the presser's language for the private lines (this press's own task)
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
                await interaction.response.send_message(friendly(OUR_FAULT), ephemeral=True)
        except discord.HTTPException:
            pass

    async def _reviewed(self, interaction: discord.Interaction, fate: Fate) -> None:
        if self.on_review is not None and interaction.message is not None:
            await self.on_review(interaction.message.id, fate, interaction.user.id)

    async def _fine(self, interaction: discord.Interaction) -> None:
        line = f"✅ {translate(FINE_LABEL, interaction.guild_locale)} · {interaction.user.mention} · <t:{int(time.time())}:f>"
        await _review(self.settings, interaction, line, FINE_COLOUR, record=lambda: self._reviewed(interaction, "fine"))

    async def _confirm(self, interaction: discord.Interaction) -> None:
        what = translate(N_("Right call (trial)"), interaction.guild_locale)
        line = f"🎯 {what} · {interaction.user.mention} · <t:{int(time.time())}:f>"
        await _review(self.settings, interaction, line, CONFIRMED_COLOUR, record=lambda: self._reviewed(interaction, "confirmed"))

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
            what = "🗑️ " + translate(N_("Message deleted"), interaction.guild_locale)
        except discord.NotFound:
            what = "🗑️ " + translate(N_("The message was already gone"), interaction.guild_locale)
        except discord.Forbidden:
            await interaction.response.send_message(friendly(CANNOT_DELETE_THERE), ephemeral=True)
            return
        log.info("moderator %s deleted message %s after an alert", interaction.user.id, message_id)
        line = f"{what} · {interaction.user.mention} · <t:{int(time.time())}:f>"
        await _review(self.settings, interaction, line, DELETED_COLOUR, link=False, record=lambda: self._reviewed(interaction, "deleted"))


async def _review(
    settings: ModerationSettings,
    interaction: discord.Interaction,
    line: str,
    colour: discord.Colour,
    *,
    link: bool = True,
    record: Callable[[], Awaitable[None]] | None = None,
) -> bool:
    """Mark the alert reviewed (who, what, when) and take its buttons away; False if it was
    reviewed before.  ``record`` (the track record and the decision memory) runs first: an
    alert shown as reviewed has its decision kept, even if the bot dies right after."""
    message = interaction.message
    if message is None or not message.embeds:
        await interaction.response.send_message(friendly(NO_LINK), ephemeral=True)
        return False
    embed = message.embeds[0]
    done = next((f.value for f in embed.fields if f.name in variants(REVIEWED_FIELD)), None)
    if done:
        already = translate(N_("Already reviewed: {review}")).format(review=done)
        await interaction.response.send_message(already, ephemeral=True, allowed_mentions=NO_MENTIONS)
        return False
    if record is not None:
        await record()
    embed.colour = colour
    locale = interaction.guild_locale  # the alert is the server's: its language
    embed.add_field(name=translate(REVIEWED_FIELD, locale), value=line, inline=False)
    view = AlertView(settings, jump_url=embed.url if link else None, buttons=False, locale=locale)
    await interaction.response.edit_message(embed=embed, view=view, allowed_mentions=NO_MENTIONS)
    return True
