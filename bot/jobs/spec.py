"""A question as plain data: what the front ends build, the journal keeps and the
repliers read.  Nothing here imports discord."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from bot.queue import Lane

JobKind = Literal["message", "interaction", "channel"]
Outcome = Literal["answered", "refused", "failed", "undeliverable", "parked", "gave_up", "cancelled"]


@dataclass(frozen=True, slots=True)
class ImageSource:
    """An attachment to answer about (not downloaded yet)."""

    url: str
    filename: str
    size: int | None
    content_type: str | None


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One accepted question about one image, as plain data (it goes into the journal).

    ``kind`` says where the answer goes: ``message`` (a reply to
    ``message_id`` in ``channel_id``), ``interaction`` (the response of a
    deferred interaction, by ``application_id`` and ``token``) or
    ``channel`` (a new message in ``channel_id`` starting with ``head``).
    ``lane`` ``caption`` marks automatic captions: lower priority, their own
    cap, and refusals go to the log, never to the channel.
    """

    kind: JobKind
    channel_id: int
    source: ImageSource
    question: str | None
    user_id: int | None
    message_id: int | None = None
    application_id: int | None = None
    token: str | None = None
    head: str = ""
    show_place: bool = True
    max_tokens: int | None = None
    history: tuple[tuple[str, str], ...] = ()
    label: str = ""
    note: str = ""
    lane: Lane = "question"
    created: float = field(default_factory=time.time)
    #: an interaction's id: its original response and follow-ups carry it (the replay finds them by it)
    interaction_id: int | None = None
    #: the Discord locale of the bot's own lines ("fr", "pt-BR"; None: English): an
    #: interaction's, or the server's preferred one for a mention (journaled: a replay says them alike)
    locale: str | None = None
    #: the language the model is asked to answer in: a Discord locale (a slash command, a menu),
    #: "question" (a mention: the question's own language), None: no instruction
    answer_in: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["history"] = [list(turn) for turn in self.history]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobSpec:
        data = dict(data)
        data["source"] = ImageSource(**data["source"])
        data["history"] = tuple(tuple(turn) for turn in data.get("history", ()))
        if data.get("kind") not in ("message", "interaction", "channel"):
            raise ValueError(f"unknown job kind {data.get('kind')!r}")
        return cls(**data)
