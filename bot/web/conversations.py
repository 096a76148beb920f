"""Follow-up conversations of the playground, kept in memory and bounded.

A conversation is one prepared image and the (question, answer) turns asked
about it.  At most ``capacity`` are kept (the least recently used goes
first), and one idle for ``ttl_s`` is forgotten: a follow-up on it gets
:data:`bot.reply.CONVERSATION_EXPIRED`.  Ids are random and unguessable.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from bot.media import PreparedMedia


@dataclass(eq=False)
class Conversation:
    """One image and the turns about it, oldest first (the last ``max_turns`` only)."""

    id: str
    image: PreparedMedia
    turns: deque[tuple[str, str]]
    last_used: float = field(default=0.0)

    def history(self) -> tuple[tuple[str, str], ...]:
        """The earlier turns to send with the next question."""
        return tuple(self.turns)


class Conversations:
    """An LRU table of conversations with an idle time-out."""

    def __init__(
        self,
        capacity: int = 200,
        ttl_s: float = 1800.0,
        max_turns: int = 6,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.ttl_s = ttl_s
        self.max_turns = max_turns
        self._clock = clock
        self._table: OrderedDict[str, Conversation] = OrderedDict()

    def __len__(self) -> int:
        return len(self._table)

    def get(self, conversation_id: str) -> Conversation | None:
        """The live conversation with this id (now the most recently used), or None."""
        self._expire()
        conversation = self._table.get(conversation_id)
        if conversation is not None:
            conversation.last_used = self._clock()
            self._table.move_to_end(conversation_id)
        return conversation

    def record(self, conversation: Conversation | None, image: PreparedMedia, question: str, answer: str) -> Conversation:
        """Add a turn: to ``conversation``, or to a new one about ``image``.
        A conversation that expired meanwhile is kept again (its asker just got an answer)."""
        if conversation is None:
            conversation = Conversation(secrets.token_urlsafe(16), image, deque(maxlen=self.max_turns))
        conversation.turns.append((question, answer))
        conversation.last_used = self._clock()
        self._table[conversation.id] = conversation
        self._table.move_to_end(conversation.id)
        self._expire()
        return conversation

    def _expire(self) -> None:
        """Drop idle conversations, then the least recently used beyond capacity."""
        now = self._clock()
        while self._table:
            oldest = next(iter(self._table.values()))
            if now - oldest.last_used < self.ttl_s and len(self._table) <= self.capacity:
                break
            del self._table[oldest.id]
