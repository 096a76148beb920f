"""Moderation assist, the model side: which questions a watched image is asked,
asking them, and reading the answers.

A watched image (see ``moderation.watched_channels``) is downloaded and
prepared once, then asked, back to back in the queue's caption lane: its
caption, a suggested alt text (where it has none and the channel wants one),
and each rule that applies there as its own short question.  With the local
engine's prefix cache the image is encoded for the first question only; each
further question costs its own few tokens.

A moving picture (an animated GIF, WebP or APNG, a clip) is sampled into
``images.frames`` frames (:mod:`bot.media`).  Its caption and alt text see
every frame at once (the alt text describes what happens); each rule is asked
about every frame on its own, so a GIF that shows its content only after the
first frame is caught, and the alert says which frame.

A rule's answer decides by its first word (yes/no, case and punctuation
ignored); the rest of its first line is the reason.  Anything else is
"undecided": counted and logged, never an alert.

Decision memory: each image asked about rules gets a perceptual hash
(:mod:`bot.moderation.record`).  Where the server's moderators already judged
the same or a near-identical image for a rule ("Looks fine", "Delete
message"), that rule is not asked again: its verdict is the remembered
decision (counted in ``remembered``).  Places in the caption lane
are reserved for all of a message's questions at once, before anything is
downloaded: a full lane skips the message (logged, never answered).

Plain data in, plain data out: nothing here imports discord.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from bot.engine.base import Answer, EngineError
from bot.i18n import N_
from bot.images import ImageError
from bot.media import PreparedMedia
from bot.moderation.record import Decision, image_hash
from bot.queue import JobCancelled, JobHandle, QueueClosed, Refused, Reservation

if TYPE_CHECKING:
    import aiohttp

    from bot.config import ModerationRule, ModerationSettings, Settings
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

QuestionKind = Literal["caption", "alt", "rule"]

#: appended to each rule's question: the answer's first word decides
RULE_SUFFIX = "Answer yes or no first, then give a one-line reason."

_FIRST_WORD = re.compile(r"[\W_]*([^\W\d_]+)(.*)", re.S)
#: what alt text should not start with ("An image of ...", "This picture shows ...")
_FILLER = re.compile(
    r"^(?:alt(?:ernative)? text\s*:\s*)?"
    r"(?:(?:an?|the|this)\s+)?(?:image|picture|photo(?:graph)?|screenshot)\s+"
    r"(?:of|showing|shows|depicting|depicts|that shows|with)\s+",
    re.I,
)
ALT_TEXT_LIMIT = 300
REASON_LIMIT = 300


@dataclass(frozen=True, slots=True)
class WatchedImage:
    """An image attachment of a watched message (not downloaded yet)."""

    url: str
    filename: str
    size: int | None
    content_type: str | None
    #: the poster gave it alt text (Discord's attachment description)
    has_alt: bool = False


@dataclass(frozen=True, slots=True)
class WatchedPost:
    """A message with images in a watched channel, as plain data (it is stored until checked)."""

    message_id: int
    channel_id: int
    guild_id: int | None
    poster_id: int
    poster_name: str
    jump_url: str
    images: tuple[WatchedImage, ...]
    #: the thread's parent channel, for a message in a thread
    parent_id: int | None = None
    #: the message is a question to the bot (the Ask cog answers it; no caption is posted)
    addressed: bool = False
    created: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WatchedPost:
        data = dict(data)
        data["images"] = tuple(WatchedImage(**image) for image in data["images"])
        return cls(**data)

    @property
    def channels(self) -> set[int]:
        """The channel and, in a thread, its parent."""
        return {self.channel_id} | ({self.parent_id} if self.parent_id is not None else set())


#: added to the caption and alt-text questions about a moving picture's frames
MOTION_NOTE = "The pictures are frames of one animation or clip, in order: say in one sentence what happens."


@dataclass(frozen=True, slots=True)
class Question:
    kind: QuestionKind
    text: str
    max_tokens: int
    rule: str = ""
    #: a rule's question is asked about each frame of a moving picture: which one
    frame: int = 0


@dataclass(frozen=True, slots=True)
class Verdict:
    """A rule's answer about one image (one frame of a moving one): matched (True),
    not (False) or undecided (None)."""

    rule: str
    matched: bool | None
    reason: str
    #: the frame it was about (0-based) and the frames sampled (1: a still image)
    frame: int = 0
    frames: int = 1
    #: decided from the moderators' memory of this image (the model was not asked)
    remembered: Decision | None = None

    @property
    def where(self) -> str:
        """Which frame, for an alert ("" for a still image)."""
        return N_("frame {frame} of {frames}").format(frame=self.frame + 1, frames=self.frames) if self.frames > 1 else ""


@dataclass(slots=True)
class ImageReport:
    """What the model said about one image; ``error`` when it could not be asked."""

    image: WatchedImage
    caption: Answer | None = None
    alt_text: str | None = None
    verdicts: list[Verdict] = field(default_factory=list)
    error: str | None = None
    #: perceptual hash of the (first frame of the) image, when rules were asked about it
    image_hash: str | None = None
    #: the server's earlier decisions about this image (rule name, lower case -> decision)
    decisions: dict[str, Decision] = field(default_factory=dict)

    @property
    def matched(self) -> list[Verdict]:
        """The first matching frame of each rule that matched (one alert per rule and image)."""
        first: dict[str, Verdict] = {}
        for verdict in sorted(self.verdicts, key=lambda v: v.frame):
            if verdict.matched and verdict.rule not in first:
                first[verdict.rule] = verdict
        return list(first.values())


def parse_verdict(text: str) -> tuple[bool | None, str]:
    """(yes/no/undecided, the one-line reason) from a rule's answer."""
    m = _FIRST_WORD.match(text or "")
    if m is None:
        return None, ""
    verdict = {"yes": True, "no": False}.get(m.group(1).lower())
    rest = m.group(2).lstrip(" \t,.;:!?-—–*_\"'")
    lines = [line.strip() for line in rest.splitlines() if line.strip()]
    reason = re.sub(r"\s+", " ", lines[0]) if lines else ""
    if len(reason) > REASON_LIMIT:
        reason = reason[: REASON_LIMIT - 1].rstrip() + "…"
    return verdict, reason


def clean_alt_text(text: str) -> str | None:
    """Short, factual alt text: the first paragraph, without quotes, labels or "image of"."""
    paragraphs = [p.strip() for p in (text or "").strip().split("\n\n") if p.strip()]
    if not paragraphs:
        return None
    alt = re.sub(r"\s+", " ", paragraphs[0]).strip().strip("\"'“”")
    alt = _FILLER.sub("", alt, count=1).strip()
    if not alt:
        return None
    if len(alt) > ALT_TEXT_LIMIT:
        cut = alt[:ALT_TEXT_LIMIT].rsplit(" ", 1)[0]
        alt = cut.rstrip(",;:") + "…"
    return alt[0].upper() + alt[1:]


def rule_question(question: str) -> str:
    return f"{question.strip()} {RULE_SUFFIX}"


class Checker:
    """Asks the moderation questions about watched images; counts rule checks and matches."""

    def __init__(
        self,
        settings: Settings,
        runtime: Runtime,
        session: Callable[[], aiohttp.ClientSession],
        moderation_for: Callable[[int | None], ModerationSettings] | None = None,
        recall: Callable[[int, str, list[str]], Awaitable[dict[str, Decision]]] | None = None,
    ) -> None:
        self.settings = settings
        self.runtime = runtime
        self._session = session
        #: a server's effective moderation settings (its own, over the file's defaults)
        self.moderation_for = moderation_for or (lambda _guild: settings.moderation)
        #: a server's remembered decisions about an image (by its hash), per rule
        self.recall = recall
        #: (rule, "fine" | "deleted") -> rule questions answered from memory instead of the model
        self.remembered: Counter[tuple[str, str]] = Counter()
        #: rule name -> answers received / answers that matched / answers that said neither yes nor no
        self.checks: Counter[str] = Counter()
        self.matches: Counter[str] = Counter()
        self.undecided: Counter[str] = Counter()
        #: rule name -> questions that got no answer (engine error, download failed)
        self.failures: Counter[str] = Counter()
        for rule in settings.moderation.rules:
            self.checks[rule.name] += 0
            self.matches[rule.name] += 0

    # -- what to ask -------------------------------------------------------------------

    def rules_for(self, post: WatchedPost) -> list[ModerationRule]:
        mod = self.moderation_for(post.guild_id)
        if not post.channels & mod.watched_channels:
            return []
        return [rule for rule in mod.rules if not rule.channels or post.channels & set(rule.channels)]

    def wants_alt(self, post: WatchedPost, image: WatchedImage) -> bool:
        return not image.has_alt and bool(post.channels & set(self.moderation_for(post.guild_id).alt_text_channels))

    def posts_caption(self, post: WatchedPost) -> bool:
        """Today's captions: every image in a caption channel, unless the message asks the bot."""
        return not post.addressed and bool(post.channels & set(self.moderation_for(post.guild_id).caption_channels))

    def questions(self, post: WatchedPost, image: WatchedImage, only: ModerationRule | None = None) -> list[Question]:
        mod = self.moderation_for(post.guild_id)
        if only is not None:  # one rule, asked on its own (/rule test)
            return [Question("rule", rule_question(only.question), mod.rule_max_tokens, only.name)]
        rules = self.rules_for(post)
        asked: list[Question] = []
        if rules or mod.keep_days > 0 or self.posts_caption(post):
            asked.append(Question("caption", mod.caption_prompt, mod.caption_max_tokens))
        if self.wants_alt(post, image):
            asked.append(Question("alt", mod.alt_text_prompt, mod.alt_text_max_tokens))
        asked += [Question("rule", rule_question(rule.question), mod.rule_max_tokens, rule.name) for rule in rules]
        return asked

    # -- asking --------------------------------------------------------------------------

    async def check(self, post: WatchedPost, only: ModerationRule | None = None) -> list[ImageReport] | None:
        """Ask every question about every image of ``post``; None when the caption lane is full.
        ``only``: ask just that rule, from the model (no memory, not counted: a test of the rule).

        A message whose questions fit the lane's cap reserves them all at once
        (or is skipped at once, like today's captions).  One with more goes
        image by image, in batches that fit, each waiting a while for room.
        Raises :class:`QueueClosed` when the bot is stopping (the post is
        checked after the restart)."""
        plans = [(image, self.questions(post, image, only)) for image in post.images]
        reports = [ImageReport(image) for image, _ in plans]
        items = [(i, q) for i, (_, asked) in enumerate(plans) for q in asked]
        if not items:
            return []
        prepared: dict[int, PreparedMedia | None] = {}
        for n, batch in enumerate(self._batches(plans, items)):
            reservation = await self._reserve(len(batch), wait=n > 0 or only is not None)
            if reservation is None:
                if n == 0:
                    log.warning("images of message %s not checked: the caption lane is full", post.message_id)
                    return None
                log.warning("message %s: the caption lane stayed full; %d question(s) not asked", post.message_id, len(batch))
                break
            try:
                await self._run_batch(batch, plans, reports, prepared, reservation, post.guild_id if only is None else None, only is None)
            finally:
                reservation.close()
        return [r for r, (_, asked) in zip(reports, plans, strict=True) if asked]

    def _batches(self, plans: Sequence[tuple[WatchedImage, list[Question]]], items: list[tuple[int, Question]]) -> list[list[tuple[int, Question]]]:
        cap = self.runtime.queue.caption_max_size
        if len(items) <= cap:
            return [items]
        batches: list[list[tuple[int, Question]]] = []
        for i, (_, asked) in enumerate(plans):
            batches += [[(i, q) for q in asked[k : k + cap]] for k in range(0, len(asked), cap)]
        return batches

    async def _reserve(self, count: int, *, wait: bool, wait_s: float = 60.0) -> Reservation | None:
        if not wait:
            try:
                return self.runtime.reserve(None, count, lane="caption")
            except QueueClosed:
                raise
            except Refused:
                return None
        return await self.runtime.reserve_when_room(count, lane="caption", timeout_s=wait_s)

    async def _run_batch(
        self,
        batch: list[tuple[int, Question]],
        plans: Sequence[tuple[WatchedImage, list[Question]]],
        reports: list[ImageReport],
        prepared: dict[int, PreparedMedia | None],
        reservation: Reservation,
        guild_id: int | None,
        counted: bool,
    ) -> None:
        """``guild_id``: the server whose decision memory applies (None: ask the model every rule)."""
        handles: list[tuple[int, Question, JobHandle]] = []
        extras: list[Reservation] = []
        try:
            for i, question in batch:
                if i not in prepared:
                    media = prepared[i] = await self._prepare(reports[i])
                    rules = [q.rule for q in plans[i][1] if q.kind == "rule"]
                    if media is not None and rules:
                        await self._remember(reports[i], media, guild_id, rules)
                media = prepared[i]
                if media is None:  # could not be read: logged, never posted
                    reservation.release_one()
                    if question.kind == "rule" and question.frame == 0 and counted:
                        self.failures[question.rule] += 1
                    continue
                decision = reports[i].decisions.get(question.rule.lower()) if question.kind == "rule" else None
                if decision is not None:  # judged before: the moderators' decision, not the model's
                    reservation.release_one()
                    self._recalled(reports[i], question, decision, len(media.images))
                    continue
                handles.append((i, question, self.runtime.submit(self._request(media, question), reservation=reservation)))
                if question.kind == "rule" and len(media.images) > 1:
                    handles += await self._later_frames(i, question, media, reports[i], extras)
            for i, question, handle in handles:
                try:
                    answer = await handle.result()
                except (EngineError, JobCancelled) as exc:
                    log.warning("%s question about %s got no answer: %s", question.rule or question.kind, reports[i].image.filename, exc)
                    if question.kind == "rule" and counted:
                        self.failures[question.rule] += 1
                    continue
                media = prepared.get(i)
                self._read(reports[i], question, answer, len(media.images) if media is not None else 1, counted)
        except BaseException:
            for _, _, handle in handles:
                handle.cancel()
            raise
        finally:
            for extra in extras:
                extra.close()

    async def _later_frames(
        self, i: int, question: Question, media: PreparedMedia, report: ImageReport, extras: list[Reservation]
    ) -> list[tuple[int, Question, JobHandle]]:
        """A rule's question about the other frames of a moving picture: their places are
        reserved once the frames are known (waiting a while for room in the lane)."""
        more = [replace(question, frame=k) for k in range(1, len(media.images))]
        extra = await self._reserve(len(more), wait=True)
        if extra is None:
            log.warning("rule %s: frames 2-%d of %s not checked: the caption lane stayed full", question.rule, len(more) + 1,
                        report.image.filename)
            self.failures[question.rule] += 1
            return []
        extras.append(extra)
        return [(i, q, self.runtime.submit(self._request(media, q), reservation=extra)) for q in more]

    def _request(self, media: PreparedMedia, question: Question) -> Any:
        """A rule looks at one frame; the caption and alt text at all of them (what happens)."""
        if question.kind == "rule":
            return self.runtime.request([media.images[question.frame]], question.text, max_tokens=question.max_tokens)
        text = f"{question.text} {MOTION_NOTE}" if len(media.images) > 1 else question.text
        return self.runtime.request(media.images, text, max_tokens=question.max_tokens)

    async def _prepare(self, report: ImageReport) -> PreparedMedia | None:
        try:
            return await self._load(report.image)
        except ImageError as exc:
            report.error = str(exc)
        except Exception as exc:  # a bug, not the file: logged with its traceback, never posted
            log.exception("could not prepare %s", report.image.filename)
            report.error = type(exc).__name__
        log.info("watched image %s not checked: %s", report.image.filename, report.error)
        return None

    async def _remember(self, report: ImageReport, media: PreparedMedia, guild_id: int | None, rules: list[str]) -> None:
        """The image's hash, and the server's decisions about it (``report.decisions``)."""
        try:
            report.image_hash = await asyncio.to_thread(image_hash, media.images[0].data_uri)
            if self.recall is None or guild_id is None:
                return
            found = await self.recall(guild_id, report.image_hash, rules)
        except Exception:  # the memory is an aid: without it, the model is asked
            log.exception("decision memory unavailable for %s", report.image.filename)
            return
        report.decisions = {rule.lower(): decision for rule, decision in found.items()}

    def _recalled(self, report: ImageReport, question: Question, decision: Decision, frames: int) -> None:
        """A rule answered from memory: "Delete message" before alerts again, "Looks fine" stays quiet."""
        if question.frame != 0:
            return
        self.remembered[(question.rule, decision.fate)] += 1
        log.info("rule %s: %s is %s, as decided before by user %s", question.rule, report.image.filename,
                 "alerted" if decision.fate == "deleted" else "not alerted", decision.by_user)
        reason = f"{decision.fate} before by <@{decision.by_user}> on {decision.day}"
        report.verdicts.append(Verdict(question.rule, decision.fate == "deleted", reason, 0, frames, remembered=decision))

    def _read(self, report: ImageReport, question: Question, answer: Answer, frames: int = 1, counted: bool = True) -> None:
        if question.kind == "caption":
            report.caption = answer
        elif question.kind == "alt":
            report.alt_text = clean_alt_text(answer.text)
        else:
            matched, reason = parse_verdict(answer.text)
            if counted:
                self.checks[question.rule] += 1
                if matched:
                    self.matches[question.rule] += 1
                elif matched is None:
                    self.undecided[question.rule] += 1
                log.info("rule %s: the answer about %s was neither yes nor no", question.rule, report.image.filename)
            report.verdicts.append(Verdict(question.rule, matched, reason, question.frame, frames))

    async def _load(self, image: WatchedImage) -> PreparedMedia:
        """Declared size first, then the download (allowed hosts only), then preparation
        (the frames of a moving picture)."""
        return await self.runtime.load_media(
            self._session(), image.url, image.size, allowed_hosts=self.settings.images.allowed_hosts, content_type=image.content_type
        )
