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
  in :attr:`FakeDiscord.downloads`, plus redirects and plain files.

Point discord.py at it (process-wide; restore afterwards)::

    discord.http.Route.BASE = f"{fake.base_url}/api/v10"
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)

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
    GENERAL_ID,
    GUILD_ID,
    MOD_LOG_ID,
    MOD_ROLE_ID,
    OTHER_BOT_ID,
    OWNER_ID,
    Perm,
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
]
