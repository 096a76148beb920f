"""The fake CDN and other non-API paths: hosted attachments, plain files, redirects; every download recorded."""

from __future__ import annotations

import asyncio
import mimetypes
import re
import time
from typing import Any

from aiohttp import web

from bot.testing.fake_discord.ids import GENERAL_ID
from bot.testing.fake_discord.records import RecordedRequest
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

    _CDN = re.compile(r"(?P<proxy>/media)?/attachments/(?P<cid>\d+)/(?P<aid>\d+)/(?P<filename>[^/]+)")

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
