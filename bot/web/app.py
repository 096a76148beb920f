"""The playground's aiohttp application: the page, ``/api/info`` and ``/api/ask``.

Routes:

* ``GET /`` and ``GET /static/{name}``: the page (HTML, CSS, JS shipped in
  this package; nothing from another host, enforced by the page's CSP);
* ``GET /api/info``: the model, the answer caps, the upload limit;
* ``POST /api/ask``: see :mod:`bot.web.ask`.

Guards, before any handler: with a token, every ``/api/`` request needs
``Authorization: Bearer TOKEN`` (401 otherwise); without one (loopback
only), the ``Host`` header must name this machine (no DNS rebinding); an
``/api/`` request from a page of another origin is refused (403).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from dataclasses import dataclass
from importlib import resources
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from yarl import URL

from bot.config import WebSettings
from bot.reply import WEB_TOKEN_NEEDED, friendly
from bot.runtime import Runtime
from bot.web.ask import AskHandler
from bot.web.conversations import Conversations

log = logging.getLogger(__name__)

STATIC_TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
#: what the page may load: only from this server (and the chosen image, as a blob: URL)
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@dataclass(slots=True)
class Playground:
    """What the routes share."""

    runtime: Runtime
    settings: WebSettings
    conversations: Conversations

    @property
    def token(self) -> str | None:
        return self.settings.token.get_secret_value() if self.settings.token is not None else None


PLAYGROUND = web.AppKey("playground", Playground)


def is_loopback(host: str) -> bool:
    """``localhost``, ``127.x.x.x`` or ``::1`` (a name or address, with or without brackets)."""
    host = host.strip().strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_name(host_header: str) -> str:
    """The name in a ``Host`` header (``127.0.0.1:8765`` -> ``127.0.0.1``)."""
    try:
        return URL(f"http://{host_header}/").host or ""
    except ValueError:
        return ""


def authorized(request: web.Request, token: str) -> bool:
    """The request carries ``Authorization: Bearer TOKEN`` (compared in constant time)."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def same_origin(request: web.Request) -> bool:
    """No ``Origin`` header (curl, scripts), or the page's own origin."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    try:
        return URL(origin).raw_authority == request.host
    except ValueError:
        return False


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The token, Host and Origin rules (see the module's docstring)."""
    playground = request.app[PLAYGROUND]
    token = playground.token
    if token is None and not is_loopback(_host_name(request.host)):
        return web.Response(status=421, text="this playground answers on localhost only\n")
    if request.path.startswith("/api/"):
        if not same_origin(request):
            return web.Response(status=403, text="requests from another site are refused\n")
        if token is not None and not authorized(request, token):
            body = json.dumps({"error": friendly(WEB_TOKEN_NEEDED)})
            return web.Response(
                status=401, body=body, content_type="application/json", headers={"WWW-Authenticate": "Bearer"}
            )
    return await handler(request)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def _static_file(name: str) -> bytes | None:
    """A file of ``bot/web/static`` (None when there is no such file)."""
    if "/" in name or "\\" in name or name.startswith("."):
        return None
    entry = resources.files("bot.web").joinpath("static", name)
    if not entry.is_file():
        return None
    return entry.read_bytes()


def _static_response(name: str) -> web.Response:
    body = _static_file(name)
    suffix = name[name.rfind("."):] if "." in name else ""
    if body is None or suffix not in STATIC_TYPES:
        raise web.HTTPNotFound()
    return web.Response(body=body, content_type=STATIC_TYPES[suffix], charset="utf-8", headers={"Cache-Control": "no-cache"})


async def index(request: web.Request) -> web.Response:
    return _static_response("index.html")


async def static(request: web.Request) -> web.Response:
    return _static_response(request.match_info["name"])


async def info(request: web.Request) -> web.Response:
    """What the page shows and checks before asking."""
    runtime = request.app[PLAYGROUND].runtime
    gen = runtime.settings.generation
    engine = runtime.engine.info
    body: dict[str, Any] = {
        "model": engine.model,
        "chat_format": engine.chat_format,
        "engines": len(runtime.engines),
        "max_tokens": gen.max_tokens,
        "max_tokens_limit": gen.max_tokens_limit,
        "max_question_chars": gen.max_question_chars,
        "default_question": gen.default_question,
        "max_bytes": runtime.limits.max_bytes,
        "ready": runtime.started,
    }
    return web.json_response(body)


def create_app(runtime: Runtime, settings: WebSettings) -> web.Application:
    """The playground over ``runtime`` (which the caller starts and closes)."""
    app = web.Application(middlewares=[guard])
    conversations = Conversations(settings.conversations, settings.conversation_ttl_s, settings.history_turns)
    app[PLAYGROUND] = Playground(runtime, settings, conversations)
    app.on_response_prepare.append(_security_headers)
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/api/info", info)
    app.router.add_post("/api/ask", AskHandler(runtime, conversations).handle)
    return app
