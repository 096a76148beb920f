"""Messages: the REST routes the bot uses (send, edit, delete, history, typing, reactions) and users posting, editing, deleting."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from bot.testing.fake_discord.ids import (
    BOT_ID,
    FLAG_EPHEMERAL,
    FLAG_HAS_SNAPSHOT,
    FLAG_LOADING,
    GUILD_ID,
    INTENT_MESSAGE_CONTENT,
    Perm,
    iso,
)
from bot.testing.fake_discord.records import ApiError, GatewayEvent, RecordedRequest, form_error
from bot.testing.fake_discord.state import FakeState

_USER_MENTION = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION = re.compile(r"<@&(\d+)>")


class MessagesMixin(FakeState):
    """Part of :class:`FakeDiscord`: the message store, Discord's validation and mention rules, and MESSAGE_* events."""

    # ------------------------------------------------------------------ messages

    def _rest_message(self, msg: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in msg.items() if k != "member"}
        thread = self._thread_of_message(msg)
        if thread is not None:  # the thread started from it, as it is now
            out["thread"] = thread
        return out

    async def _get_history(self, rec: RecordedRequest, cid: str) -> web.Response:
        self._channel(cid)
        limit = int(rec.query.get("limit", 50))
        before = int(rec.query["before"]) if "before" in rec.query else None
        after = int(rec.query["after"]) if "after" in rec.query else None
        msgs = [m for mid, m in self.messages.items() if m["channel_id"] == cid]
        msgs.sort(key=lambda m: int(m["id"]), reverse=True)
        if before is not None:
            msgs = [m for m in msgs if int(m["id"]) < before]
        if after is not None:
            msgs = [m for m in msgs if int(m["id"]) > after]
        return self._json([self._rest_message(m) for m in msgs[:limit]])

    def _stored(self, cid: Any, mid: Any) -> dict[str, Any]:
        msg = self.messages.get(int(mid))
        if msg is None or msg["channel_id"] != str(cid):
            raise ApiError(404, 10008, "Unknown Message")
        return msg

    async def _get_message(self, rec: RecordedRequest, cid: str, mid: str) -> web.Response:
        self._channel(cid)
        return self._json(self._rest_message(self._stored(cid, mid)))

    @staticmethod
    def _validate_message(data: dict[str, Any], files: list[dict[str, Any]], *, creating: bool, kept_attachments: int = 0) -> None:
        content = data.get("content") or ""
        if len(content) > 2000:
            raise form_error("content", "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.")
        embeds = data.get("embeds") or []
        if len(embeds) > 10:
            raise form_error("embeds", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
        total = 0
        for i, e in enumerate(embeds):
            for key, limit in (("title", 256), ("description", 4096)):
                value = e.get(key) or ""
                total += len(value)
                if len(value) > limit:
                    raise form_error(f"embeds.{i}.{key}", "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")
            footer = (e.get("footer") or {}).get("text") or ""
            author = (e.get("author") or {}).get("name") or ""
            total += len(footer) + len(author)
            if len(footer) > 2048:
                raise form_error(f"embeds.{i}.footer.text", "BASE_TYPE_MAX_LENGTH", "Must be 2048 or fewer in length.")
            fields = e.get("fields") or []
            if len(fields) > 25:
                raise form_error(f"embeds.{i}.fields", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
            for f in fields:
                total += len(f.get("name") or "") + len(f.get("value") or "")
        if total > 6000:
            raise form_error("embeds", "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000")
        if creating and not content and not embeds and not files and not kept_attachments and not data.get("sticker_ids") and not data.get("poll"):
            raise ApiError(400, 50006, "Cannot send an empty message")

    def _store_upload(self, f: dict[str, Any], channel_id: int) -> dict[str, Any]:
        # Discord names the type from the file (clients, discord.py too, upload as octet-stream)
        declared = f.get("content_type")
        content_type = None if declared in (None, "application/octet-stream") else declared
        return self.add_attachment(f["filename"], f["data"], content_type=content_type, channel_id=channel_id)

    def _resolve_mentions(
        self, content: str, allowed: dict[str, Any] | None, replied_author: int | None, guild: bool
    ) -> tuple[list[dict[str, Any]], list[str], bool]:
        """What Discord would actually ping, honouring allowed_mentions (absent: everything parses)."""
        parse = set(allowed.get("parse", [])) if allowed is not None else {"users", "roles", "everyone"}
        allowed_users = {str(u) for u in (allowed or {}).get("users", [])}
        allowed_roles = {str(r) for r in (allowed or {}).get("roles", [])}
        ids: list[int] = []
        for m in _USER_MENTION.finditer(content):
            uid = int(m.group(1))
            if uid in self.users and ("users" in parse or str(uid) in allowed_users) and uid not in ids:
                ids.append(uid)
        if replied_author is not None and replied_author not in ids:
            if allowed is None or allowed.get("replied_user"):
                ids.append(replied_author)
        mentions = []
        for uid in ids:
            u = dict(self.users[uid])
            if guild and uid in self.members:
                u["member"] = self.member_payload(uid, with_user=False)
            mentions.append(u)
        roles = [
            m.group(1)
            for m in _ROLE_MENTION.finditer(content)
            if int(m.group(1)) in self.roles and ("roles" in parse or m.group(1) in allowed_roles)
        ]
        everyone = ("@everyone" in content or "@here" in content) and "everyone" in parse
        return mentions, roles, everyone

    def _make_message(
        self,
        *,
        author_id: int,
        channel_id: int,
        content: str,
        attachments: Iterable[dict[str, Any]] = (),
        embeds: Iterable[dict[str, Any]] = (),
        mentions: Iterable[dict[str, Any]] = (),
        mention_roles: Iterable[str] = (),
        mention_everyone: bool = False,
        reference: dict[str, Any] | None = None,
        msg_type: int = 0,
        flags: int = 0,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        ch = self._channel(channel_id)
        msg: dict[str, Any] = {
            "id": str(self._snowflake()),
            "channel_id": str(channel_id),
            "author": self.users[author_id],
            "content": content,
            "timestamp": iso(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": mention_everyone,
            "mentions": list(mentions),
            "mention_roles": list(mention_roles),
            "attachments": list(attachments),
            "embeds": list(embeds),
            "pinned": False,
            "type": msg_type,
            "flags": flags,
            "components": [],
        }
        if ch["type"] != 1:
            guild_id = int(ch.get("guild_id") or GUILD_ID)
            msg["guild_id"] = str(guild_id)
            if author_id in self.guild_members(guild_id):
                msg["member"] = self.member_payload(author_id, with_user=False, guild_id=guild_id)
        if reference is not None:
            ref_msg = self.messages.get(int(reference["message_id"]))
            msg["message_reference"] = {
                "type": 0,
                "message_id": str(reference["message_id"]),
                "channel_id": str(reference.get("channel_id") or channel_id),
                **({"guild_id": msg["guild_id"]} if ch["type"] != 1 else {}),
            }
            if ref_msg is not None:
                msg["referenced_message"] = {k: v for k, v in ref_msg.items() if k not in ("referenced_message", "member")}
            else:
                msg["referenced_message"] = None
            if msg_type == 0:
                msg["type"] = 19
        if extra:
            msg.update(extra)
        ch["last_message_id"] = msg["id"]
        self._count_in_thread(ch, msg)
        self.messages[int(msg["id"])] = msg
        return msg

    def _gateway_message(self, msg: dict[str, Any]) -> dict[str, Any]:
        """The MESSAGE_CREATE/UPDATE shape, without content when the session lacks the message-content intent."""
        out = dict(msg)
        thread = self._thread_of_message(msg)
        if thread is not None:
            out["thread"] = thread
        if not self._intents & INTENT_MESSAGE_CONTENT and "guild_id" in msg and msg["author"]["id"] != str(BOT_ID):
            mentioned = any(u["id"] == str(BOT_ID) for u in msg.get("mentions", []))
            if not mentioned:
                out.update(content="", embeds=[], attachments=[], components=[])
                out.pop("poll", None)
                if "message_snapshots" in msg:  # a forward's content is content too
                    out["message_snapshots"] = [
                        {"message": {**s["message"], "content": "", "embeds": [], "attachments": [], "components": []}}
                        for s in msg["message_snapshots"]
                    ]
        return out

    def _bot_message_from_payload(
        self,
        channel_id: int,
        data: dict[str, Any],
        files: list[dict[str, Any]],
        *,
        msg_type: int = 0,
        flags: int = 0,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        if sum(f["size"] for f in files) > self.upload_limit:
            raise ApiError(413, 40005, "Request entity too large")
        self._validate_message(data, files, creating=True)
        reference = data.get("message_reference")
        replied_author = None
        if reference:
            target = self.messages.get(int(reference.get("message_id", 0)))
            if target is not None and target["channel_id"] != str(reference.get("channel_id") or channel_id):
                target = None  # the message is looked up in the reference's channel
            if target is not None and target["channel_id"] != str(channel_id):
                target = None  # a reply is in its message's channel (a thread's is the thread)
            if target is None:
                if reference.get("fail_if_not_exists", True):
                    raise form_error(
                        "message_reference", "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message"
                    )
                reference = None
            else:
                replied_author = int(target["author"]["id"])
        content = data.get("content") or ""
        mentions, roles, everyone = self._resolve_mentions(
            content, data.get("allowed_mentions"), replied_author, not self._is_dm(channel_id)
        )
        attachments = [self._store_upload(f, channel_id) for f in files]
        return self._make_message(
            author_id=BOT_ID,
            channel_id=channel_id,
            content=content,
            attachments=attachments,
            embeds=data.get("embeds") or [],
            mentions=mentions,
            mention_roles=roles,
            mention_everyone=everyone,
            reference=reference,
            msg_type=msg_type,
            flags=flags | (data.get("flags") or 0),
            extra={"components": data.get("components") or [], **(extra or {})},
        )

    def _record_sent(
        self,
        msg: dict[str, Any],
        via: str,
        payload: dict[str, Any] | None,
        files: list[dict[str, Any]],
        **extra: Any,
    ) -> dict[str, Any]:
        payload = payload or {}
        rec = {
            "id": int(msg["id"]),
            "channel_id": int(msg["channel_id"]),
            "guild_id": int(msg["guild_id"]) if "guild_id" in msg else None,
            "content": msg["content"],
            "embeds": msg.get("embeds", []),
            "attachments": msg.get("attachments", []),
            "files": [{k: f[k] for k in ("filename", "content_type", "size", "data")} for f in files],
            "message_reference": payload.get("message_reference"),
            "allowed_mentions": payload.get("allowed_mentions"),
            "mentions": [int(u["id"]) for u in msg.get("mentions", [])],
            "mention_roles": [int(r) for r in msg.get("mention_roles", [])],
            "mention_everyone": msg.get("mention_everyone", False),
            "flags": msg.get("flags", 0),
            "via": via,
            "interaction_id": None,
            "payload": payload,
            "message": msg,
            "time": time.monotonic(),
        }
        rec.update(extra)
        self.sent.append(rec)
        self._notify()
        return rec

    def _echo(self, t: str, msg: dict[str, Any]) -> None:
        if self.session_id is None:
            return
        if msg.get("flags", 0) & FLAG_EPHEMERAL:
            return  # ephemeral messages never reach the gateway
        self._dispatch(t, self._gateway_message(msg))

    async def _post_message(self, rec: RecordedRequest, cid: str) -> web.Response:
        channel_id = int(self._channel(cid)["id"])
        self._open_for_posting(channel_id, BOT_ID)
        data = rec.json if isinstance(rec.json, dict) else {}
        nonce = data.get("nonce")
        if nonce is not None and len(str(nonce)) > 25:
            raise form_error("nonce", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
        if nonce is not None and data.get("enforce_nonce") and self.honour_nonces:
            earlier = self.nonces.get(str(nonce))
            if earlier is not None and time.monotonic() - earlier[1] <= self.nonce_window_s:
                # Discord: the same author's create with the same nonce within the window
                # returns the message already created; if that one was deleted, 404 10008
                kept = self.messages.get(earlier[0])
                if kept is None:
                    raise ApiError(404, 10008, "Unknown Message")
                self.nonce_hits.append({"nonce": str(nonce), "id": earlier[0], "time": time.monotonic()})
                self._notify()
                return self._json(self._rest_message(kept))
        msg = self._bot_message_from_payload(channel_id, data, rec.files)
        if nonce is not None:
            msg["nonce"] = str(nonce)
            if data.get("enforce_nonce"):
                self.nonces[str(nonce)] = (int(msg["id"]), time.monotonic())
        self._record_sent(msg, "channel", data, rec.files)
        self._echo("MESSAGE_CREATE", msg)
        return self._json(self._rest_message(msg))

    def _apply_edit(self, msg: dict[str, Any], data: dict[str, Any], files: list[dict[str, Any]]) -> None:
        self._check_editable(int(msg["channel_id"]))
        if sum(f["size"] for f in files) > self.upload_limit:
            raise ApiError(413, 40005, "Request entity too large")
        kept = msg.get("attachments", [])
        if "attachments" in data:
            keep_ids = {str(a.get("id")) for a in data["attachments"] or []}
            kept = [a for a in kept if a["id"] in keep_ids]
        self._validate_message(data, files, creating=False)
        if "content" in data:
            msg["content"] = data["content"] or ""
        if "embeds" in data:
            msg["embeds"] = data["embeds"] or []
        if "flags" in data and data["flags"] is not None:
            msg["flags"] = (msg.get("flags", 0) & (FLAG_EPHEMERAL | FLAG_LOADING)) | data["flags"]
        if "components" in data:
            msg["components"] = data["components"] or []
        msg["attachments"] = kept + [self._store_upload(f, int(msg["channel_id"])) for f in files]
        replied = None
        ref = msg.get("referenced_message")
        if ref:
            replied = int(ref["author"]["id"])
        mentions, roles, everyone = self._resolve_mentions(
            msg["content"], data.get("allowed_mentions"), None, "guild_id" in msg
        )
        # an edit never adds a reply ping: keep the replied user only if it was already there
        if replied is not None and any(u["id"] == str(replied) for u in msg.get("mentions", [])):
            if not any(u["id"] == str(replied) for u in mentions):
                mentions.append(next(u for u in msg["mentions"] if u["id"] == str(replied)))
        msg["mentions"], msg["mention_roles"], msg["mention_everyone"] = mentions, roles, everyone
        if not (msg["content"] or msg["embeds"] or msg["attachments"] or msg.get("flags", 0) & FLAG_LOADING):
            raise ApiError(400, 50006, "Cannot send an empty message")
        msg["edited_timestamp"] = iso()

    async def _edit_message(self, rec: RecordedRequest, cid: str, mid: str) -> web.Response:
        self._channel(cid)
        msg = self._stored(cid, mid)
        if msg["author"]["id"] != str(BOT_ID):
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        data = rec.json if isinstance(rec.json, dict) else {}
        self._apply_edit(msg, data, rec.files)
        self._record_sent(msg, "edit", data, rec.files)
        self._echo("MESSAGE_UPDATE", msg)
        return self._json(self._rest_message(msg))

    def _forget_message(self, msg: dict[str, Any], via: str) -> GatewayEvent | None:
        del self.messages[int(msg["id"])]
        channel = self.channels.get(int(msg["channel_id"]))
        if channel is not None and "thread_metadata" in channel and msg.get("position"):
            channel["message_count"] = max(0, channel["message_count"] - 1)
        self.deleted.append(
            {"id": int(msg["id"]), "channel_id": int(msg["channel_id"]), "via": via, "time": time.monotonic()}
        )
        self._notify()
        if self.session_id is not None and not msg.get("flags", 0) & FLAG_EPHEMERAL:
            d = {"id": msg["id"], "channel_id": msg["channel_id"]}
            if "guild_id" in msg:
                d["guild_id"] = msg["guild_id"]
            return self._dispatch("MESSAGE_DELETE", d)
        return None

    async def _delete_message(self, rec: RecordedRequest, cid: str, mid: str) -> web.Response:
        self._channel(cid)
        msg = self._stored(cid, mid)
        if msg["author"]["id"] != str(BOT_ID) and not self.permissions(BOT_ID, int(cid)) & Perm.MANAGE_MESSAGES:
            raise ApiError(403, 50013, "Missing Permissions")
        self._forget_message(msg, "channel")
        return self._no_content()

    async def _typing(self, rec: RecordedRequest, cid: str) -> web.Response:
        self._channel(cid)
        self.typing.append({"channel_id": int(cid), "time": time.monotonic()})
        self._notify()
        return self._no_content()

    def _record_reaction(self, cid: str, mid: str, emoji: str, added: bool) -> web.Response:
        from urllib.parse import unquote

        self._channel(cid)
        self._stored(cid, mid)
        self.reactions.append(
            {"channel_id": int(cid), "message_id": int(mid), "emoji": unquote(emoji), "added": added, "time": time.monotonic()}
        )
        self._notify()
        return self._no_content()

    async def _add_reaction(self, rec: RecordedRequest, cid: str, mid: str, emoji: str) -> web.Response:
        return self._record_reaction(cid, mid, emoji, added=True)

    async def _remove_reaction(self, rec: RecordedRequest, cid: str, mid: str, emoji: str) -> web.Response:
        return self._record_reaction(cid, mid, emoji, added=False)

    # ------------------------------------------------------------------ user actions

    async def user_message(
        self,
        author_id: int,
        channel_id: int,
        content: str = "",
        attachments: Iterable[dict[str, Any]] = (),
        mentions_bot: bool = False,
        reference_message_id: int | None = None,
        *,
        ping_reply: bool = False,
        embeds: Iterable[dict[str, Any]] = (),
        stickers: Iterable[dict[str, Any]] = (),
        embeds_later: bool = False,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        """A user posts a message; returns the stored payload once MESSAGE_CREATE went over the websocket.

        ``mentions_bot`` prefixes ``<@9000>`` (unless already in content) and lists the bot in ``mentions``;
        ``reference_message_id`` makes it a reply (``message_reference`` + ``referenced_message``);
        ``ping_reply`` also pings the replied-to author, like Discord's reply ping.
        ``embeds``: embed dicts as Discord sends them (:func:`image_embed`, :func:`article_embed`,
        :func:`gifv_embed`); ``stickers``: sticker items (:meth:`add_sticker`), sent as ``sticker_items``.
        ``embeds_later``: like a link Discord unfurls after the fact, MESSAGE_CREATE goes without the
        embeds and a MESSAGE_UPDATE (:meth:`unfurl`) brings them; returns once both went over.
        """
        ch = self._channel(channel_id)
        self._open_for_posting(channel_id, author_id)  # in an archived thread: unarchived first
        bot_mention = f"<@{BOT_ID}>"
        if mentions_bot and bot_mention not in content and f"<@!{BOT_ID}>" not in content:
            content = f"{bot_mention} {content}".rstrip()
        is_guild = ch["type"] != 1
        mentions, roles, everyone = self._resolve_mentions(content, {"parse": ["users", "roles", "everyone"]}, None, is_guild)
        if not mentions_bot:
            mentions = [u for u in mentions if u["id"] != str(BOT_ID)]
        elif not any(u["id"] == str(BOT_ID) for u in mentions):
            mentions.insert(0, self._resolve_mentions(bot_mention, None, None, is_guild)[0][0])
        reference = None
        if reference_message_id is not None:
            target = self.messages.get(int(reference_message_id))
            if target is None:
                raise KeyError(f"no stored message {reference_message_id}")
            reference = {"message_id": reference_message_id, "channel_id": target["channel_id"]}
            replied = int(target["author"]["id"])
            if ping_reply and not any(u["id"] == str(replied) for u in mentions):
                mentions.append(self._resolve_mentions(f"<@{replied}>", None, None, is_guild)[0][0])
        embed_list = [dict(e) for e in embeds]
        sticker_items = [dict(st) for st in stickers]
        msg = self._make_message(
            author_id=author_id,
            channel_id=channel_id,
            content=content,
            attachments=[dict(a) for a in attachments],
            embeds=[] if embeds_later else embed_list,
            mentions=mentions,
            mention_roles=roles,
            mention_everyone=everyone,
            reference=reference,
            extra={"sticker_items": sticker_items} if sticker_items else None,
        )
        await self._delivered(self._dispatch("MESSAGE_CREATE", self._gateway_message(msg)), timeout)
        if embeds_later and embed_list:
            await self.unfurl(int(msg["id"]), embed_list, timeout=timeout)
        return msg

    async def unfurl(self, message_id: int, embeds: Iterable[dict[str, Any]], timeout: float = 10.0) -> dict[str, Any]:
        """Discord's link preview arrives for a stored message: its embeds are added and a MESSAGE_UPDATE
        (the full message, as Discord sends it) goes out. ``edited_timestamp`` is left alone: an unfurl
        is not an edit. Returns the stored message once the event went over the websocket."""
        msg = self.messages[int(message_id)]
        msg["embeds"] = list(msg.get("embeds", [])) + [dict(e) for e in embeds]
        await self._delivered(self._dispatch("MESSAGE_UPDATE", self._gateway_message(msg)), timeout)
        return msg

    @staticmethod
    def _snapshot_of(msg: dict[str, Any]) -> dict[str, Any]:
        """The part of a message a forward carries (Discord's message snapshot: no author, id nor channel)."""
        snap: dict[str, Any] = {
            "type": msg.get("type", 0) if msg.get("type", 0) != 19 else 0,
            "content": msg.get("content", ""),
            "embeds": list(msg.get("embeds", [])),
            "attachments": list(msg.get("attachments", [])),
            "timestamp": msg.get("timestamp") or iso(),
            "edited_timestamp": msg.get("edited_timestamp"),
            "flags": msg.get("flags", 0),
            "mentions": list(msg.get("mentions", [])),
            "mention_roles": list(msg.get("mention_roles", [])),
            "components": list(msg.get("components", [])),
        }
        if msg.get("sticker_items"):
            snap["sticker_items"] = list(msg["sticker_items"])
        return snap

    async def user_forward(
        self,
        user_id: int,
        channel_id: int,
        original_message_id: int | None = None,
        *,
        content: str = "",
        attachments: Iterable[dict[str, Any]] = (),
        embeds: Iterable[dict[str, Any]] = (),
        stickers: Iterable[dict[str, Any]] = (),
        source_channel_id: int | None = None,
        source_guild_id: int | None = None,
        comment: str | None = None,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        """A user forwards a message into ``channel_id``; returns the stored forward once its
        MESSAGE_CREATE went over the websocket.

        The forward is Discord's: ``type`` 0, empty content, ``flags`` HAS_SNAPSHOT (1 << 14),
        ``message_reference`` of type 1 (FORWARD) to the original, and ``message_snapshots``
        ``[{"message": {type, content, embeds, attachments, timestamp, edited_timestamp, flags, mentions,
        mention_roles, components, sticker_items?}}]`` (the attachments keep their CDN URLs); no
        ``referenced_message``.

        ``original_message_id`` of a stored message: the snapshot is that message as it is now.
        Otherwise (a channel the bot cannot see, another server) the snapshot is ``content``,
        ``attachments``, ``embeds`` and ``stickers``, the reference points at ``original_message_id``
        (default: a new id) in ``source_channel_id`` (default: a channel the fake does not know) of
        ``source_guild_id`` (default: another server; pass GUILD_ID for a hidden channel of this one).
        ``comment``: the text the user adds, which Discord posts as a second, ordinary message right
        after the forward.
        """
        original = self.messages.get(int(original_message_id)) if original_message_id is not None else None
        if original is not None:
            snapshot = self._snapshot_of(original)
            ref_channel = original["channel_id"]
            ref_guild = original.get("guild_id")
            ref_id = original["id"]
        else:
            snapshot = self._snapshot_of(
                {
                    "content": content,
                    "attachments": [dict(a) for a in attachments],
                    "embeds": [dict(e) for e in embeds],
                    "sticker_items": [dict(st) for st in stickers],
                }
            )
            ref_id = str(original_message_id if original_message_id is not None else self._snowflake())
            ref_channel = str(source_channel_id if source_channel_id is not None else self._snowflake())
            guild = source_guild_id if source_guild_id is not None else self._snowflake()
            ref_guild = str(guild)
        reference: dict[str, Any] = {"type": 1, "channel_id": ref_channel, "message_id": ref_id}
        if ref_guild is not None:
            reference["guild_id"] = ref_guild
        msg = self._make_message(
            author_id=user_id,
            channel_id=channel_id,
            content="",
            flags=FLAG_HAS_SNAPSHOT,
            extra={"message_reference": reference, "message_snapshots": [{"message": snapshot}]},
        )
        await self._delivered(self._dispatch("MESSAGE_CREATE", self._gateway_message(msg)), timeout)
        if comment:
            await self.user_message(user_id, channel_id, comment, timeout=timeout)
        return msg

    async def user_edit(self, message_id: int, content: str, timeout: float = 10.0) -> dict[str, Any]:
        """A user edits their message -> MESSAGE_UPDATE."""
        msg = self.messages[int(message_id)]
        msg["content"] = content
        msg["edited_timestamp"] = iso()
        await self._delivered(self._dispatch("MESSAGE_UPDATE", self._gateway_message(msg)), timeout)
        return msg

    async def user_delete(self, message_id: int, timeout: float = 10.0) -> None:
        """A user deletes a message -> MESSAGE_DELETE."""
        msg = self.messages[int(message_id)]
        entry = self._forget_message(msg, "user")
        if entry is not None:
            await self._delivered(entry, timeout)
