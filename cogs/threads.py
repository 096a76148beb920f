"""Conversations in threads: the bot starts a thread on a question and answers in it; every
later message of the asker there is a follow-up about the same pictures.

Nothing is stored.  What the bot needs is read from Discord, so it holds after a restart:

* a thread is one of ours when Discord says the bot owns it (its ``owner_id``); the bot starts
  threads only for conversations;
* its asker is the author of the message it was started from (a mention), or the member who ran
  the command whose response it was started from (``/ask``: that response's
  ``interaction_metadata``); a thread started from a message has that message's id;
* the conversation is the thread itself: the bot's answers reply to the asker's messages (the
  first one, answering the thread's starter, is no reply: the question is in the parent channel),
  read back to the message that brought the pictures (a new picture in the thread starts a new
  topic) or to the starter.

Plain helpers for the Ask and Commands cogs; no listener here.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final, Literal

import discord

from bot.reply import BUSY_MARK, WARN, answer_from_message
from cogs.reading import Pictures, labelled, question_text

if TYPE_CHECKING:
    from bot.client import LlavaBot

log = logging.getLogger(__name__)

#: minutes without a message before Discord archives one of our threads (it stays readable,
#: and a new message in it unarchives it); the bot never archives one itself
ARCHIVE_MINUTES: Final[Literal[60]] = 60
#: messages of a thread read back (newest first) to find the conversation's turns and pictures
HISTORY_LIMIT = 200
#: what Discord calls "A thread has already been created for this message"
THREAD_EXISTS = 160004
#: messages people write (not system messages such as a thread's starter marker)
CHAT = (discord.MessageType.default, discord.MessageType.reply)
#: threads whose asker is known (None: not one of ours, or its starter is gone), most recent last
KNOWN_THREADS = 2048

#: one earlier exchange: (question, answer, the image's position among several, or None)
Turn = tuple[str, str, int | None]


def thread_name(question: str, filename: str) -> str:
    """A thread's name (Discord: 1 to 100 characters): the question's first line, else the picture's name."""
    line = next((x.strip() for x in question.splitlines() if x.strip()), "") or filename or "?"
    return line if len(line) <= 100 else line[:99].rstrip() + "…"


def thread_head(question: str) -> str:
    """What an ``/ask`` response says when a thread is started from it: the question, quoted
    (read back by :func:`question_of_head`).  The picture is attached to it."""
    return "\n".join(f"> {line}" for line in question.splitlines() or [""])


def question_of_head(content: str) -> str:
    """The question of a response written by :func:`thread_head`."""
    return "\n".join(line.removeprefix(">").removeprefix(" ") for line in content.splitlines()).strip()


def thread_permissions(perms: discord.Permissions) -> bool:
    """Enough to hold a conversation in a new public thread."""
    return perms.create_public_threads and perms.send_messages_in_threads


class Threads:
    """The conversation threads the bot started (see the module docstring)."""

    def __init__(self, bot: LlavaBot) -> None:
        self.bot = bot
        self._askers: OrderedDict[int, int | None] = OrderedDict()

    # -- starting one -------------------------------------------------------------------------

    def can_start_in(self, channel: object, why: str) -> bool:
        """Whether a thread can be started in ``channel`` (a text channel where the bot may start
        public threads and talk in them); says why not in the log (``why``: what asked)."""
        if not isinstance(channel, discord.TextChannel):
            log.info("%s in channel %s: no thread there (not a text channel); answering in place", why, getattr(channel, "id", None))
            return False
        if not thread_permissions(channel.permissions_for(channel.guild.me)):
            log.warning(
                "%s in channel %s: the bot lacks Create Public Threads or Send Messages in Threads there; answering in place",
                why, channel.id,
            )
            return False
        return True

    async def start_on(self, message: discord.Message, name: str, asker: int) -> discord.Thread | None:
        """The thread on ``message`` (started now, or found: a replay after a restart may have
        started it already); None when Discord refuses (then the answer goes in place)."""
        me = self.bot.user
        existing = message.thread
        if existing is not None and me is not None and existing.owner_id == me.id:
            return self.remember(existing, asker)
        try:
            thread = await message.create_thread(name=name, auto_archive_duration=ARCHIVE_MINUTES)
        except discord.HTTPException as exc:
            found = await self._started_before(message) if exc.code == THREAD_EXISTS else None
            if found is not None:
                return self.remember(found, asker)
            log.warning("could not start a thread on message %s in channel %s (%s); answering in place", message.id, message.channel.id, exc)
            return None
        log.info("started thread %s on message %s in channel %s", thread.id, message.id, message.channel.id)
        return self.remember(thread, asker)

    async def _started_before(self, message: discord.Message) -> discord.Thread | None:
        """Our thread on ``message``, started by an earlier attempt (it has the message's id)."""
        try:
            channel = await self.bot.fetch_channel(message.id)
        except discord.HTTPException:
            return None
        me = self.bot.user
        if isinstance(channel, discord.Thread) and me is not None and channel.owner_id == me.id:
            return channel
        return None

    def remember(self, thread: discord.Thread, asker: int | None) -> discord.Thread:
        self._askers[thread.id] = asker
        self._askers.move_to_end(thread.id)
        while len(self._askers) > KNOWN_THREADS:
            self._askers.popitem(last=False)
        return thread

    # -- knowing one ----------------------------------------------------------------------------

    async def ours(self, channel: object) -> discord.Thread | None:
        """``channel`` as one of our conversation threads (None: it is not one)."""
        me = self.bot.user
        if me is None:
            return None
        if isinstance(channel, discord.PartialMessageable) and channel.guild_id is not None:
            # a channel discord.py does not hold (a thread it has not been told of): ask Discord
            try:
                channel = await self.bot.fetch_channel(channel.id)
            except discord.HTTPException as exc:
                log.info("could not read channel %s: %s", getattr(channel, "id", None), exc)
                return None
        if isinstance(channel, discord.Thread) and channel.owner_id == me.id:
            return channel
        return None

    async def asker(self, thread: discord.Thread) -> int | None:
        """Who the conversation in our ``thread`` is with (None: its starter is gone)."""
        if thread.id in self._askers:
            self._askers.move_to_end(thread.id)
            return self._askers[thread.id]
        try:
            starter = await self.starter(thread)
        except discord.HTTPException as exc:
            log.info("could not read the starter message of thread %s: %s", thread.id, exc)
            return None  # not remembered: asked again next time
        asker = None
        if starter is not None:
            me = self.bot.user
            if me is not None and starter.author.id == me.id:
                meta = starter.interaction_metadata  # a command's response: who ran it
                asker = meta.user.id if meta is not None else None
            else:
                asker = starter.author.id
        self.remember(thread, asker)
        return asker

    async def starter(self, thread: discord.Thread) -> discord.Message | None:
        """The message ``thread`` was started from (same id, in the parent channel); None if deleted."""
        cached = thread.starter_message
        if cached is not None:
            return cached
        parent = thread.parent or await self.bot.fetch_channel(thread.parent_id)
        if not isinstance(parent, discord.abc.Messageable):
            return None
        try:
            return await parent.fetch_message(thread.id)
        except discord.NotFound:
            return None

    async def follows_up(self, message: discord.Message) -> bool:
        """A plain message of the asker in one of our threads: a follow-up (no mention needed)."""
        if message.guild is None or message.type not in CHAT:
            return False
        thread = await self.ours(message.channel)
        return thread is not None and await self.asker(thread) == message.author.id

    # -- the conversation so far ----------------------------------------------------------------------

    async def conversation(
        self, message: discord.Message, thread: discord.Thread, depth: int, pictures: Callable[[discord.Message], Pictures]
    ) -> tuple[Pictures, list[list[tuple[str, str]]]]:
        """The pictures a message in our ``thread`` is about, and for each picture the turns before it
        (at most ``depth``): the thread read back to the message that brought the pictures, or to
        the thread's starter.  ``pictures``: a message's own pictures."""
        topic = await self._topic(message, pictures)
        if topic.found:
            return topic, [[] for _ in topic.found]
        me = self.bot.user.id if self.bot.user else None
        answers: dict[int | None, list[discord.Message]] = {}  # the question's id (None: the starter) -> replies
        turns: list[Turn] = []  # newest first
        async for earlier in thread.history(limit=HISTORY_LIMIT, before=message):
            if earlier.type not in CHAT:
                continue
            if earlier.author.id == me:
                if earlier.interaction_metadata is not None:
                    continue  # a command's response (someone ran /ask here): not a turn of this conversation
                ref = earlier.reference
                answers.setdefault(ref.message_id if ref is not None else None, []).append(earlier)
                continue
            replies = answers.pop(earlier.id, None)
            if not replies:
                continue  # not a question the bot answered (others talking, a refused one)
            said = self._turns(question_text(earlier.content, me), replies)
            if not said:
                continue
            turns += said
            topic = await self._topic(earlier, pictures)
            if topic.found:
                return topic, self._histories(topic, turns, depth)
        try:
            starter = await self.starter(thread)
        except discord.HTTPException as exc:
            log.warning("could not read the starter message of thread %s: %s", thread.id, exc)
            starter = None
        if starter is None:
            return Pictures(), []
        is_ours = me is not None and starter.author.id == me
        question = question_of_head(starter.content) if is_ours else question_text(starter.content, me)
        turns += self._turns(question, answers.pop(None, []))
        topic = pictures(starter) if is_ours else await self._topic(starter, pictures)
        return topic, self._histories(topic, turns, depth)

    async def _topic(self, message: discord.Message, pictures: Callable[[discord.Message], Pictures]) -> Pictures:
        """The pictures a message brings: its own, or those of someone's message it replies to."""
        own = pictures(message)
        if own.found:
            return own
        ref = message.reference
        if ref is None or ref.message_id is None:
            return own
        referenced = ref.resolved
        if not isinstance(referenced, discord.Message):
            try:
                referenced = await message.channel.fetch_message(ref.message_id)
            except discord.HTTPException:
                return own
        me = self.bot.user
        if me is not None and referenced.author.id == me.id:
            return own  # a reply to one of our answers: the conversation goes on
        return pictures(referenced)

    @staticmethod
    def _turns(question: str, replies: Sequence[discord.Message]) -> list[Turn]:
        """The exchanges in the bot's replies to one question (newest first): one per image it
        answered about (a labelled message starts one, an unlabelled one continues it);
        refusals, errors and place-in-line notes are none."""
        answers: list[list[str]] = []
        for reply in reversed(replies):
            content = reply.content or ""
            if labelled(content) is not None or not answers:
                answers.append([content])
            else:
                answers[-1].append(content)
        turns: list[Turn] = []
        for parts in answers:
            text = answer_from_message("\n".join(parts)).removesuffix("▌").strip()
            label = labelled(text)
            position, text = label if label is not None else (None, text)
            if text and not text.startswith((WARN, BUSY_MARK)):
                turns.append((question, text, position))
        turns.reverse()  # newest first, like the walk
        return turns

    @staticmethod
    def _histories(topic: Pictures, turns: Sequence[Turn], depth: int) -> list[list[tuple[str, str]]]:
        """For each picture, the turns about it (or about all of them), oldest first, the last ``depth``."""
        ordered = list(reversed(turns))
        out: list[list[tuple[str, str]]] = []
        for index in range(1, len(topic.found) + 1):
            about = [(q, a) for q, a, position in ordered if position is None or position == index]
            out.append(about[-depth:] if depth > 0 else [])
        return out
