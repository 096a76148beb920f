"""Download an attachment: allowed hosts only, no redirects, a byte cap.

This is the only place the bot fetches anything besides talking to Discord.
URLs inside question text are never passed here; attachment URLs are, and
only when their host is in ``images.allowed_hosts``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import aiohttp
from yarl import URL

from bot.i18n import N_
from bot.images import ImageError, ImageLimits, check_declared_size
from bot.reply import NOT_FROM_DISCORD

DOWNLOAD_FAILED = N_("I could not download that attachment, please try again")
DOWNLOAD_TOO_SLOW = N_("downloading that attachment took too long, please try again")

log = logging.getLogger(__name__)


def host_allowed(url: str, allowed_hosts: Sequence[str]) -> bool:
    """True when ``url`` is http(s) and its host (or host:port) is in the list."""
    try:
        parsed = URL(url)
    except ValueError:
        return False
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return False
    host = parsed.host.lower()
    with_port = f"{host}:{parsed.port}" if parsed.port else host
    allowed = {h.lower() for h in allowed_hosts}
    return host in allowed or with_port in allowed


async def fetch_bytes(
    session: aiohttp.ClientSession,
    url: str,
    *,
    allowed_hosts: Sequence[str],
    limits: ImageLimits,
    timeout_s: float = 30.0,
) -> bytes:
    """The body of ``url``, or :class:`ImageError` with a message for the user."""
    if not host_allowed(url, allowed_hosts):
        log.warning("refused to fetch %s: host not in images.allowed_hosts", URL(url).host if url else url)
        raise ImageError(NOT_FROM_DISCORD)
    try:
        async with asyncio.timeout(timeout_s):
            async with session.get(url, allow_redirects=False) as resp:
                if 300 <= resp.status < 400:
                    log.warning("refused a redirect from %s to %s", url, resp.headers.get("Location"))
                    raise ImageError(NOT_FROM_DISCORD)
                if resp.status != 200:
                    log.warning("download of %s failed: HTTP %d", url, resp.status)
                    raise ImageError(DOWNLOAD_FAILED)
                check_declared_size(resp.content_length, limits)
                chunks: list[bytes] = []
                size = 0
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    size += len(chunk)
                    check_declared_size(size, limits)  # the declared size may have lied
                    chunks.append(chunk)
                return b"".join(chunks)
    except TimeoutError:
        log.warning("download of %s timed out after %.0f s", url, timeout_s)
        raise ImageError(DOWNLOAD_TOO_SLOW) from None
    except aiohttp.ClientError as exc:
        log.warning("download of %s failed: %s", url, exc)
        raise ImageError(DOWNLOAD_FAILED) from None
