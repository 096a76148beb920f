"""Pictures that are not attachments: embed builders in Discord's payload shapes, and pointing discord.py's
asset and sticker URLs at the fake.

Discord puts a linked picture in an embed and serves it from its media proxy; the embed's ``url``
(and its media's ``url``) is the third-party original, its media's ``proxy_url`` the copy on
``images-ext-*.discordapp.net`` / ``media.discordapp.net``. With the fake, the proxy copy comes from
:meth:`FakeDiscord.add_embed_media` and the builders below assemble the embed::

    still = fake.add_embed_media("cat.png", PNG, source_url="https://example.com/cat.png")
    await fake.user_message(BOB_ID, GENERAL_ID, "https://example.com/cat.png",
                            embeds=[image_embed("https://example.com/cat.png", still, 64, 48)])

Written from discord.py 2.7.1's ``types/embed.py`` and ``embeds.py`` and payloads Discord sends.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from yarl import URL

if TYPE_CHECKING:
    from bot.testing.fake_discord.server import FakeDiscord

#: MEDIA flag IS_ANIMATED (an embed image/thumbnail that moves)
MEDIA_FLAG_IS_ANIMATED = 1 << 5

DISCORD_CDN = "https://cdn.discordapp.com"
DISCORD_MEDIA = "https://media.discordapp.net"


def source_of(proxy_url: str) -> str | None:
    """The third-party URL a media proxy URL copies (``.../external/{sig}/https/example.com/cat.png``
    -> ``https://example.com/cat.png``); None if ``proxy_url`` is not one."""
    parts = URL(proxy_url).raw_path.split("/")
    # "", "external", signature, scheme, host, path...
    if len(parts) < 5 or parts[1] != "external" or parts[3] not in ("http", "https"):
        return None
    rest = "/".join(parts[5:]).replace("%3F", "?", 1)
    return f"{parts[3]}://{parts[4]}/{rest}"


def embed_media(
    url: str,
    proxy_url: str | None = None,
    width: int | None = None,
    height: int | None = None,
    *,
    content_type: str | None = None,
    flags: int | None = None,
) -> dict[str, Any]:
    """An embed's ``image`` / ``thumbnail`` / ``video`` (EmbedMedia): the original ``url``, the proxy copy
    ``proxy_url``, its size, and (as Discord now sends them) ``content_type`` (guessed from the url when
    not given) and ``flags`` (e.g. :data:`MEDIA_FLAG_IS_ANIMATED`)."""
    media: dict[str, Any] = {"url": url}
    if proxy_url is not None:
        media["proxy_url"] = proxy_url
    if width is not None:
        media["width"] = width
    if height is not None:
        media["height"] = height
    content_type = content_type or mimetypes.guess_type(URL(url).path)[0]
    if content_type is not None:
        media["content_type"] = content_type
    if flags is not None:
        media["flags"] = flags
    return media


def image_embed(url: str, proxy_url: str, width: int | None = None, height: int | None = None) -> dict[str, Any]:
    """A link to a picture (type ``image``): Discord shows the picture itself, which it puts in ``thumbnail``
    (``url`` the original, ``proxy_url`` its copy); there is no ``image``."""
    return {"type": "image", "url": url, "thumbnail": embed_media(url, proxy_url, width, height)}


def article_embed(
    url: str,
    title: str | None = None,
    *,
    description: str | None = None,
    image: dict[str, Any] | None = None,
    thumbnail: dict[str, Any] | None = None,
    kind: str = "article",
    provider: str | None = None,
    site_name: str | None = None,
    color: int | None = None,
) -> dict[str, Any]:
    """A page's preview (type ``article``, ``link`` or, as bots and webhooks send them, ``rich``): ``title``,
    ``description``, a large ``image`` and/or a small ``thumbnail`` (each an :func:`embed_media`),
    ``provider`` (the site's name). ``site_name`` is accepted for ``provider`` too."""
    embed: dict[str, Any] = {"type": kind, "url": url}
    if title is not None:
        embed["title"] = title
    if description is not None:
        embed["description"] = description
    name = provider or site_name
    if name is not None:
        embed["provider"] = {"name": name}
    if color is not None:
        embed["color"] = color
    if image is not None:
        embed["image"] = dict(image)
    if thumbnail is not None:
        embed["thumbnail"] = dict(thumbnail)
    return embed


def gifv_embed(
    url: str,
    video_proxy_url: str,
    thumbnail_proxy_url: str,
    *,
    video_url: str | None = None,
    thumbnail_url: str | None = None,
    width: int = 498,
    height: int = 498,
    provider: str = "Tenor",
    provider_url: str = "https://tenor.co",
) -> dict[str, Any]:
    """A GIF from the GIF picker (type ``gifv``, Tenor or Giphy): ``url`` is the GIF's page
    (``https://tenor.com/view/...``), ``video`` the looping mp4 and ``thumbnail`` a still, each with the
    original (``video_url``/``thumbnail_url``: by default the third-party URL the proxy URL copies, see
    :func:`source_of`) and its ``proxy_url`` (from :meth:`FakeDiscord.add_embed_media`)."""
    video_src = video_url or source_of(video_proxy_url) or video_proxy_url
    thumb_src = thumbnail_url or source_of(thumbnail_proxy_url) or thumbnail_proxy_url
    return {
        "type": "gifv",
        "url": url,
        "provider": {"name": provider, "url": provider_url},
        "thumbnail": embed_media(thumb_src, thumbnail_proxy_url, width, height),
        "video": embed_media(video_src, video_proxy_url, width, height, content_type="video/mp4"),
    }


def point_assets_at(fake: FakeDiscord) -> Callable[[], None]:
    """Make the URLs discord.py computes for assets and stickers point at ``fake``; returns a function
    that undoes it. Process-wide, like ``discord.http.Route.BASE``.

    discord.py builds avatar, icon and sticker URLs on ``discord.asset.Asset.BASE``
    (``https://cdn.discordapp.com``), except a GIF sticker's, which it writes on
    ``https://media.discordapp.net`` itself (``StickerItem.__init__``, ``Sticker._from_data``): this sets
    the first to :attr:`FakeDiscord.cdn_url` and rewrites the second to :attr:`FakeDiscord.media_url` as
    those objects are made. A bot that builds sticker URLs from its own settings (``discord.cdn_url`` /
    ``discord.media_url``) needs this only for ``StickerItem.url``; give it ``fake.cdn_url`` and
    ``fake.media_url`` instead.
    """
    import discord.asset
    import discord.sticker

    asset = discord.asset.Asset
    item_cls = discord.sticker.StickerItem
    sticker_cls = discord.sticker.Sticker
    old_base = asset.BASE
    old_item_init = item_cls.__dict__["__init__"]
    old_from_data = sticker_cls.__dict__["_from_data"]
    cdn, media = fake.cdn_url, fake.media_url

    def rebase(url: str) -> str:
        if url.startswith(DISCORD_MEDIA + "/"):
            return media + url[len(DISCORD_MEDIA) :]
        if url.startswith(DISCORD_CDN + "/"):
            return cdn + url[len(DISCORD_CDN) :]
        return url

    def item_init(self: Any, *args: Any, **kwargs: Any) -> None:
        old_item_init(self, *args, **kwargs)
        self.url = rebase(self.url)

    def from_data(self: Any, data: Any) -> None:
        old_from_data(self, data)
        self.url = rebase(self.url)

    patched: list[tuple[type, str, Any, Any]] = [
        (item_cls, "__init__", item_init, old_item_init),
        (sticker_cls, "_from_data", from_data, old_from_data),
    ]
    asset.BASE = cdn
    for cls, name, new, _ in patched:
        setattr(cls, name, new)

    def restore() -> None:
        asset.BASE = old_base
        for cls, name, _, old in patched:
            setattr(cls, name, old)

    return restore
