"""Reading Discord messages: which attachments are images, the question, who is
addressed, and which of several images a follow-up is about.

Plain helpers: they take attachments, text and ids, not the bot, so they get
plain unit tests.  ``roles_of`` is the one that asks Discord (for DMs).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import TypeVar

import discord

from bot.jobs.spec import ImageSource

log = logging.getLogger(__name__)

#: the first line of an answer about one of several images: "**Image 2 of 3** (cat.png)"
IMAGE_LABEL = re.compile(r"\*\*Image (\d+) of (\d+)\*\* \((.*?)\)\n?")

A = TypeVar("A")


def image_label(index: int, total: int, filename: str) -> str:
    """The head of an answer about image ``index`` of ``total`` (read back by :func:`labelled`)."""
    return f"**Image {index} of {total}** ({filename})"


def labelled(answer: str) -> tuple[int, str] | None:
    """(the image's position, the answer without its label) for an answer about one of several images."""
    match = IMAGE_LABEL.match(answer)
    if match is None:
        return None
    return int(match.group(1)), answer[match.end() :].strip()


def looks_like_image(content_type: str | None) -> bool:
    """The declared type only decides what is worth downloading; the bytes are
    checked by content afterwards.  No declared type: download and look."""
    kind = (content_type or "").split(";")[0].strip().lower()
    return not kind or kind.startswith("image/")


def image_attachments(attachments: Sequence[A]) -> list[A]:
    return [a for a in attachments if looks_like_image(getattr(a, "content_type", None))]


def image_source(attachment: discord.Attachment) -> ImageSource:
    return ImageSource(attachment.url, attachment.filename, attachment.size, attachment.content_type)


def split_attachments(attachments: Sequence[discord.Attachment]) -> tuple[list[ImageSource], list[discord.Attachment]]:
    """(image candidates, attachments that are plainly not images)."""
    images = image_attachments(attachments)
    return [image_source(a) for a in images], [a for a in attachments if a not in images]


def pick_image(attachments: Sequence[A], position: int) -> list[A]:
    """The image at ``position`` (1-based, among the images) of a message; all of them if there is none there."""
    images = image_attachments(attachments)
    if 1 <= position <= len(images):
        return [images[position - 1]]
    return list(attachments)


def question_text(content: str | None, bot_id: int | None) -> str:
    """The message text without the mention of the bot."""
    text = content or ""
    if bot_id is not None:
        text = re.sub(rf"<@!?{bot_id}>", "", text)
    return text.strip()


def is_addressed(*, is_dm: bool, mentions_bot: bool, replies_to_bot: bool) -> bool:
    """A DM, a mention of the bot, or a reply to one of its answers."""
    return is_dm or mentions_bot or replies_to_bot


def replies_to(message: discord.Message, user_id: int | None) -> bool:
    ref = message.reference
    resolved = ref.resolved if ref is not None else None
    return isinstance(resolved, discord.Message) and user_id is not None and resolved.author.id == user_id


def addressed_to(message: discord.Message, me: discord.ClientUser | None) -> bool:
    if me is None:
        return False
    return is_addressed(
        is_dm=message.guild is None,
        mentions_bot=any(u.id == me.id for u in message.mentions),
        replies_to_bot=replies_to(message, me.id),
    )


async def roles_of(client: discord.Client, user: discord.abc.User, wanted: Sequence[int]) -> set[int]:
    """The role ids ``user`` has among ``wanted``.  In a DM the user is no member:
    look them up in the servers those roles belong to."""
    if not wanted:
        return set()
    if isinstance(user, discord.Member):
        return {r.id for r in user.roles}
    found: set[int] = set()
    for guild in client.guilds:
        if not any(guild.get_role(role_id) for role_id in wanted):
            continue
        member = guild.get_member(user.id)
        if member is None:
            try:
                member = await guild.fetch_member(user.id)
            except discord.HTTPException as exc:
                log.debug("user %s is not a member of guild %s: %s", user.id, guild.id, exc)
                continue
        found |= {r.id for r in member.roles}
    return found
