"""/settings: a server sets the bot up from Discord (channels and roles), shows it,
exports it as TOML and imports it back (after a confirm button).

What a server sets is stored per server in the state database
(:class:`bot.moderation.servers.ServerStore`) and used at once; what it does not
set is the operator's ``[moderation]`` default.  Nothing here reaches the
operator's limits (tokens, queue, images).  See :mod:`cogs.moderation.access`
for who may do what.

(No ``from __future__ import annotations``: discord.py reads the option types
from the annotations.)
"""

import io
import logging
from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.i18n import N_
from bot.jobs.delivery import NO_MENTIONS
from bot.moderation.servers import CHANNEL_FIELDS, ROLE_FIELDS, ServerSettings, diff, export_toml, parse_toml
from bot.reply import DISCORD_LIMIT, friendly
from cogs.moderation.access import (
    DEFAULT_PERMISSIONS,
    MANAGERS_ONLY,
    MODERATORS_ONLY,
    channels_here,
    may_change,
    may_read,
    mentions,
    refuse,
    roles_here,
)

if TYPE_CHECKING:
    from bot.client import LlavaBot

log = logging.getLogger(__name__)

IMPORT_MAX_BYTES = 64 * 1024
NOT_TOML = N_("that file is not a settings file: {error}")
TOO_BIG = N_("that file is too big for a settings file (at most 64 KB)")
IMPORT_WAIT_S = 300.0

CHANNEL_LABELS = {
    "watch": "Watch channels (rules checked, captions kept)",
    "captions": "Caption channels (every image gets a caption)",
    "alt-text": "Alt-text channels (images without alt text get one)",
}
ROLE_LABELS = {"moderator": "Moderator roles", "allowed": "Roles that may ask"}


def _where(server: ServerSettings | None, part: str) -> str:
    return "set here" if server is not None and part in server.parts else "default"


def settings_text(bot: "LlavaBot", guild: discord.Guild) -> str:
    """The server's effective settings, each part marked "set here" or "default"."""
    watcher = bot.moderation
    mod = watcher.mod_for(guild.id)
    server = watcher.servers.cached(guild.id)
    lines = [f"**My settings in {discord.utils.escape_markdown(guild.name)}**"]
    for kind, label in CHANNEL_LABELS.items():
        ids = channels_here(guild, getattr(mod, CHANNEL_FIELDS[kind]))
        lines.append(f"{label}: {mentions(ids, '<#{}>')} · {_where(server, kind)}")
    log_channel = watcher.log_channel(guild.id)
    log_here = channels_here(guild, [log_channel] if log_channel is not None else [])
    lines.append(f"Log channel (alerts, captions): {mentions(log_here, '<#{}>')} · {_where(server, 'log')}")
    moderators = roles_here(guild, mod.moderator_roles)
    lines.append(f"{ROLE_LABELS['moderator']}: {mentions(moderators, '<@&{}>')} (and Manage Messages) · {_where(server, 'moderator')}")
    allowed = roles_here(guild, watcher.allowed_roles(guild.id))
    lines.append(f"{ROLE_LABELS['allowed']}: {mentions(allowed, '<@&{}>', 'everyone')} · {_where(server, 'allowed')}")
    rules = mod.rules
    lines.append(f"Rules: {len(rules)} · {_where(server, 'rules')} · `/rule list` for each one's record")
    for rule in rules:
        trial = " 🧪 trial" if rule.trial else ""
        lines.append(f"- **{rule.name}**{trial}: {discord.utils.escape_markdown(rule.question)}")
    if rules and log_channel is None:
        lines.append("⚠️ No log channel: rule alerts are not posted. `/settings channel kind:log` sets one.")
    gen = bot.settings.generation
    lines.append(
        f"-# Set by the operator, not from Discord: answers up to {gen.max_tokens_limit} tokens, rule answers "
        f"{mod.rule_max_tokens}, captions {mod.caption_max_tokens}; captions kept {mod.keep_days:g} days; "
        f"at most {mod.max_server_rules} rules per server."
    )
    text = "\n".join(lines)
    return text if len(text) <= DISCORD_LIMIT else text[: DISCORD_LIMIT - 1] + "…"


def foreign_ids(guild: discord.Guild, settings: ServerSettings) -> list[str]:
    """Channels and roles in an imported file that are not this server's (one line each)."""
    wrong: list[str] = []
    for key in ("caption_channels", "watch_channels", "alt_text_channels"):
        wrong += [f"{key}: <#{c}>" for c in getattr(settings, key) or () if guild.get_channel_or_thread(c) is None]
    if settings.log_channel and guild.get_channel_or_thread(settings.log_channel) is None:
        wrong.append(f"log_channel: <#{settings.log_channel}>")
    for key in ("moderator_roles", "allowed_roles"):
        wrong += [f"{key}: <@&{r}>" for r in getattr(settings, key) or () if guild.get_role(r) is None]
    for rule in settings.rules or ():
        if rule.channel is not None and guild.get_channel_or_thread(rule.channel) is None:
            wrong.append(f"rule {rule.name}: channel <#{rule.channel}>")
        if rule.alert_role is not None and guild.get_role(rule.alert_role) is None:
            wrong.append(f"rule {rule.name}: alert_role <@&{rule.alert_role}>")
    return wrong


class ImportView(discord.ui.View):
    """Apply an import, or not: only the member who asked may press."""

    def __init__(self, bot: "LlavaBot", guild_id: int, user_id: int, settings: ServerSettings, changes: int) -> None:
        super().__init__(timeout=IMPORT_WAIT_S)
        self.bot, self.guild_id, self.user_id, self.settings, self.changes = bot, guild_id, user_id, settings, changes

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if interaction.user.id == self.user_id and await may_change(self.bot, interaction):
            return True
        await refuse(interaction, "only the member who imported this can confirm it")
        return False

    @discord.ui.button(label="Apply", style=discord.ButtonStyle.danger, emoji="✅")
    async def apply(self, interaction: discord.Interaction, button: discord.ui.Button["ImportView"]) -> None:
        watcher = self.bot.moderation
        before = watcher.servers.cached(self.guild_id) or ServerSettings()
        await watcher.servers.replace(self.guild_id, self.settings)
        kept = {r.name.lower() for r in self.settings.rules or ()}
        for rule in before.rules or ():
            if rule.name.lower() not in kept:
                await watcher.record.forget_rule(self.guild_id, rule.name)
        log.info("user %s imported the settings of guild %s (%d change(s))", interaction.user.id, self.guild_id, self.changes)
        self.stop()
        await interaction.response.edit_message(content=f"✅ Imported: {self.changes} change(s) applied.", view=None)

    @discord.ui.button(label="Cancel", style=discord.ButtonStyle.secondary)
    async def cancel(self, interaction: discord.Interaction, button: discord.ui.Button["ImportView"]) -> None:
        self.stop()
        await interaction.response.edit_message(content="Import cancelled: nothing changed.", view=None)


class Settings(commands.Cog):
    """/settings: one server's channels and roles, from Discord."""

    group = app_commands.Group(
        name="settings",
        description="My settings in this server (channels, roles)",
        guild_only=True,
        default_permissions=DEFAULT_PERMISSIONS,
    )

    def __init__(self, bot: "LlavaBot") -> None:
        self.bot = bot

    @group.command(name="show", description="Show my settings in this server (privately)")
    async def show(self, interaction: discord.Interaction) -> None:
        if not await may_read(self.bot, interaction):
            await refuse(interaction, MODERATORS_ONLY)
            return
        assert interaction.guild is not None
        await interaction.response.send_message(settings_text(self.bot, interaction.guild), ephemeral=True, allowed_mentions=NO_MENTIONS)

    @group.command(name="channel", description="Add or remove a channel of a kind (captions, watch, alt text, log)")
    @app_commands.describe(kind="What the channel is for", channel="The channel", enabled="true: add it; false: remove it")
    async def channel(
        self,
        interaction: discord.Interaction,
        kind: Literal["captions", "watch", "alt-text", "log"],
        channel: discord.TextChannel,
        enabled: bool,
    ) -> None:
        if not await may_change(self.bot, interaction):
            await refuse(interaction, MANAGERS_ONLY)
            return
        guild = interaction.guild
        assert guild is not None
        if channel.guild.id != guild.id:
            await refuse(interaction, "that channel is not in this server")
            return
        await self.bot.moderation.servers.set_channel(guild.id, kind, channel.id, enabled)
        log.info("user %s: guild %s %s %s channel %s", interaction.user.id, guild.id, "added" if enabled else "removed", kind, channel.id)
        done = f"✅ <#{channel.id}> {'is now' if enabled else 'is no longer'} {'the' if kind == 'log' else 'a'} {kind} channel here."
        lines = [done]
        me = guild.me
        if enabled and me is not None:
            perms = channel.permissions_for(me)
            needed = ["view_channel", "read_message_history"] + (["send_messages", "embed_links"] if kind in ("log", "captions", "alt-text") else [])
            missing = [p for p in needed if not getattr(perms, p)]
            if missing:
                lines.append(f"⚠️ I am missing {', '.join(p.replace('_', ' ') for p in missing)} there.")
        await interaction.response.send_message("\n".join(lines), ephemeral=True, allowed_mentions=NO_MENTIONS)

    @group.command(name="role", description="Add or remove a moderator role, or a role allowed to ask me")
    @app_commands.describe(kind="moderator: may review alerts; allowed: may ask me", role="The role", enabled="true: add it; false: remove it")
    async def role(self, interaction: discord.Interaction, kind: Literal["moderator", "allowed"], role: discord.Role, enabled: bool) -> None:
        if not await may_change(self.bot, interaction):
            await refuse(interaction, MANAGERS_ONLY)
            return
        assert interaction.guild_id is not None
        if role.guild.id != interaction.guild_id:
            await refuse(interaction, "that role is not in this server")
            return
        settings = await self.bot.moderation.servers.set_role(interaction.guild_id, kind, role.id, enabled)
        log.info("user %s: guild %s %s %s role %s", interaction.user.id, interaction.guild_id, "added" if enabled else "removed", kind, role.id)
        now = getattr(settings, ROLE_FIELDS[kind]) or ()
        what = {"moderator": "moderator roles", "allowed": "roles that may ask me"}[kind]
        tail = " (none: everyone may ask)" if kind == "allowed" and not now else ""
        await interaction.response.send_message(
            f"✅ {what.capitalize()} here: {mentions(now, '<@&{}>')}{tail}.", ephemeral=True, allowed_mentions=NO_MENTIONS
        )

    @group.command(name="export", description="My settings in this server as a TOML file (privately)")
    async def export(self, interaction: discord.Interaction) -> None:
        if not await may_read(self.bot, interaction):
            await refuse(interaction, MODERATORS_ONLY)
            return
        assert interaction.guild_id is not None
        server = await self.bot.moderation.servers.get(interaction.guild_id)
        data = export_toml(server).encode()
        file = discord.File(io.BytesIO(data), filename=f"llava-bot-settings-{interaction.guild_id}.toml")
        note = "What this server set (anything not in the file is the operator's default). `/settings import` reads it back."
        await interaction.response.send_message(note, file=file, ephemeral=True)

    @group.command(name="import", description="Read settings from a TOML file: shows the changes, applies them on a button")
    @app_commands.describe(file="A file made by /settings export")
    async def import_(self, interaction: discord.Interaction, file: discord.Attachment) -> None:
        if not await may_change(self.bot, interaction):
            await refuse(interaction, MANAGERS_ONLY)
            return
        guild = interaction.guild
        assert guild is not None
        if file.size > IMPORT_MAX_BYTES:
            await refuse(interaction, TOO_BIG)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            text = (await file.read()).decode("utf-8")
            new = parse_toml(text)
        except (ValueError, UnicodeDecodeError) as exc:
            await interaction.followup.send(friendly(NOT_TOML.format(error=str(exc).splitlines()[0])), ephemeral=True, allowed_mentions=NO_MENTIONS)
            return
        except discord.HTTPException as exc:
            log.warning("could not read an imported settings file: %s", exc)
            await interaction.followup.send(friendly(N_("I could not read that file, please try again")), ephemeral=True)
            return
        limit = self.bot.settings.moderation.max_server_rules
        if new.rules is not None and len(new.rules) > limit:
            await interaction.followup.send(friendly(f"that file has {len(new.rules)} rules; a server may have {limit}"), ephemeral=True)
            return
        wrong = foreign_ids(guild, new)
        if wrong:
            await interaction.followup.send(
                friendly("that file names channels or roles that are not in this server: " + "; ".join(wrong[:5])),
                ephemeral=True, allowed_mentions=NO_MENTIONS,
            )
            return
        old = await self.bot.moderation.servers.get(guild.id)
        changes = diff(old, new)
        if not changes:
            await interaction.followup.send("Nothing would change: these are the settings already.", ephemeral=True)
            return
        shown = "\n".join(changes[:30]) + (f"\n… and {len(changes) - 30} more" if len(changes) > 30 else "")
        text = f"**This import would change {len(changes)} thing(s):**\n{shown}"[: DISCORD_LIMIT - 40]
        view = ImportView(self.bot, guild.id, interaction.user.id, new, len(changes))
        await interaction.followup.send(text + "\nApply it?", view=view, ephemeral=True, allowed_mentions=NO_MENTIONS)
