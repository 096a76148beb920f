"""Attachment downloads against a real aiohttp server on 127.0.0.1."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from bot.fetch import fetch_bytes, host_allowed
from bot.images import ImageError, ImageLimits

LIMITS = ImageLimits(max_bytes=1000)


@pytest.fixture
async def server():
    hits: list[str] = []

    async def ok(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(body=b"x" * 500, content_type="image/png")

    async def big(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(body=b"x" * 5000, content_type="image/png")

    async def chunked_big(request: web.Request) -> web.StreamResponse:
        hits.append(request.path)
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for _ in range(10):
            await resp.write(b"y" * 400)
        return resp

    async def redirect(request: web.Request) -> web.Response:
        hits.append(request.path)
        raise web.HTTPFound("http://example.invalid/evil.png")

    async def missing(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(status=404)

    app = web.Application()
    app.add_routes([web.get("/ok", ok), web.get("/big", big), web.get("/chunked", chunked_big),
                    web.get("/redirect", redirect), web.get("/missing", missing)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    async with aiohttp.ClientSession() as session:
        yield session, f"http://127.0.0.1:{port}", f"127.0.0.1:{port}", hits
    await runner.cleanup()


async def test_allowed_host_is_fetched(server) -> None:
    session, base, host, hits = server
    assert await fetch_bytes(session, f"{base}/ok", allowed_hosts=[host], limits=LIMITS) == b"x" * 500
    assert hits == ["/ok"]


async def test_other_hosts_are_never_contacted(server) -> None:
    session, base, host, hits = server
    with pytest.raises(ImageError, match="I only read pictures that Discord itself serves: attachments, stickers and Discord's previews of links"):
        await fetch_bytes(session, f"{base}/ok", allowed_hosts=["cdn.discordapp.com"], limits=LIMITS)
    assert hits == []


async def test_redirects_are_not_followed(server) -> None:
    session, base, host, hits = server
    with pytest.raises(ImageError, match="I only read pictures that Discord itself serves: attachments, stickers and Discord's previews of links"):
        await fetch_bytes(session, f"{base}/redirect", allowed_hosts=[host], limits=LIMITS)
    assert hits == ["/redirect"]


async def test_size_limits_hold_even_when_the_length_is_not_declared(server) -> None:
    session, base, host, _ = server
    with pytest.raises(ImageError, match=r"the limit is"):
        await fetch_bytes(session, f"{base}/big", allowed_hosts=[host], limits=LIMITS)
    with pytest.raises(ImageError, match=r"the limit is"):
        await fetch_bytes(session, f"{base}/chunked", allowed_hosts=[host], limits=LIMITS)


async def test_http_errors_become_a_user_line(server) -> None:
    session, base, host, _ = server
    with pytest.raises(ImageError, match="could not download that attachment"):
        await fetch_bytes(session, f"{base}/missing", allowed_hosts=[host], limits=LIMITS)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://cdn.discordapp.com/attachments/1/2/a.png", True),
        ("https://CDN.discordapp.com/a.png", True),
        ("https://cdn.discordapp.com.evil.com/a.png", False),
        ("https://evil.com/cdn.discordapp.com/a.png", False),
        ("file:///etc/passwd", False),
        ("ftp://cdn.discordapp.com/a.png", False),
        ("http://127.0.0.1:8080/a.png", False),
        ("not a url", False),
    ],
)
def test_host_allowed(url: str, allowed: bool) -> None:
    assert host_allowed(url, ["cdn.discordapp.com", "media.discordapp.net"]) is allowed
