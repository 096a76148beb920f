"""LlavaBot: the discord.py client, wired to an already started Runtime.

The model is loaded and warmed before the bot connects (see ``cli.run``);
the cogs are loaded by dotted name in ``setup_hook``, and one that fails to
load is logged and skipped.  Every message the bot sends allows no mentions.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import aiohttp
import discord
import yarl
from discord import app_commands
from discord.ext import commands

from bot.config import Settings
from bot.i18n import guild_locale
from bot.i18n.commands import CatalogTranslator, LocaleTree
from bot.jobs.cancel import CancelButton
from bot.jobs.jobs import Jobs
from bot.jobs.journal import Journal
from bot.moderation.alerts import may_moderate
from bot.moderation.watcher import Watcher
from bot.reply import ADMIN_ONLY, OUR_FAULT, friendly
from bot.runtime import Runtime

log = logging.getLogger(__name__)

EXTENSIONS: tuple[str, ...] = ("cogs.ask", "cogs.commands", "cogs.moderation", "cogs.admin")


def point_at(api_base: str, gateway_url: str | None) -> None:
    """Send REST calls to ``api_base`` and connect to ``gateway_url``.

    discord.py keeps both as class attributes, so this is process-wide: one
    bot per process.
    """
    discord.http.Route.BASE = api_base
    if gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


class LlavaBot(commands.Bot):
    """llava-bot on one gateway connection (what almost every server needs): everything
    llava-bot adds to discord.py's Bot."""

    def __init__(
        self,
        settings: Settings,
        runtime: Runtime,
        *,
        extensions: Sequence[str] = EXTENSIONS,
        sync_commands: bool = False,
        journal: Journal | None = None,
        **options: Any,
    ) -> None:
        intents = discord.Intents.default()
        intents.message_content = True  # privileged: enable it in the developer portal
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            allowed_mentions=discord.AllowedMentions.none(),
            help_command=None,
            tree_cls=LocaleTree,  # a command runs with its asker's locale in effect
            **options,
        )
        self.settings = settings
        self.runtime = runtime
        self.initial_extensions = tuple(extensions)
        self.sync_on_start = sync_commands
        self.started_at = time.monotonic()
        self.journal = journal if journal is not None else Journal(None)
        self._session: aiohttp.ClientSession | None = None
        #: every question's life, from acceptance to its one reply
        self.jobs = Jobs(self, settings, runtime, self.journal)
        #: the moderation features: rule checks, alerts, alt text, kept captions
        self.moderation = Watcher(self, settings, runtime, self.jobs.outcomes)
        #: a moderator may cancel anyone's question (Manage Messages, or the server's moderator roles)
        self.jobs.is_moderator = lambda interaction: may_moderate(self.moderation.mod_for(interaction.guild_id), interaction)

    # -- jobs ----------------------------------------------------------------------

    @property
    def outcomes(self) -> Counter[str]:
        """How questions ended: answered, refused, failed, undeliverable, parked, gave_up."""
        return self.jobs.outcomes

    @property
    def jobs_in_flight(self) -> int:
        """Questions and watched messages between acceptance and their last reply."""
        return self.jobs.in_flight + self.moderation.in_flight

    async def wait_idle(self) -> None:
        """Return once no job (nor watched message) is between acceptance and its reply."""
        while self.jobs_in_flight:
            await self.jobs.wait_idle()
            await self.moderation.wait_idle()

    @property
    def session(self) -> aiohttp.ClientSession:
        """The client session attachments are downloaded with."""
        if self._session is None:
            raise RuntimeError("LlavaBot.setup_hook has not run")
        return self._session

    async def setup_hook(self) -> None:
        # The journal first: what the previous run left is taken aside before
        # any new question can be accepted, so only that is replayed.
        await self.journal.open()
        await self.moderation.open()
        self._session = aiohttp.ClientSession(headers={"User-Agent": "llava-bot"})
        self.jobs.session = self._session
        await self.tree.set_translator(CatalogTranslator())  # command names and descriptions, localized
        for name in self.initial_extensions:
            try:
                await self.load_extension(name)
            except Exception:
                log.exception("could not load extension %s; going on without it", name)
        self.tree.error(self.on_app_command_error)
        self.add_dynamic_items(CancelButton)  # Cancel on notes and streaming answers, this run's and earlier ones'
        self.jobs.start_replay()
        if self.sync_on_start:
            synced = await self.tree.sync()
            log.info("synced %d application commands", len(synced))

    async def close(self) -> None:
        await self.jobs.close()
        await self.moderation.close()
        await super().close()
        if self._session is not None:
            await self._session.close()
        await self.journal.close()

    async def on_ready(self) -> None:
        assert self.user is not None
        log.info("connected as %s (%s) to %d guild(s)", self.user, self.user.id, len(self.guilds))

    # -- who may do what ---------------------------------------------------------

    async def is_admin(self, user: discord.abc.User) -> bool:
        cfg = self.settings.discord
        if user.id in cfg.admin_users or await self.is_owner(user):
            return True
        if cfg.admin_roles and isinstance(user, discord.Member):
            return bool({r.id for r in user.roles} & set(cfg.admin_roles))
        return False

    # -- the one error handler -------------------------------------------------------

    async def on_error(self, event_method: str, /, *args: object, **kwargs: object) -> None:
        log.exception("unhandled error in %s", event_method)

    async def on_command_error(self, ctx: commands.Context[Any], error: commands.CommandError, /) -> None:
        if isinstance(error, commands.CommandNotFound):
            return
        if isinstance(error, commands.CheckFailure):
            await ctx.reply(friendly(ADMIN_ONLY, guild_locale(ctx)), mention_author=False)
            return
        log.error("command %s failed", ctx.command, exc_info=error)
        await ctx.reply(friendly(OUR_FAULT, guild_locale(ctx)), mention_author=False)

    async def on_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        if isinstance(error, app_commands.CheckFailure):
            text = friendly(ADMIN_ONLY)
        else:
            log.error("app command %s failed", interaction.command and interaction.command.name, exc_info=error)
            text = friendly(OUR_FAULT)
        try:
            if interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True)
            else:
                await interaction.response.send_message(text, ephemeral=True)
        except discord.HTTPException:
            log.warning("could not tell the user about the error")


class ShardedLlavaBot(LlavaBot, commands.AutoShardedBot):
    """llava-bot on several gateway connections (shards), for bots in very many servers."""


def make_bot(settings: Settings, runtime: Runtime, **kwargs: Any) -> LlavaBot:
    """A plain bot, or a sharded one when ``discord.shard_count`` is set ("auto": Discord's recommendation)."""
    shards = settings.discord.shard_count
    if shards is None:
        return LlavaBot(settings, runtime, **kwargs)
    count = None if shards == "auto" else int(shards)
    return ShardedLlavaBot(settings, runtime, shard_count=count, **kwargs)
