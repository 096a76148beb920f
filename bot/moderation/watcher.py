"""Watched images, from the message to everything that follows: the owner of
the moderation features (the cogs only read events and call it).

For each message with images in a watched channel, once:

1. the message is claimed in the state database (a message Discord delivers
   twice, or one a restart would see again, is checked once);
2. :class:`bot.moderation.Checker` asks the model, in the caption lane;
3. the caption goes where captions go today (a reply, or the log channel)
   in ``moderation.caption_channels``; a suggested alt text is replied in
   ``moderation.alt_text_channels`` for images without one; the captions are
   kept for ``/find`` (``moderation.keep_days``); each rule that matched
   posts one alert (:mod:`bot.moderation.alerts`);
4. each of those steps is recorded as it completes, and the claim is marked
   done at the end.  A bot stopped (or killed) before that checks the
   message again after its restart and skips the steps already recorded;
   every post carries a nonce from the message, so a post that landed just
   before the kill is not made twice while Discord remembers the nonce.

Every server has its own settings (:mod:`bot.moderation.servers`, set from
Discord with ``/settings`` and ``/rule``) over the file's ``[moderation]``
defaults: which channels are watched, where the log channel is, who
moderates, which rules are asked.  A channel, role or rule of one server is
never used for another's images (a default log channel in another server is
not posted to).  Each rule's checks, alerts and the moderators' decisions are
kept per server (:mod:`bot.moderation.record`): the track record ``/rule list``
shows, and the memory that spares a judged image a second alert.

A check that fails is logged, never posted.  Rows of deleted messages are
removed when Discord says so; older ones are purged every hour.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import discord

from bot.i18n import N_, guild_locale, translate
from bot.jobs.delivery import NETWORK_ERRORS, NO_MENTIONS, MessageReplier, deliver_safely, messageable, nonce_key, replier_for
from bot.jobs.in_flight import InFlight
from bot.jobs.jobs import log_job
from bot.jobs.spec import ImageSource, JobSpec
from bot.moderation.alerts import AlertView, alert_embed, alert_mentions
from bot.moderation.captions import CaptionRow, CaptionStore
from bot.moderation.checker import Checker, ImageReport, Verdict, WatchedPost
from bot.moderation.record import Fate, RecordStore
from bot.moderation.servers import ServerStore, effective_allowed_roles
from bot.queue import QueueClosed
from bot.reply import render_parts

if TYPE_CHECKING:
    from bot.config import ModerationRule, ModerationSettings, Settings
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

DAY_S = 86400.0
PURGE_EVERY_S = 3600.0
ALT_NOTE = N_("suggested alt text")


class Watcher:
    """The moderation features of one bot: rule checks, alerts, alt text, kept captions."""

    def __init__(self, client: discord.Client, settings: Settings, runtime: Runtime, outcomes: Counter[str]) -> None:
        self.client = client
        self.settings = settings
        #: the file's [moderation]: the defaults of a server that set nothing
        self.mod = settings.moderation
        self.store = CaptionStore(settings.state.path)
        #: each server's own settings (``/settings``, ``/rule``)
        self.servers = ServerStore(settings.state.path)
        #: each rule's track record and the moderators' decisions, per server
        self.record = RecordStore(settings.state.path)
        self.checker = Checker(
            settings, runtime, lambda: client.session, moderation_for=self.mod_for, recall=self.record.recall  # type: ignore[attr-defined]
        )
        self.outcomes = outcomes
        self._pending = InFlight()
        self._background: list[asyncio.Task[None]] = []

    # -- life ---------------------------------------------------------------------------

    async def open(self) -> None:
        await self.servers.open()
        await self.record.open()
        await self.store.open()
        if self.mod.rules and self.mod.log_channel is None:
            log.warning("moderation.rules are set but moderation.log_channel is not: matches are logged, no alert is posted")
        self._background.append(asyncio.create_task(self._purge_loop(), name="llava-captions-purge"))
        if self.store.leftovers:
            self._background.append(asyncio.create_task(self._replay(), name="llava-watch-replay"))

    async def close(self) -> None:
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._background.clear()
        await self.store.close()
        await self.record.close()
        await self.servers.close()

    @property
    def in_flight(self) -> int:
        """Watched messages between their claim and their last post."""
        return self._pending.count

    async def wait_idle(self) -> None:
        await self._pending.wait_idle()

    # -- the way in -----------------------------------------------------------------------

    def mod_for(self, guild_id: int | None) -> ModerationSettings:
        """A server's moderation settings: its own parts over the file's defaults."""
        return self.servers.effective(self.mod, guild_id)

    def allowed_roles(self, guild_id: int | None) -> list[int]:
        """Who may ask the bot in a server: its own allowed roles, else ``discord.allowed_roles``."""
        return effective_allowed_roles(self.settings.discord.allowed_roles, self.servers.cached(guild_id))

    def watches(self, channel_ids: set[int | None], guild_id: int | None = None) -> bool:
        return bool({c for c in channel_ids if c is not None} & self.mod_for(guild_id).watched_channels)

    def log_channel(self, guild_id: int | None) -> int | None:
        """The server's log channel; a default one that belongs to another server is not its."""
        channel_id = self.mod_for(guild_id).log_channel
        if channel_id is None:
            return None
        channel = self.client.get_channel(channel_id)
        guild = getattr(channel, "guild", None)
        if guild is not None and guild.id != guild_id:
            log.warning("log channel %s belongs to another server than %s: not posting there", channel_id, guild_id)
            return None
        return channel_id

    async def handle(self, post: WatchedPost) -> None:
        """Check a watched message's images, once."""
        if not post.images:
            return
        with self._pending.track():
            try:
                claimed = await self.store.claim(post.message_id, post.to_json())
            except Exception:
                log.exception("could not claim message %s for checking; checking it anyway", post.message_id)
                claimed = True
            if not claimed:
                log.debug("message %s was checked before", post.message_id)
                return
            if post.guild_id is not None:
                try:
                    await self.record.note_seen(post.guild_id, post.channel_id, post.message_id, post.poster_id, post.created)
                except Exception:
                    log.exception("could not note message %s as seen", post.message_id)
            await self._check(post)

    async def _check(self, post: WatchedPost, done: set[str] | None = None) -> None:
        """Check the images, then post what follows; ``done``: the steps an earlier
        run completed for this message (after a restart), skipped now."""
        started = time.perf_counter()
        try:
            reports = await self.checker.check(post)
        except QueueClosed:
            log.info("the bot is stopping: message %s is checked after the restart", post.message_id)
            return
        except Exception:
            log.exception("checking the images of message %s failed", post.message_id)
            reports = []
        if reports is None:  # the caption lane is full: logged (like today's captions), never answered
            log_job(self.outcomes, "channel", None, post.channel_id, "refused", None, time.perf_counter() - started)
        else:
            try:
                await self._deliver(post, reports, started, done or set())
            except Exception:
                log.exception("posting the results for message %s failed", post.message_id)
        await self._done(post.message_id)

    async def _done(self, message_id: int) -> None:
        try:
            await self.store.done(message_id)
        except Exception:
            log.exception("could not mark message %s as checked", message_id)

    async def _deliver(self, post: WatchedPost, reports: list[ImageReport], started: float, done: set[str]) -> None:
        """Each step once: recorded as it completes, so a restart repeats none that was done
        (and each post carries a nonce, for the moment between a post and its record)."""

        async def step(key: str, action: Callable[..., Awaitable[None]], *args: Any) -> None:
            if key in done:
                log.info("message %s: %s was done before the restart", post.message_id, key)
                return
            await action(*args)
            try:
                await self.store.step_done(post.message_id, key)
            except Exception:
                log.exception("could not record step %s of message %s", key, post.message_id)

        if self.checker.posts_caption(post):
            for index, report in enumerate(reports):
                await step(f"caption:{index}", self._post_caption, post, report, started)
        await step("alt", self._post_alt_text, post, reports)
        await self._keep(post, reports)  # a row per image at most (the store's unique key)
        await step("record", self._count_checks, post, reports)
        rules = {rule.name: rule for rule in self.mod_for(post.guild_id).rules}
        for index, report in enumerate(reports):
            for verdict in report.matched:
                rule = rules.get(verdict.rule)
                if rule is None:
                    log.info("rule %s was removed while message %s was checked: no alert", verdict.rule, post.message_id)
                    continue
                log.info("rule %s matched an image of message %s", verdict.rule, post.message_id)
                await step(f"alert:{index}:{verdict.rule}", self._alert, rule, verdict, report, post)

    async def _count_checks(self, post: WatchedPost, reports: list[ImageReport]) -> None:
        """Each rule's track record: the images it was asked about (answered by the model)."""
        if post.guild_id is None:
            return
        counts: Counter[str] = Counter()
        for report in reports:
            for rule in {v.rule for v in report.verdicts if v.remembered is None}:
                counts[rule] += 1
        try:
            if counts:
                await self.record.count_checks(post.guild_id, counts)
        except Exception:
            log.exception("could not count the rule checks of message %s", post.message_id)

    # -- what is posted ---------------------------------------------------------------------

    async def _post_caption(self, post: WatchedPost, report: ImageReport, started: float) -> None:
        """Where captions go today: a reply, or the log channel with a link to the image."""
        if report.caption is None:
            log.info("no caption for %s in channel %s (%s)", report.image.filename, post.channel_id, report.error or "no answer")
            return
        image = report.image
        # created from the post: the caption's nonce (from the spec) is the same if a restart posts it again
        common = dict(
            source=ImageSource(image.url, image.filename, image.size, image.content_type), question=None, user_id=None, lane="caption",
            created=post.created,
        )
        log_channel = self.log_channel(post.guild_id)
        locale = self.locale_of(post.guild_id)
        if log_channel is not None:
            head = "🖼️ " + translate(N_("Caption for {filename} from {poster} in {link}"), locale).format(
                filename=image.filename, poster=post.poster_name, link=post.jump_url
            )
            spec = JobSpec(kind="channel", channel_id=log_channel, head=head, **common)  # type: ignore[arg-type]
        else:
            spec = JobSpec(kind="message", channel_id=post.channel_id, message_id=post.message_id, show_place=False, **common)  # type: ignore[arg-type]
        try:
            replier, _ = await replier_for(self.client, spec)
            delivered = await deliver_safely(replier, render_parts(report.caption, locale=locale))
        except Exception as exc:  # the channel is gone, no access, the network
            log.warning("cannot post a caption in channel %s: %s", spec.channel_id, exc)
            delivered = False
        outcome = "answered" if delivered else "undeliverable"
        log_job(self.outcomes, spec.kind, None, spec.channel_id, outcome, report.caption, time.perf_counter() - started)

    async def _post_alt_text(self, post: WatchedPost, reports: list[ImageReport]) -> None:
        """One short reply, the text first, for the images posted without alt text."""
        alts = [(n, r.alt_text) for n, r in enumerate(reports, 1) if r.alt_text]
        if not alts:
            return
        locale = self.locale_of(post.guild_id)
        if len(post.images) == 1:
            lines = [alts[0][1]]
        else:
            lines = [translate(N_("{alt} (image {n})"), locale).format(alt=alt, n=n) for n, alt in alts]
        text = "\n".join([*lines, "-# " + translate(ALT_NOTE, locale)])[:2000]
        try:
            channel = await messageable(self.client, post.channel_id)
            replier = MessageReplier(
                channel.get_partial_message(post.message_id),  # type: ignore[attr-defined]
                show_place=False,
                nonce=nonce_key("alt", post.channel_id, post.message_id),
            )
            await deliver_safely(replier, [text])
        except Exception as exc:
            log.warning("cannot post alt text in channel %s: %s", post.channel_id, exc)

    async def _keep(self, post: WatchedPost, reports: list[ImageReport]) -> None:
        if self.mod_for(post.guild_id).keep_days <= 0:
            return
        rows = [
            CaptionRow(
                message_id=post.message_id,
                channel_id=post.channel_id,
                guild_id=post.guild_id,
                poster_id=post.poster_id,
                created=post.created,
                link=post.jump_url,
                caption=r.caption.text.strip(),
                filename=r.image.filename,
                rules=tuple(v.rule for v in r.matched),
                position=index,
            )
            for index, r in enumerate(reports)
            if r.caption is not None and r.caption.text.strip()
        ]
        try:
            await self.store.add(rows)
        except Exception:
            log.exception("could not keep the captions of message %s", post.message_id)

    async def _alert(self, rule: ModerationRule, verdict: Verdict, report: ImageReport, post: WatchedPost) -> None:
        log_channel = self.log_channel(post.guild_id)
        if log_channel is None:
            return
        content, allowed = alert_mentions(rule) if self._role_here(rule.alert_role, post.guild_id) else ("", NO_MENTIONS)
        locale = self.locale_of(post.guild_id)  # an alert is the server's: its preferred language
        embed = alert_embed(rule, verdict, report, post, locale)
        view = AlertView(
            self.mod, jump_url=post.jump_url, can_delete=self._can_delete(post.channel_id), trial=rule.trial,
            settings_for=self.mod_for, on_review=self.reviewed, locale=locale,
        )
        # one nonce for the alert across retries (a retried post that had landed is not posted twice)
        nonce = nonce_key("alert", post.message_id, report.image.url, rule.name)
        for attempt in range(3):
            try:
                channel = await messageable(self.client, log_channel)
                sent = await channel.send(content or None, embed=embed, view=view, allowed_mentions=allowed, nonce=nonce)
                await self._record_alert(sent.id, rule, verdict, report, post)
                return
            except discord.NotFound as exc:
                if exc.code != 10008 or nonce.endswith("r"):
                    log.error("could not post the alert of rule %s for message %s: %s", rule.name, post.message_id, exc)
                    return
                nonce += "r"  # the alert a create with this nonce made was deleted: post it anew
            except discord.HTTPException as exc:
                log.error("could not post the alert of rule %s for message %s: %s", rule.name, post.message_id, exc)
                return
            except NETWORK_ERRORS as exc:
                log.warning("network error posting an alert (%s); retrying", exc or type(exc).__name__)
                await asyncio.sleep(0.5 * 2**attempt)
            except Exception:
                log.exception("could not post the alert of rule %s for message %s", rule.name, post.message_id)
                return

    async def _record_alert(self, alert_id: int, rule: ModerationRule, verdict: Verdict, report: ImageReport, post: WatchedPost) -> None:
        if post.guild_id is None:
            return
        try:
            await self.record.add_alert(
                post.guild_id, rule.name, alert_id=alert_id, message_id=post.message_id, channel_id=post.channel_id,
                poster_id=post.poster_id, image_hash=report.image_hash, trial=rule.trial, remembered=verdict.remembered is not None,
                created=post.created,
            )
        except Exception:
            log.exception("could not record the alert of rule %s for message %s", rule.name, post.message_id)

    async def reviewed(self, alert_id: int, fate: Fate, user_id: int) -> None:
        """A moderator judged an alert: its rule's track record, and the memory of the image."""
        try:
            row = await self.record.review(alert_id, fate, user_id)
        except Exception:
            log.exception("could not record the review of alert %s", alert_id)
            return
        if row is not None:
            log.info("alert %s (rule %s, message %s): %s by user %s", alert_id, row.rule, row.message_id, fate, user_id)

    def locale_of(self, guild_id: int | None) -> str | None:
        """A server's preferred locale (None: unknown, English)."""
        return guild_locale(self.client.get_guild(guild_id)) if guild_id is not None else None

    def _role_here(self, role_id: int | None, guild_id: int | None) -> bool:
        """A role to mention exists in the server (a default rule's role may be another server's)."""
        if role_id is None or guild_id is None:
            return role_id is not None
        guild = self.client.get_guild(guild_id)
        return guild is None or guild.get_role(role_id) is not None

    def _can_delete(self, channel_id: int) -> bool:
        """The bot may manage messages where the image was posted."""
        channel = self.client.get_channel(channel_id)
        guild = getattr(channel, "guild", None)
        me = getattr(guild, "me", None)
        if channel is None or me is None:
            return False
        return bool(channel.permissions_for(me).manage_messages)  # type: ignore[union-attr]

    # -- kept captions ------------------------------------------------------------------------

    async def forget_message(self, message_id: int) -> None:
        """Discord says the message is gone: so are its rows."""
        if not self.store.enabled:
            return
        try:
            removed = await self.store.forget_message(message_id)
        except Exception:
            log.exception("could not remove the rows of deleted message %s", message_id)
            return
        if removed:
            log.info("removed %d kept caption(s) of deleted message %s", removed, message_id)

    async def purge(self, now: float | None = None) -> int:
        """Remove captions older than ``moderation.keep_days``; how many went."""
        if not self.store.enabled:
            return 0
        now = time.time() if now is None else now
        keep_s = self.mod.keep_days * DAY_S
        removed = await self.store.purge(now - keep_s, seen_before=now - max(keep_s, 2 * DAY_S))
        if removed:
            log.info("purged %d caption(s) older than %g day(s)", removed, self.mod.keep_days)
        forgotten = await self.record.purge(now - keep_s)
        if forgotten:
            log.info("forgot the images of %d alert(s) older than %g day(s)", forgotten, self.mod.keep_days)
        return removed

    async def forget_member(self, guild_id: int, member_id: int) -> tuple[int, int]:
        """``/forget``: a member's kept captions and remembered images in one server."""
        captions = await self.store.forget_member(member_id, guild_id)
        images = await self.record.forget_member(guild_id, member_id)
        return captions, images

    async def _purge_loop(self) -> None:
        while True:
            try:
                await self.purge()
            except Exception:
                log.exception("purging old captions failed")
            await asyncio.sleep(PURGE_EVERY_S)

    async def _replay(self) -> None:
        """Check what the previous process claimed and never finished."""
        await self.client.wait_until_ready()
        left, self.store.leftovers = self.store.leftovers, []
        for payload in left:
            try:
                post = WatchedPost.from_json(payload)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("dropping an unreadable unchecked message: %s", exc)
                continue
            if time.time() - post.created > self.settings.state.replay_max_age_s:
                log.warning("message %s is too old to check now", post.message_id)
                await self._done(post.message_id)
                continue
            with self._pending.track():
                await self._check(post, self.store.leftover_steps.get(post.message_id))
