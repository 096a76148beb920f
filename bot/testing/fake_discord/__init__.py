"""A local fake Discord (REST + gateway + CDN) for end-to-end tests of the real discord.py client.

One aiohttp application on 127.0.0.1 (random free port) serves:

* REST under ``/api/v10`` (login, messages, typing, application commands,
  interaction callbacks and webhooks/follow-ups, ...), every request recorded in
  :attr:`FakeDiscord.requests`, every message the bot creates or edits in
  :attr:`FakeDiscord.sent`;
* the gateway websocket at :attr:`FakeDiscord.gateway_url` (HELLO, heartbeat ACKs,
  IDENTIFY -> READY + GUILD_CREATE, RESUME -> replay + RESUMED, plain TEXT
  frames whatever ``compress=`` the client asks for);
* a CDN for attachments (:meth:`FakeDiscord.add_attachment`), downloads recorded
  in :attr:`FakeDiscord.downloads` (:meth:`FakeDiscord.downloads_at`), plus redirects and plain files;
* the other ways people post pictures, in Discord's payload shapes: embeds whose media
  the fake's media proxy serves (:meth:`FakeDiscord.add_embed_media`, the builders
  :func:`image_embed`, :func:`article_embed`, :func:`gifv_embed`; ``user_message(embeds=...,
  embeds_later=True)`` and :meth:`FakeDiscord.unfurl` for a preview that arrives by
  MESSAGE_UPDATE), stickers (:meth:`FakeDiscord.add_sticker`, ``user_message(stickers=...)``),
  forwards (:meth:`FakeDiscord.user_forward`: ``message_reference`` type 1 and
  ``message_snapshots``), and stand-ins for third-party hosts that record any fetch
  (:meth:`FakeDiscord.third_party_url`);
* more guilds (:meth:`FakeDiscord.add_guild`: READY lists them, a GUILD_CREATE each, their channels'
  messages and interactions carry their ``guild_id``), roles that grant permissions
  (:meth:`FakeDiscord.add_role`, :meth:`FakeDiscord.give_role`, :meth:`FakeDiscord.grant_manage_server`;
  interactions carry ``member.permissions`` and ``app_permissions`` computed from them).

Point discord.py at it (process-wide; restore afterwards)::

    discord.http.Route.BASE = f"{fake.base_url}/api/v10"
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    restore_assets = point_assets_at(fake)  # Asset.BASE and sticker URLs; restore_assets() undoes it

(a bot that builds sticker URLs itself takes ``fake.cdn_url`` and ``fake.media_url``).

Written from discord.py 2.7.1's own source (http.py, gateway.py, state.py,
interactions.py, webhook/async_.py) and Discord's documented payloads.
"""

from bot.testing.fake_discord.ids import (
    ALICE_ID,
    APP_ID,
    BOB_ID,
    BOT_ID,
    BOT_ROLE_ID,
    CAPTIONS_ID,
    DM_CHANNEL_ID,
    EVERYONE_ROLE_ID,
    FLAG_HAS_SNAPSHOT,
    GENERAL_ID,
    GUILD_ID,
    MOD_LOG_ID,
    MOD_ROLE_ID,
    OTHER_BOT_ID,
    OWNER_ID,
    Perm,
)
from bot.testing.fake_discord.media import (
    MEDIA_FLAG_IS_ANIMATED,
    article_embed,
    embed_media,
    gifv_embed,
    image_embed,
    point_assets_at,
    source_of,
)
from bot.testing.fake_discord.records import FailureRule, FakeInteraction, GatewayEvent, RecordedRequest
from bot.testing.fake_discord.server import FakeDiscord

__all__ = [
    "FakeDiscord",
    "RecordedRequest",
    "GatewayEvent",
    "FailureRule",
    "FakeInteraction",
    "BOT_ID",
    "APP_ID",
    "GUILD_ID",
    "OWNER_ID",
    "ALICE_ID",
    "BOB_ID",
    "OTHER_BOT_ID",
    "GENERAL_ID",
    "CAPTIONS_ID",
    "MOD_LOG_ID",
    "DM_CHANNEL_ID",
    "EVERYONE_ROLE_ID",
    "BOT_ROLE_ID",
    "MOD_ROLE_ID",
    "Perm",
    "FLAG_HAS_SNAPSHOT",
    "MEDIA_FLAG_IS_ANIMATED",
    "embed_media",
    "image_embed",
    "article_embed",
    "gifv_embed",
    "source_of",
    "point_assets_at",
]
