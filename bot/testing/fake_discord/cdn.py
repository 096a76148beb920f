"""The fake CDN and other non-API paths: hosted attachments, the media proxy (embed pictures and GIF videos),
stickers, plain files, redirects, a stand-in for third-party hosts; every download recorded."""

from __future__ import annotations

import asyncio
import mimetypes
import re
import secrets
import time
from typing import Any

from aiohttp import web
from yarl import URL

from bot.testing.fake_discord.ids import GENERAL_ID, GUILD_ID
from bot.testing.fake_discord.records import ApiError, RecordedRequest
from bot.testing.fake_discord.state import FakeState


class CdnMixin(FakeState):
    """Part of :class:`FakeDiscord`: everything outside ``/api/v10`` and ``/gateway``."""

    # ------------------------------------------------------------------ CDN and other paths

    def add_attachment(
        self,
        filename: str,
        data: bytes,
        content_type: str | None = None,
        size: int | None = None,
        *,
        width: int | None = None,
        height: int | None = None,
        channel_id: int = GENERAL_ID,
        url: str | None = None,
        delay: float = 0.0,
        status: int = 200,
        description: str | None = None,
    ) -> dict[str, Any]:
        """Host ``data`` on the fake CDN; return the attachment dict for messages/interactions.

        ``size`` is the declared size (defaults to ``len(data)``; may differ to test declared-size checks).
        ``url`` overrides the attachment url (e.g. a redirect added with :meth:`add_redirect`);
        ``delay`` slows the download, ``status`` != 200 makes it fail; ``description`` is the alt text.
        """
        att_id = self._snowflake()
        if content_type is None:
            content_type = mimetypes.guess_type(filename)[0]
        path = f"/attachments/{channel_id}/{att_id}/{filename}"
        att: dict[str, Any] = {
            "id": str(att_id),
            "filename": filename,
            "size": len(data) if size is None else size,
            "url": url or self.base_url + path,
            "proxy_url": self.base_url + "/media" + path,
        }
        if content_type is not None:
            att["content_type"] = content_type
        if description is not None:
            att["description"] = description
        if width is not None:
            att["width"] = width
        if height is not None:
            att["height"] = height
        self._blobs[att_id] = {
            "data": data,
            "content_type": content_type or "application/octet-stream",
            "filename": filename,
            "delay": delay,
            "status": status,
        }
        return att

    def add_redirect(self, path: str, location: str, status: int = 302) -> str:
        """Answer GET ``path`` with a redirect to ``location``; return the full URL."""
        self._redirects[path] = (location, status)
        return self.base_url + path

    def add_file(self, path: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Serve ``data`` at ``path`` (recorded in downloads); return the full URL."""
        self._files[path] = {"data": data, "content_type": content_type}
        return self.base_url + path

    def downloads_of(self, attachment: dict[str, Any]) -> list[dict[str, Any]]:
        return [d for d in self.downloads if d.get("attachment_id") == int(attachment["id"])]

    def downloads_at(self, url: str) -> list[dict[str, Any]]:
        """The GET/HEAD requests the fake answered at ``url`` (any of its CDN, media proxy, sticker,
        third-party stand-in or file URLs; the query is ignored). Empty for a URL on another host:
        the fake cannot see those."""
        u = URL(url)
        if u.host != self.host or u.port != self.port:
            return []
        return [d for d in self.downloads if d["path"] == u.path]

    # ------------------------------------------------------------------ media proxy (embeds)

    @staticmethod
    def _external_tail(source_url: str) -> str:
        """Discord's media proxy path tail for a third-party URL: ``https://example.com/a/cat.png`` ->
        ``/https/example.com/a/cat.png`` (a query is kept, escaped: ``%3Fv=1``)."""
        src = URL(source_url)
        if not src.is_absolute() or src.scheme not in ("http", "https"):
            raise ValueError(f"not an absolute http(s) URL: {source_url!r}")
        host = src.host or ""
        if src.explicit_port is not None:
            host = f"{host}:{src.explicit_port}"
        tail = f"/{src.scheme}/{host}{src.raw_path}"
        if src.raw_query_string:
            tail += "%3F" + src.raw_query_string
        return tail

    def add_embed_media(
        self,
        filename: str,
        data: bytes,
        content_type: str | None = None,
        *,
        source_url: str | None = None,
        delay: float = 0.0,
        status: int = 200,
    ) -> str:
        """Serve ``data`` from the fake's media proxy; return its proxy URL (an embed's ``proxy_url``).

        Discord fetches a linked picture (or a GIF's mp4) itself and serves it from its media proxy,
        ``https://images-ext-1.discordapp.net/external/{signature}/https/example.com/cat.png``; here the
        host is the fake's (:attr:`media_url`) and the path has the same shape. ``source_url`` is the
        third-party URL the picture came from (the embed's ``url``; default ``https://example.com/{filename}``),
        never fetched by anyone: see :meth:`third_party_url` to catch a bot that tries.
        ``delay`` slows the download, ``status`` != 200 makes it fail. Downloads are recorded with
        ``via="media_proxy"`` (:meth:`downloads_at`).
        """
        if content_type is None:
            content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        source = source_url or f"https://example.com/{filename}"
        signature = secrets.token_urlsafe(24)
        proxy_url = f"{self.media_url}/external/{signature}{self._external_tail(source)}"
        self._media[URL(proxy_url).path] = {
            "data": data,
            "content_type": content_type,
            "source_url": source,
            "delay": delay,
            "status": status,
        }
        return proxy_url

    def third_party_url(self, url: str) -> str:
        """A stand-in on the fake for the third-party ``url`` (``https://media.tenor.com/x.mp4`` ->
        ``http://127.0.0.1:PORT/third-party/https/media.tenor.com/x.mp4``), for an embed's original ``url``.

        A real third-party host cannot be reached from the tests (and the bot's ``images.allowed_hosts``
        refuses it anyway), so an attempt to fetch one leaves no trace. The stand-in is on the fake's own
        host, which the tests' allow-list admits: a bot that fetches an embed's ``url`` instead of its
        ``proxy_url`` is answered 403 and recorded in :attr:`third_party_fetches`.
        """
        return f"{self.base_url}/third-party{self._external_tail(url)}"

    @property
    def third_party_fetches(self) -> list[dict[str, Any]]:
        """Requests to :meth:`third_party_url` stand-ins (each a :attr:`downloads` entry)."""
        return [d for d in self.downloads if d["via"] == "third_party"]

    # ------------------------------------------------------------------ stickers

    #: sticker format_type -> file extension on Discord's CDN (1 PNG, 2 APNG, 3 LOTTIE, 4 GIF)
    STICKER_EXTENSIONS = {1: "png", 2: "png", 3: "json", 4: "gif"}
    _STICKER_TYPES = {1: "image/png", 2: "image/png", 3: "application/json", 4: "image/gif"}

    def add_sticker(
        self,
        name: str,
        data: bytes,
        format_type: int = 1,
        *,
        sticker_id: int | None = None,
        delay: float = 0.0,
        status: int = 200,
    ) -> dict[str, Any]:
        """Serve a sticker's file; return its sticker item (``{"id", "name", "format_type"}``) for
        ``user_message(stickers=[...])`` / ``user_forward(stickers=[...])``.

        ``format_type``: 1 PNG, 2 APNG, 3 LOTTIE, 4 GIF. Served where Discord serves it:
        ``/stickers/{id}.png`` (PNG, APNG), ``.json`` (Lottie) on the CDN, ``/stickers/{id}.gif`` on the
        media proxy (here both hosts are the fake: :attr:`cdn_url`, :attr:`media_url`); another extension
        is 404. Downloads are recorded with ``via="sticker"``. ``GET /api/v10/stickers/{id}`` answers the
        full sticker (a guild sticker of GUILD_ID).
        """
        if format_type not in self.STICKER_EXTENSIONS:
            raise ValueError(f"unknown sticker format_type {format_type}")
        sid = sticker_id if sticker_id is not None else self._snowflake()
        self._stickers[sid] = {
            "name": name,
            "format_type": format_type,
            "data": data,
            "content_type": self._STICKER_TYPES[format_type],
            "delay": delay,
            "status": status,
        }
        return {"id": str(sid), "name": name, "format_type": format_type}

    def sticker_url(self, sticker: dict[str, Any]) -> str:
        """Where Discord serves a sticker item's file (the fake's equivalent)."""
        ext = self.STICKER_EXTENSIONS.get(int(sticker["format_type"]), "png")
        base = self.media_url if ext == "gif" else self.cdn_url
        return f"{base}/stickers/{sticker['id']}.{ext}"

    async def _get_sticker(self, rec: RecordedRequest, sid: str) -> web.Response:
        s = self._stickers.get(int(sid))
        if s is None:
            raise ApiError(404, 10060, "Unknown sticker")
        return self._json(
            {
                "id": sid,
                "name": s["name"],
                "description": "",
                "tags": s["name"],
                "type": 2,
                "format_type": s["format_type"],
                "available": True,
                "guild_id": str(GUILD_ID),
            }
        )

    # ------------------------------------------------------------------ serving

    _CDN = re.compile(r"(?P<proxy>/media)?/attachments/(?P<cid>\d+)/(?P<aid>\d+)/(?P<filename>[^/]+)")
    _STICKER = re.compile(r"/stickers/(?P<sid>\d+)\.(?P<ext>[a-z]+)")

    async def _other_handler(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        rec = RecordedRequest(
            method=request.method,
            path=path,
            query=dict(request.query),
            json=None,
            files=[],
            headers=dict(request.headers),
            time=time.monotonic(),
            api=False,
        )
        self.requests.append(rec)
        response = await self._answer_other(rec, request)
        rec.status = response.status
        self._notify()
        return response

    async def _answer_other(self, rec: RecordedRequest, request: web.Request) -> web.StreamResponse:
        path = rec.path
        rule = self._take_rule(rec.method, path)
        download = {"path": path, "headers": rec.headers, "time": rec.time, "via": "other", "attachment_id": None}
        m = self._CDN.fullmatch(path)
        if m:
            download.update(via="proxy" if m.group("proxy") else "cdn", attachment_id=int(m.group("aid")))
        media = self._media.get(path)
        if media is not None:
            download.update(via="media_proxy", source_url=media["source_url"])
        sm = self._STICKER.fullmatch(path)
        if sm:
            download.update(via="sticker", sticker_id=int(sm.group("sid")))
        if path.startswith("/third-party/"):
            download["via"] = "third_party"
        if rec.method in ("GET", "HEAD"):
            if path in self._redirects:
                download["via"] = "redirect"
            self.downloads.append(download)
        if rule is not None:
            if rule.delay:
                await asyncio.sleep(rule.delay)
            if rule.status is not None:
                rec.injected = True
                return self._failure_response(rule)
        if rec.method not in ("GET", "HEAD"):
            return web.Response(status=405)
        if path in self._redirects:
            location, status = self._redirects[path]
            return web.Response(status=status, headers={"Location": location})
        if path in self._files:
            f = self._files[path]
            return web.Response(body=f["data"], content_type=f["content_type"])
        if download["via"] == "third_party":
            return web.Response(status=403, text="third-party host: not reachable from the tests")
        blob: dict[str, Any] | None = media
        if sm:
            blob = self._stickers.get(int(sm.group("sid")))
            if blob is not None and self.STICKER_EXTENSIONS[blob["format_type"]] != sm.group("ext"):
                blob = None
        if media is not None or sm:
            if blob is None:
                return web.Response(status=404, text="Not Found")
            if blob["delay"]:
                await asyncio.sleep(blob["delay"])
            if blob["status"] != 200:
                return web.Response(status=blob["status"], text="error")
            return web.Response(body=blob["data"], content_type=blob["content_type"])
        if m:
            blob = self._blobs.get(int(m.group("aid")))
            if blob is None or blob["filename"] != m.group("filename"):
                return web.Response(status=404, text="Not Found")
            if blob["delay"]:
                await asyncio.sleep(blob["delay"])
            if blob["status"] != 200:
                return web.Response(status=blob["status"], text="error")
            return web.Response(body=blob["data"], content_type=blob["content_type"])
        return web.Response(status=404, text="Not Found")
