"""Slash commands /ask and /caption, and the "Describe image" message menu.

Each journals its job, then defers at once (Discord wants a first response
within 3 s) and answers in the original response (and follow-ups); ``/ask thread:true``
makes the response (the question and its picture) the start of a thread and answers
there (see :mod:`cogs.threads`).  The commands are built when the cog loads, so that
``/ask max_tokens`` is bounded by this server's ``generation.max_tokens_limit``.
(No ``from __future__ import annotations`` here: discord.py reads the option
types from the annotations, and the Range bound is a run-time value.)
"""

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.jobs.delivery import DISCORD_OR_NETWORK_ERRORS
from bot.jobs.spec import ImageSource, JobSpec
from bot.reply import NO_IMAGE_IN_MESSAGE, friendly
from cogs.policy import channel_ids, place_refusal
from cogs.reading import image_source, pictures_of, roles_of
from cogs.threads import ARCHIVE_MINUTES, thread_head, thread_name, thread_permissions

if TYPE_CHECKING:
    from bot.client import LlavaBot

log = logging.getLogger(__name__)


class Commands(commands.Cog):
    """Slash commands and the message context menu."""

    def __init__(self, bot: "LlavaBot") -> None:
        self.bot = bot
        self._app_commands: list[app_commands.Command[Any, ..., Any] | app_commands.ContextMenu] = [
            self._make_ask(), self._make_caption(), self._make_describe()
        ]

    async def cog_load(self) -> None:
        for command in self._app_commands:
            self.bot.tree.add_command(command, override=True)

    async def cog_unload(self) -> None:
        for command in self._app_commands:
            kind = getattr(command, "type", discord.AppCommandType.chat_input)
            self.bot.tree.remove_command(command.name, type=kind)

    async def _allowed(self, interaction: discord.Interaction) -> bool:
        """Refuse (ephemerally) where the bot does not answer."""
        cfg = self.bot.settings.discord
        # In a DM the roles are looked up in the servers (one request at most: well within the 3 s to respond).
        allowed = self.bot.moderation.allowed_roles(interaction.guild_id)
        roles = await roles_of(self.bot, interaction.user, allowed)
        is_dm = interaction.guild_id is None
        refusal = place_refusal(cfg, is_dm=is_dm, channel_ids=channel_ids(interaction.channel), role_ids=roles, allowed_roles=allowed)
        if refusal is not None:
            await interaction.response.send_message(friendly(refusal), ephemeral=True)
            self.bot.jobs.record("interaction", interaction.user.id, interaction.channel_id, "refused")
            return False
        return True

    async def _answer(
        self,
        interaction: discord.Interaction,
        source: ImageSource,
        question: str,
        max_tokens: int | None,
        thread_from: discord.Attachment | None = None,
    ) -> None:
        """Journal the job, defer at once (Discord wants a first response within 3 s), answer;
        with ``thread_from`` (the picture), in a thread started from the response."""
        if not await self._allowed(interaction):
            return
        spec = JobSpec(
            kind="interaction",
            channel_id=interaction.channel_id or 0,
            application_id=interaction.application_id,
            token=interaction.token,
            source=source,
            question=question,
            user_id=interaction.user.id,
            max_tokens=max_tokens,
            interaction_id=interaction.id,
            locale=str(interaction.locale),  # the asker's language: the bot's lines and the answer
            answer_in=str(interaction.locale),
        )
        row = await self.bot.jobs.journal_first(spec)
        try:
            await interaction.response.defer(thinking=True)
        except BaseException:
            await self.bot.jobs.forget(row)  # never acknowledged: nothing can be answered
            raise
        moved = await self._into_thread(interaction, spec, thread_from) if thread_from is not None else None
        if moved is not None:
            # the job answers in the thread now: its row is replaced in one transaction (a kill
            # before that answers in the response instead: still one answer)
            await self.bot.jobs.answer(moved, seen=row)
            return
        await self.bot.jobs.answer(spec, journaled=row)

    async def _into_thread(self, interaction: discord.Interaction, spec: JobSpec, image: discord.Attachment) -> JobSpec | None:
        """Make the (deferred) response the question with its picture, start a thread from it, and
        return the job moved there (None: no thread here; the answer goes in the response).  The
        picture is posted again so that the thread's later questions can read it: a command's
        attachment is not the response's."""
        where = f"/ask thread:true from user {interaction.user.id} in channel {interaction.channel_id}"
        if not isinstance(interaction.channel, discord.TextChannel):
            log.info("%s: no thread there (not a text channel); answering in place", where)
            return None
        if not thread_permissions(interaction.app_permissions):
            log.warning("%s: the bot lacks Create Public Threads or Send Messages in Threads there; answering in place", where)
            return None
        if image.size > min(interaction.filesize_limit, self.bot.settings.images.max_bytes):
            log.info("%s: the picture is too large to post again for the thread; answering in place", where)
            return None
        question = spec.question or ""
        try:
            picture = await image.to_file()
            response = await interaction.edit_original_response(
                content=thread_head(question), attachments=[picture], allowed_mentions=discord.AllowedMentions.none()
            )
            thread = await response.create_thread(name=thread_name(question, image.filename), auto_archive_duration=ARCHIVE_MINUTES)
        except DISCORD_OR_NETWORK_ERRORS as exc:
            log.warning("%s: could not start a thread (%s); answering in place", where, exc)
            return None
        log.info("started thread %s on the response to interaction %s", thread.id, interaction.id)
        # the thread has the response's id: the answer is a new message there, no reply
        return replace(
            spec, kind="message", channel_id=thread.id, message_id=thread.id, application_id=None, token=None, interaction_id=None
        )

    def _make_ask(self) -> app_commands.Command:
        limit = self.bot.settings.generation.max_tokens_limit

        @app_commands.command(name="ask", description="Ask a question about an image")
        @app_commands.describe(
            image="The picture to ask about",
            question="What you want to know about it",
            max_tokens=f"Longest answer in tokens (1-{limit})",
            thread="Answer in a new thread, where your next messages are follow-ups",
        )
        async def ask(
            interaction: discord.Interaction,
            image: discord.Attachment,
            question: app_commands.Range[str, 1, 2000],
            max_tokens: app_commands.Range[int, 1, limit] | None = None,
            thread: bool = False,
        ) -> None:
            """Ask a question about an image."""
            await self._answer(interaction, image_source(image), question, max_tokens, thread_from=image if thread else None)

        return ask

    def _make_caption(self) -> app_commands.Command:
        @app_commands.command(name="caption", description="Write short alt text for an image")
        @app_commands.describe(image="The picture to caption")
        async def caption(interaction: discord.Interaction, image: discord.Attachment) -> None:
            """Write a short alt-text caption for an image."""
            mod = self.bot.settings.moderation
            await self._answer(interaction, image_source(image), mod.caption_prompt, mod.caption_max_tokens)

        return caption

    def _make_describe(self) -> app_commands.ContextMenu:
        async def describe(interaction: discord.Interaction, message: discord.Message) -> None:
            """Describe the (first) image of a message."""
            cfg = self.bot.settings.discord
            sources = pictures_of(message, cdn_url=cfg.cdn_url, media_url=cfg.media_url).found
            if not sources:
                await interaction.response.send_message(friendly(NO_IMAGE_IN_MESSAGE), ephemeral=True)
                self.bot.jobs.record("interaction", interaction.user.id, interaction.channel_id, "refused")
                return
            await self._answer(interaction, sources[0], self.bot.settings.generation.default_question, None)

        return app_commands.ContextMenu(name="Describe image", callback=describe)


async def setup(bot: "LlavaBot") -> None:
    await bot.add_cog(Commands(bot))
