"""The playground: a web page and ``POST /api/ask`` (server-sent events) over the
same :class:`~bot.runtime.Runtime` as the bot.  Nothing here imports discord.

``llava-bot serve`` runs it alone; ``web.enabled`` runs it beside the bot.
"""

from __future__ import annotations

from bot.web.app import create_app, is_loopback
from bot.web.server import WebServer, check_bind, serve

__all__ = ["WebServer", "check_bind", "create_app", "is_loopback", "serve"]
