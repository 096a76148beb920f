"""/rule: a server's moderation rules from Discord: add (on trial unless said
otherwise), remove, trial on or off, list with each rule's track record, and a
test on the images the server's watched channels saw last.

A server that never changed its rules runs the operator's default rules; its
first change makes them its own list (:meth:`ServerStore.adopt_rules`), so an
added rule joins them instead of replacing them.

(No ``from __future__ import annotations``: discord.py reads the option types
from the annotations.)
"""

import dataclasses
import logging
import time
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.i18n import N_
from bot.jobs.delivery import NO_MENTIONS
from bot.moderation.checker import ImageReport, WatchedPost
from bot.moderation.record import RuleRecord
from bot.moderation.servers import ServerRule, server_rules
from bot.queue import QueueClosed
from bot.reply import DISCORD_LIMIT, friendly
from cogs.moderation.access import DEFAULT_PERMISSIONS, MANAGERS_ONLY, MODERATORS_ONLY, may_change, may_read, refuse
from cogs.moderation.watch import watched_post
from cogs.reading import addressed_to

if TYPE_CHECKING:
    from bot.client import LlavaBot
    from bot.config import ModerationRule

log = logging.getLogger(__name__)

NO_SUCH_RULE = N_("this server has no rule named “{name}” (`/rule list` shows them)")
TOO_MANY_RULES = N_("this server has {count} rules, the most it may have; remove one first")
NOTHING_SEEN = N_("no image was seen in this server's watched channels yet (or none is left to test on)")
LANE_BUSY = N_("the model is busy with other checks; please try again in a minute")
TEST_DEFAULT = 20
TEST_MOST = 50
#: a rule marked "Looks fine" this often (of at least MIN_REVIEWED reviews) is shown as usually wrong
USUALLY_WRONG = 0.5
MIN_REVIEWED = 3


def record_line(record: RuleRecord | None) -> str:
    """One rule's track record, in a line: checks, alerts and the moderators' verdicts."""
    if record is None:
        return "no checks yet"
    parts = [f"{record.checks} checked", f"{record.alerts} alert(s)"]
    if record.alerts:
        parts.append(f"✅ {record.fine} fine · 🗑️ {record.deleted} deleted · 🎯 {record.confirmed} right · {record.open} not reviewed")
    if record.remembered:
        parts.append(f"{record.remembered} repost(s) decided from memory")
    line = " · ".join(parts)
    reviewed = record.fine + record.deleted + record.confirmed
    share = record.wrong_share
    if share is not None and reviewed >= MIN_REVIEWED and share > USUALLY_WRONG:
        line += f"\n  ⚠️ usually wrong: {record.fine} of {reviewed} reviewed alerts were marked fine"
    return line


def rules_text(rules: "list[ModerationRule]", records: dict[str, RuleRecord], own: bool, limit: int) -> str:
    if not rules:
        return "No rules here yet. `/rule add` adds one (on trial first)."
    by_name = {name.lower(): record for name, record in records.items()}
    head = f"**{len(rules)} rule(s)** ({'this server' if own else 'the operator defaults'}; at most {limit})"
    lines = [head]
    for rule in rules:
        trial = " 🧪 trial (pings nobody)" if rule.trial else ""
        role = f" · alerts <@&{rule.alert_role}>" if rule.alert_role and not rule.trial else ""
        where = f" · in {', '.join(f'<#{c}>' for c in rule.channels)}" if rule.channels else ""
        lines.append(f"**{rule.name}**{trial}{role}{where}\n  “{discord.utils.escape_markdown(rule.question)}”")
        lines.append("  " + record_line(by_name.get(rule.name.lower())))
    text = "\n".join(lines)
    return text if len(text) <= DISCORD_LIMIT else text[: DISCORD_LIMIT - 1] + "…"


class Rules(commands.Cog):
    """/rule: one server's rules, their trials and their track records."""

    group = app_commands.Group(
        name="rule",
        description="Moderation rules in this server: yes/no questions asked about each watched image",
        guild_only=True,
        default_permissions=DEFAULT_PERMISSIONS,
    )

    def __init__(self, bot: "LlavaBot") -> None:
        self.bot = bot

    def _rule(self, guild_id: int, name: str) -> "ModerationRule | None":
        return next((r for r in self.bot.moderation.mod_for(guild_id).rules if r.name.lower() == name.lower()), None)

    async def _changing(self, interaction: discord.Interaction, name: str) -> discord.Guild | None:
        """Before a change to one rule: the member may make it and the rule exists (else one
        private refusal line, and None); the server's rules are its own list from now on."""
        if not await may_change(self.bot, interaction):
            await refuse(interaction, MANAGERS_ONLY)
            return None
        guild = interaction.guild
        assert guild is not None
        if self._rule(guild.id, name) is None:
            await refuse(interaction, NO_SUCH_RULE.format(name=name))
            return None
        await self._adopt(guild)
        return guild

    async def _adopt(self, guild: discord.Guild) -> None:
        """The defaults this server runs become its own rules, before its first change."""
        watcher = self.bot.moderation
        server = watcher.servers.cached(guild.id)
        if server is not None and server.rules is not None:
            return
        adopted = server_rules(
            watcher.mod.rules,
            channels=lambda c: guild.get_channel_or_thread(c) is not None,
            roles=lambda r: guild.get_role(r) is not None,
        )
        await watcher.servers.adopt_rules(guild.id, adopted)

    @group.command(name="add", description="Add a rule: a yes/no question about each watched image (on trial first)")
    @app_commands.describe(
        name="A short name: letters, digits, - and _",
        question="A yes/no question about the image; “yes” raises an alert",
        alert_role="A role to mention in its alerts (not while on trial)",
        channel="Only images in this channel (default: every watched channel)",
        trial="On trial its alerts ping nobody and offer no delete button (default: true)",
    )
    async def add(
        self,
        interaction: discord.Interaction,
        name: app_commands.Range[str, 1, 40],
        question: app_commands.Range[str, 3, 300],
        alert_role: discord.Role | None = None,
        channel: discord.TextChannel | None = None,
        trial: bool = True,
    ) -> None:
        if not await may_change(self.bot, interaction):
            await refuse(interaction, MANAGERS_ONLY)
            return
        guild = interaction.guild
        assert guild is not None
        if (alert_role is not None and alert_role.guild.id != guild.id) or (channel is not None and channel.guild.id != guild.id):
            await refuse(interaction, "that role or channel is not in this server")
            return
        watcher = self.bot.moderation
        limit = self.bot.settings.moderation.max_server_rules
        count = len(watcher.mod_for(guild.id).rules)
        if count >= limit:
            await refuse(interaction, TOO_MANY_RULES.format(count=count))
            return
        rule = ServerRule(name, question, alert_role.id if alert_role else None, channel.id if channel else None, trial)
        try:
            await self._adopt(guild)
            await watcher.servers.add_rule(guild.id, rule)
        except ValueError as exc:
            await refuse(interaction, str(exc).split(": ", 1)[-1])
            return
        log.info("user %s added rule %s in guild %s (trial %s)", interaction.user.id, name, guild.id, trial)
        lines = [f"✅ Rule **{name}** added{' on trial: its alerts ping nobody until `/rule trial enabled:false`' if trial else ''}."]
        mod = watcher.mod_for(guild.id)
        if not mod.watched_channels:
            lines.append("⚠️ No channel is watched here yet: `/settings channel kind:watch` picks one.")
        if watcher.log_channel(guild.id) is None:
            lines.append("⚠️ No log channel: alerts are not posted until `/settings channel kind:log` sets one.")
        await interaction.response.send_message("\n".join(lines), ephemeral=True, allowed_mentions=NO_MENTIONS)

    @group.command(name="remove", description="Remove a rule (and its track record)")
    @app_commands.describe(name="The rule's name")
    async def remove(self, interaction: discord.Interaction, name: str) -> None:
        guild = await self._changing(interaction, name)
        if guild is None:
            return
        await self.bot.moderation.servers.remove_rule(guild.id, name)
        await self.bot.moderation.record.forget_rule(guild.id, name)
        log.info("user %s removed rule %s in guild %s", interaction.user.id, name, guild.id)
        await interaction.response.send_message(f"✅ Rule **{name}** removed.", ephemeral=True, allowed_mentions=NO_MENTIONS)

    @group.command(name="trial", description="Put a rule on trial (alerts ping nobody) or make it live")
    @app_commands.describe(name="The rule's name", enabled="true: on trial; false: live (mentions its role, offers delete)")
    async def trial(self, interaction: discord.Interaction, name: str, enabled: bool) -> None:
        guild = await self._changing(interaction, name)
        if guild is None:
            return
        await self.bot.moderation.servers.set_trial(guild.id, name, enabled)
        log.info("user %s set trial %s for rule %s in guild %s", interaction.user.id, enabled, name, guild.id)
        if enabled:
            text = f"🧪 Rule **{name}** is on trial: its alerts are marked trial and ping nobody."
        else:
            text = f"✅ Rule **{name}** is live: its alerts mention its role and offer the delete button."
        await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_MENTIONS)

    @group.command(name="list", description="This server's rules, each with its track record (privately)")
    async def list_(self, interaction: discord.Interaction) -> None:
        if not await may_read(self.bot, interaction):
            await refuse(interaction, MODERATORS_ONLY)
            return
        assert interaction.guild_id is not None
        watcher = self.bot.moderation
        records = await watcher.record.records(interaction.guild_id)
        server = watcher.servers.cached(interaction.guild_id)
        own = server is not None and server.rules is not None
        text = rules_text(list(watcher.mod_for(interaction.guild_id).rules), records, own, self.bot.settings.moderation.max_server_rules)
        await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_MENTIONS)

    @group.command(name="test", description="Ask a rule about the last images seen in the watched channels (privately)")
    @app_commands.describe(name="The rule's name", count=f"How many of the latest images (default {TEST_DEFAULT}, at most {TEST_MOST})")
    async def test(
        self, interaction: discord.Interaction, name: str, count: app_commands.Range[int, 1, TEST_MOST] = TEST_DEFAULT
    ) -> None:
        if not await may_read(self.bot, interaction):
            await refuse(interaction, MODERATORS_ONLY)
            return
        guild = interaction.guild
        assert guild is not None
        rule = self._rule(guild.id, name)
        if rule is None:
            await refuse(interaction, NO_SUCH_RULE.format(name=name))
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            text = await self._test(guild, rule, min(count, TEST_MOST))
        except QueueClosed:
            text = friendly(N_("the bot is restarting, please try again in a minute"))
        except Exception:
            log.exception("testing rule %s in guild %s failed", rule.name, guild.id)
            text = friendly("something went wrong on my side, sorry; please try again")
        await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)

    async def _test(self, guild: discord.Guild, rule: "ModerationRule", count: int) -> str:
        """Fetch the latest watched messages again (fresh attachment links; deleted ones are
        skipped), ask the rule about up to ``count`` of their images, and say what matched."""
        started = time.perf_counter()
        posts, skipped = await self._recent_posts(guild, rule, count)
        if not posts:
            return friendly(NOTHING_SEEN)
        matched: list[tuple[WatchedPost, ImageReport]] = []
        undecided = unread = asked = 0
        for post in posts:
            reports = await self.bot.moderation.checker.check(post, only=rule)
            if reports is None:
                return friendly(LANE_BUSY)
            for report in reports:
                asked += 1
                if report.error is not None or not report.verdicts:
                    unread += 1
                elif report.matched:
                    matched.append((post, report))
                elif all(v.matched is None for v in report.verdicts):
                    undecided += 1
        log.info("rule %s tested in guild %s: %d of %d image(s) matched in %.1f s", rule.name, guild.id, len(matched), asked,
                 time.perf_counter() - started)
        head = f"**Rule {rule.name}** on the last {asked} image(s) in the watched channels: **{len(matched)} matched**"
        extra = [f"{undecided} undecided"] if undecided else []
        extra += [f"{unread} could not be read"] if unread else []
        extra += [f"{skipped} deleted message(s) skipped"] if skipped else []
        lines = [head + (f" ({', '.join(extra)})" if extra else "") + "."]
        for n, (post, report) in enumerate(matched, 1):
            verdict = report.matched[0]
            where = f" ({verdict.where})" if verdict.where else ""
            reason = f" — {verdict.reason}" if verdict.reason else ""
            line = f"{n}. [{report.image.filename or 'image'}]({post.jump_url}){where} by <@{post.poster_id}>{reason}"
            if sum(len(x) + 1 for x in lines) + len(line) > DISCORD_LIMIT - 20:
                lines.append(f"… and {len(matched) - n + 1} more")
                break
            lines.append(line)
        return "\n".join(lines)

    async def _recent_posts(self, guild: discord.Guild, rule: "ModerationRule", count: int) -> tuple[list[WatchedPost], int]:
        """The latest watched messages of this server (in the rule's channels, if it names
        any) with their images as they are now, newest first, until ``count`` images; and
        how many were gone."""
        cfg = self.bot.settings.discord
        posts: list[WatchedPost] = []
        images = skipped = 0
        for channel_id, message_id in await self.bot.moderation.record.recent(guild.id, TEST_MOST * 2):
            if images >= count:
                break
            channel = guild.get_channel_or_thread(channel_id)
            if channel is None or not hasattr(channel, "fetch_message"):
                skipped += 1
                continue
            try:
                message = await channel.fetch_message(message_id)
            except (discord.NotFound, discord.Forbidden):
                skipped += 1
                continue
            post = watched_post(message, addressed_to(message, self.bot.user), cdn_url=cfg.cdn_url, media_url=cfg.media_url)
            if rule.channels and not post.channels & set(rule.channels):
                continue  # the rule is kept to other channels
            keep = post.images[: count - images]
            if keep:
                posts.append(dataclasses.replace(post, images=keep))
                images += len(keep)
        return posts, skipped
