"""Reading Discord messages: where a message's pictures are, the question, who is
addressed, and which of several pictures a follow-up is about.

A message's pictures, in this order (:func:`pictures_of`): its attachments
(images and videos), its embeds (a linked picture, an article's image, a GIF
picker's clip), its stickers (PNG, APNG, GIF; Lottie ones cannot be read), and
then those of the message it forwards (Discord's message snapshot).  Embedded
pictures are always taken from Discord's media proxy (``proxy_url``), never
from the third-party link itself; the download's allow-list decides the rest.

Plain helpers: they take attachments, text and ids, not the bot, so they get
plain unit tests.  ``roles_of`` is the one that asks Discord (for DMs).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import discord

from bot.i18n import N_, translate, variants
from bot.jobs.spec import ImageSource

log = logging.getLogger(__name__)

#: the first line of an answer about one of several images: "**Image 2 of 3** (cat.png)"
IMAGE_LABEL = re.compile(r"\*\*Image (\d+) of (\d+)\*\* \((.*?)\)\n?")
#: the same, as translated in the catalogs ("**Bild 2 von 3** (cat.png)")
IMAGE_LABEL_TEXT = N_("**Image {index} of {total}** ({filename})")

A = TypeVar("A")


def image_label(index: int, total: int, filename: str, locale: object = None) -> str:
    """The head of an answer about image ``index`` of ``total`` (read back by :func:`labelled`),
    in ``locale``'s language (None: the locale in effect)."""
    return translate(IMAGE_LABEL_TEXT, locale).format(index=index, total=total, filename=filename)


@functools.cache
def _label_patterns() -> tuple[re.Pattern[str], ...]:
    """The label in every language the catalogs have, English first."""
    patterns = [IMAGE_LABEL]
    for text in sorted(variants(IMAGE_LABEL_TEXT) - {IMAGE_LABEL_TEXT}):
        pattern = re.escape(text)
        for name, group in (("index", r"(?P<index>\d+)"), ("total", r"(?P<total>\d+)"), ("filename", r"(?P<filename>.*?)")):
            pattern = pattern.replace(re.escape("{" + name + "}"), group)
        patterns.append(re.compile(pattern + r"\n?"))
    return tuple(patterns)


def labelled(answer: str) -> tuple[int, str] | None:
    """(the image's position, the answer without its label) for an answer about one of several
    images, in whichever language the label was written."""
    for pattern in _label_patterns():
        match = pattern.match(answer)
        if match is not None:
            position = match.group("index") if "index" in pattern.groupindex else match.group(1)
            return int(position), answer[match.end() :].strip()
    return None


def looks_like_image(content_type: str | None) -> bool:
    """A picture or a clip worth downloading.  The declared type only decides what is
    worth downloading; the bytes are checked by content afterwards.  No declared type:
    download and look."""
    kind = (content_type or "").split(";")[0].strip().lower()
    return not kind or kind.startswith(("image/", "video/"))


def image_attachments(attachments: Sequence[A]) -> list[A]:
    return [a for a in attachments if looks_like_image(getattr(a, "content_type", None))]


def image_source(attachment: discord.Attachment) -> ImageSource:
    return ImageSource(attachment.url, attachment.filename, attachment.size, attachment.content_type)


@dataclass(slots=True)
class Pictures:
    """What :func:`pictures_of` found: the pictures in order, attachments that are
    plainly not pictures, and lines about what could not be taken (a Lottie sticker)."""

    found: list[ImageSource] = field(default_factory=list)
    #: per picture: the poster gave it alt text (an attachment's description)
    has_alt: list[bool] = field(default_factory=list)
    others: list[Any] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def add(self, source: ImageSource, has_alt: bool = False) -> None:
        if any(known.url == source.url for known in self.found):
            return  # Discord repeats a picture in several embeds (a gallery): once
        self.found.append(source)
        self.has_alt.append(has_alt)


LOTTIE_STICKER = N_("the sticker {name!r} is a Lottie animation, which I cannot look at")


def _name_from_url(url: str, fallback: str) -> str:
    path = url.split("?", 1)[0].rstrip("/")
    name = path.rsplit("/", 1)[-1]
    return name if "." in name and len(name) <= 100 else fallback


def embed_source(embed: discord.Embed) -> ImageSource | None:
    """The picture of an embed, from Discord's media proxy: a GIF picker clip (``gifv``)
    as its video, else its still; a linked image; an article's image or thumbnail;
    a video link's thumbnail (never the player)."""
    kind = embed.type
    video, image, thumb = embed.video, embed.image, embed.thumbnail
    if kind == "gifv":
        candidates = [(video, "video/mp4"), (thumb, None)]
    elif kind == "image":
        candidates = [(thumb, None), (image, None)]
    elif kind == "video":
        candidates = [(thumb, None)]
    else:
        candidates = [(image, None), (thumb, None)]
    for proxy, content_type in candidates:
        proxy_url = getattr(proxy, "proxy_url", None)
        if proxy_url:
            original = getattr(proxy, "url", None) or proxy_url
            fallback = "clip.mp4" if content_type else "embedded-image"
            return ImageSource(proxy_url, _name_from_url(original, fallback), None, content_type)
    return None


def sticker_source(sticker: discord.StickerItem, *, cdn_url: str, media_url: str) -> ImageSource | None:
    """A sticker's file (None for Lottie, which is not a picture format)."""
    fmt = sticker.format
    if fmt is discord.StickerFormatType.lottie:
        return None
    if fmt is discord.StickerFormatType.gif:
        return ImageSource(f"{media_url}/stickers/{sticker.id}.gif", f"{sticker.name}.gif", None, "image/gif")
    return ImageSource(f"{cdn_url}/stickers/{sticker.id}.png", f"{sticker.name}.png", None, "image/png")


def pictures_of(message: Any, *, cdn_url: str, media_url: str, into: Pictures | None = None) -> Pictures:
    """A message's pictures in order: attachments, embeds, stickers, then the forwarded
    message's (``message_snapshots``).  ``message``: a Message or a MessageSnapshot."""
    out = into if into is not None else Pictures()
    for attachment in getattr(message, "attachments", ()):
        if looks_like_image(attachment.content_type):
            out.add(image_source(attachment), has_alt=bool((attachment.description or "").strip()))
        else:
            out.others.append(attachment)
    for embed in getattr(message, "embeds", ()):
        source = embed_source(embed)
        if source is not None:
            out.add(source)
    for sticker in getattr(message, "stickers", ()):
        source = sticker_source(sticker, cdn_url=cdn_url, media_url=media_url)
        if source is None:
            out.skipped.append(LOTTIE_STICKER.format(name=sticker.name))
        else:
            out.add(source)
    for snapshot in getattr(message, "message_snapshots", None) or ():
        pictures_of(snapshot, cdn_url=cdn_url, media_url=media_url, into=out)
    return out


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
