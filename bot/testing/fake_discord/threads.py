"""Threads: starting them (from a message or not), messages in them, archiving, and their gateway events.

What Discord does, as its API documentation describes it (resources/channel "Start Thread from Message",
"Start Thread without Message", "Thread Metadata Object"; topics/threads; events "Thread Create",
"Thread Update", "Thread Members Update"):

* a thread is a channel (``type`` 11 public, 12 private, 10 in an announcement channel) with ``parent_id``,
  ``owner_id`` (who started it), ``message_count``, ``member_count``, ``total_message_sent`` and
  ``thread_metadata`` (``archived``, ``auto_archive_duration``, ``archive_timestamp``, ``locked``,
  ``create_timestamp``); messages in it carry the thread's id as ``channel_id`` and a ``position``;
* a thread started from a message has that message's id (one thread per message: a second start is
  400, code 160004); the message gets ``thread`` and the ``HAS_THREAD`` flag, and a MESSAGE_UPDATE
  says so; the thread's first message is a ``THREAD_STARTER_MESSAGE`` (type 21) that only references
  the message (kept in the thread's history, not sent over the gateway);
* THREAD_CREATE (the channel and ``newly_created``) goes to those who can see the parent, then
  THREAD_MEMBERS_UPDATE adds the creator (sent to the bot only when the bot is the one added, as
  without the members intent);
* permissions are the parent channel's: starting a public thread needs Create Public Threads (a
  private one Create Private Threads), posting in a thread needs Send Messages in Threads (Send
  Messages does not count there); a missing one is 403, code 50013;
* posting in an archived thread unarchives it (THREAD_UPDATE) unless it is locked (400, code 50083
  for anyone without Manage Threads); messages in an archived thread cannot be edited (400, 50083);
  poster joins the thread (the API adds them);
* READY's guilds carry their active threads in GUILD_CREATE ``threads``; guild channel lists never list
  threads; GET /channels/{thread} adds the bot's thread ``member`` when it joined.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bot.testing.fake_discord.ids import (
    ANNOUNCEMENT_THREAD,
    BOT_ID,
    FLAG_HAS_THREAD,
    INTENT_GUILD_MEMBERS,
    MSG_THREAD_STARTER,
    PRIVATE_THREAD,
    PUBLIC_THREAD,
    THREAD_TYPES,
    Perm,
    iso,
)
from bot.testing.fake_discord.records import ApiError, RecordedRequest, form_error
from bot.testing.fake_discord.state import FakeState

#: the auto-archive durations Discord takes, in minutes
ARCHIVE_DURATIONS = (60, 1440, 4320, 10080)
#: what Discord says for an action on an archived (or locked) thread
THREAD_ARCHIVED = (400, 50083, "Thread is archived")


class ThreadsMixin(FakeState):
    """Part of :class:`FakeDiscord`: threads (see the module docstring)."""

    # ------------------------------------------------------------------ reading

    def is_thread(self, channel_id: Any) -> bool:
        ch = self.channels.get(int(channel_id))
        return ch is not None and ch["type"] in THREAD_TYPES

    @property
    def threads(self) -> list[dict[str, Any]]:
        """Every thread, oldest first."""
        return sorted((c for c in self.channels.values() if c["type"] in THREAD_TYPES), key=lambda c: int(c["id"]))

    def thread_messages(self, thread_id: int) -> list[dict[str, Any]]:
        """The messages of a thread, oldest first (its starter marker, type 21, included)."""
        return sorted((m for m in self.messages.values() if m["channel_id"] == str(thread_id)), key=lambda m: int(m["id"]))

    def _thread_payload(self, thread: dict[str, Any], for_user: int | None = BOT_ID) -> dict[str, Any]:
        """The thread as REST returns it: with the caller's thread ``member`` when they joined it."""
        out = dict(thread, thread_metadata=dict(thread["thread_metadata"]))
        member = self.thread_members.get(int(thread["id"]), {}).get(for_user) if for_user is not None else None
        if member is not None:
            out["member"] = dict(member)
        return out

    def _thread_of_message(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        """The thread started from ``msg`` (same id, in its channel), as a message's ``thread`` field."""
        thread = self.channels.get(int(msg["id"]))
        if thread is None or thread["type"] not in THREAD_TYPES or thread.get("parent_id") != msg["channel_id"]:
            return None
        return self._thread_payload(thread)

    def _parent_of(self, channel_id: int) -> int:
        """The channel whose permissions apply: a thread's parent, else the channel itself."""
        ch = self.channels[int(channel_id)]
        return int(ch["parent_id"]) if ch["type"] in THREAD_TYPES else int(channel_id)

    def _need(self, user_id: int, channel_id: int, perms: int) -> None:
        if self.permissions(user_id, channel_id) & perms != perms:
            raise ApiError(403, 50013, "Missing Permissions")

    # ------------------------------------------------------------------ REST

    @staticmethod
    def _thread_params(data: dict[str, Any]) -> tuple[str, int, int]:
        name = data.get("name")
        if not isinstance(name, str) or not name.strip():
            raise form_error("name", "BASE_TYPE_REQUIRED", "This field is required")
        if len(name) > 100:
            raise form_error("name", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        duration = data.get("auto_archive_duration")
        if duration is None:
            duration = 1440  # clients pre-select the channel's default; the API takes 1 day
        if duration not in ARCHIVE_DURATIONS:
            raise form_error("auto_archive_duration", "BASE_TYPE_CHOICES", f"Value must be one of {ARCHIVE_DURATIONS}.")
        slowmode = int(data.get("rate_limit_per_user") or 0)
        return name, int(duration), slowmode

    async def _start_thread_from_message(self, rec: RecordedRequest, cid: str, mid: str) -> web.Response:
        parent = self._channel(cid)
        msg = self._stored(cid, mid)
        if parent["type"] not in (0, 5):
            raise ApiError(400, 50024, "Cannot execute action on this channel type")
        self._need(BOT_ID, int(cid), Perm.VIEW_CHANNEL | Perm.CREATE_PUBLIC_THREADS)
        if int(mid) in self.channels:
            raise ApiError(400, 160004, "A thread has already been created for this message")
        name, duration, slowmode = self._thread_params(rec.json if isinstance(rec.json, dict) else {})
        ttype = PUBLIC_THREAD if parent["type"] == 0 else ANNOUNCEMENT_THREAD
        thread = self._new_thread(int(mid), parent, name, BOT_ID, ttype, duration, slowmode)
        self._add_starter_marker(thread, msg)
        self._announce_thread(thread, BOT_ID)
        msg["flags"] = msg.get("flags", 0) | FLAG_HAS_THREAD
        self._dispatch("MESSAGE_UPDATE", self._gateway_message(msg))
        return self._json(self._thread_payload(thread))

    async def _start_thread_without_message(self, rec: RecordedRequest, cid: str) -> web.Response:
        parent = self._channel(cid)
        if parent["type"] not in (0, 5):
            raise ApiError(400, 50024, "Cannot execute action on this channel type")
        data = rec.json if isinstance(rec.json, dict) else {}
        ttype = int(data.get("type") or PRIVATE_THREAD)  # Discord: private unless told
        if ttype not in THREAD_TYPES:
            raise form_error("type", "BASE_TYPE_CHOICES", f"Value must be one of {THREAD_TYPES}.")
        need = Perm.CREATE_PRIVATE_THREADS if ttype == PRIVATE_THREAD else Perm.CREATE_PUBLIC_THREADS
        self._need(BOT_ID, int(cid), Perm.VIEW_CHANNEL | need)
        name, duration, slowmode = self._thread_params(data)
        thread = self._new_thread(self._snowflake(), parent, name, BOT_ID, ttype, duration, slowmode)
        if ttype == PRIVATE_THREAD:
            thread["thread_metadata"]["invitable"] = bool(data.get("invitable", True))
        self._announce_thread(thread, BOT_ID)
        return self._json(self._thread_payload(thread))

    async def _get_active_threads(self, rec: RecordedRequest, gid: str) -> web.Response:
        self._check_guild(gid)
        active = [t for t in self.threads if t.get("guild_id") == gid and not t["thread_metadata"]["archived"]]
        members = [dict(m) for t in active if (m := self.thread_members.get(int(t["id"]), {}).get(BOT_ID))]
        return self._json({"threads": [self._thread_payload(t, None) for t in active], "members": members})

    # ------------------------------------------------------------------ the model

    def _new_thread(
        self, thread_id: int, parent: dict[str, Any], name: str, owner_id: int, ttype: int, duration: int, slowmode: int = 0
    ) -> dict[str, Any]:
        now = iso()
        thread: dict[str, Any] = {
            "id": str(thread_id),
            "type": ttype,
            "guild_id": parent["guild_id"],
            "parent_id": parent["id"],
            "owner_id": str(owner_id),
            "name": name,
            "last_message_id": None,
            "rate_limit_per_user": slowmode,
            "flags": 0,
            "message_count": 0,
            "member_count": 0,
            "total_message_sent": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": duration,
                "archive_timestamp": now,
                "locked": False,
                "create_timestamp": now,
            },
        }
        self.channels[thread_id] = thread
        self.thread_members[thread_id] = {}
        return thread

    def _add_starter_marker(self, thread: dict[str, Any], msg: dict[str, Any]) -> dict[str, Any]:
        """The thread's first message: it only points at the message the thread was started from."""
        marker = self._make_message(
            author_id=int(thread["owner_id"]),
            channel_id=int(thread["id"]),
            content="",
            msg_type=MSG_THREAD_STARTER,
            extra={
                "message_reference": {
                    "type": 0, "message_id": msg["id"], "channel_id": msg["channel_id"], "guild_id": thread["guild_id"],
                },
                "referenced_message": {k: v for k, v in msg.items() if k not in ("referenced_message", "member")},
            },
        )
        return marker

    def _announce_thread(self, thread: dict[str, Any], creator: int) -> None:
        """THREAD_CREATE to the bot (when it can see it), then the creator joins."""
        if self.session_id is not None and self._sees_thread(thread):
            self._dispatch("THREAD_CREATE", dict(self._thread_payload(thread, None), newly_created=True))
        self._join_thread(thread, creator)

    def _sees_thread(self, thread: dict[str, Any]) -> bool:
        perms = self.permissions(BOT_ID, int(thread["parent_id"]))
        if not perms & Perm.VIEW_CHANNEL:
            return False
        if thread["type"] == PRIVATE_THREAD:
            return BOT_ID in self.thread_members.get(int(thread["id"]), {}) or bool(perms & Perm.MANAGE_THREADS)
        return True

    def _join_thread(self, thread: dict[str, Any], user_id: int) -> None:
        """Add ``user_id`` to the thread's members (THREAD_MEMBERS_UPDATE when the bot may hear of it)."""
        members = self.thread_members.setdefault(int(thread["id"]), {})
        if user_id in members:
            return
        member = {"id": thread["id"], "user_id": str(user_id), "join_timestamp": iso(), "flags": 0}
        members[user_id] = member
        thread["member_count"] = min(len(members), 50)
        if self.session_id is None or not self._sees_thread(thread):
            return
        if user_id != BOT_ID and not self._intents & INTENT_GUILD_MEMBERS:
            return  # without the members intent, only the bot's own joins are sent
        added = dict(member)
        gid = int(thread["guild_id"])
        if user_id in self.guild_members(gid):
            added["member"] = self.member_payload(user_id, guild_id=gid)
        added["presence"] = None
        self._dispatch(
            "THREAD_MEMBERS_UPDATE",
            {"id": thread["id"], "guild_id": thread["guild_id"], "member_count": thread["member_count"], "added_members": [added]},
        )

    def _count_in_thread(self, ch: dict[str, Any], msg: dict[str, Any]) -> None:
        """A message stored in a thread: its position and the thread's counts (not for the starter marker)."""
        if ch["type"] not in THREAD_TYPES:
            return
        if msg["type"] == MSG_THREAD_STARTER:
            msg["position"] = 0
            return
        ch["total_message_sent"] += 1
        ch["message_count"] += 1
        msg["position"] = ch["total_message_sent"]

    def _open_for_posting(self, channel_id: int, user_id: int) -> None:
        """Before ``user_id`` posts in ``channel_id``: a thread needs Send Messages in Threads, is unarchived
        by the post (unless it is locked), and the poster joins it."""
        ch = self.channels[int(channel_id)]
        if ch["type"] not in THREAD_TYPES:
            return
        self._need(user_id, int(channel_id), Perm.VIEW_CHANNEL | Perm.SEND_MESSAGES_IN_THREADS)
        meta = ch["thread_metadata"]
        manages = bool(self.permissions(user_id, int(channel_id)) & Perm.MANAGE_THREADS)
        if meta.get("locked") and not manages:
            raise ApiError(*THREAD_ARCHIVED) if meta["archived"] else ApiError(403, 50013, "Missing Permissions")
        if meta["archived"]:
            self._set_archived(ch, False)
        self._join_thread(ch, user_id)

    def _check_editable(self, channel_id: int) -> None:
        ch = self.channels.get(int(channel_id))
        if ch is not None and ch["type"] in THREAD_TYPES and ch["thread_metadata"]["archived"]:
            raise ApiError(*THREAD_ARCHIVED)

    def _set_archived(self, thread: dict[str, Any], archived: bool, locked: bool | None = None) -> Any:
        meta = thread["thread_metadata"]
        meta["archived"] = archived
        meta["archive_timestamp"] = iso()
        if locked is not None:
            meta["locked"] = locked
        if self.session_id is None or not self._sees_thread(thread):
            return None
        return self._dispatch("THREAD_UPDATE", self._thread_payload(thread, None))

    # ------------------------------------------------------------------ users

    def add_thread(
        self,
        channel_id: int,
        name: str,
        message_id: int | None = None,
        *,
        owner_id: int = BOT_ID,
        private: bool = False,
        auto_archive_duration: int = 1440,
    ) -> dict[str, Any]:
        """A thread that is there already (started while the bot was away): no gateway event; the bot
        learns of it from GUILD_CREATE or by reading it.  From ``message_id`` (a stored message of
        ``channel_id``: the thread gets its id, the message its ``thread``), else without a message.
        ``owner_id`` started it and is its first member."""
        parent = self._channel(channel_id)
        if message_id is not None:
            msg = self._stored(channel_id, message_id)
            if int(message_id) in self.channels:
                raise ApiError(400, 160004, "A thread has already been created for this message")
            thread = self._new_thread(int(message_id), parent, name, owner_id, PUBLIC_THREAD, auto_archive_duration)
            self._add_starter_marker(thread, msg)
            msg["flags"] = msg.get("flags", 0) | FLAG_HAS_THREAD
        else:
            ttype = PRIVATE_THREAD if private else PUBLIC_THREAD
            thread = self._new_thread(self._snowflake(), parent, name, owner_id, ttype, auto_archive_duration)
        self.thread_members[int(thread["id"])][owner_id] = {
            "id": thread["id"], "user_id": str(owner_id), "join_timestamp": iso(), "flags": 0,
        }
        thread["member_count"] = 1
        return thread

    async def user_start_thread(
        self,
        user_id: int,
        channel_id: int,
        name: str,
        message_id: int | None = None,
        *,
        private: bool = False,
        auto_archive_duration: int = 1440,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        """A member starts a thread in ``channel_id`` (from ``message_id``, else without a message);
        returns it once THREAD_CREATE (and the message's MESSAGE_UPDATE) went over the websocket
        (at once when the bot cannot see it)."""
        thread = self.add_thread(
            channel_id, name, message_id, owner_id=user_id, private=private, auto_archive_duration=auto_archive_duration
        )
        del self.thread_members[int(thread["id"])][user_id]  # joins as the event says
        entries = len(self._log)
        self._announce_thread(thread, user_id)
        if message_id is not None and self.session_id is not None:
            self._dispatch("MESSAGE_UPDATE", self._gateway_message(self.messages[int(message_id)]))
        for entry in self._log[entries:]:
            await self._delivered(entry, timeout)
        return thread

    async def archive_thread(self, thread_id: int, *, locked: bool = False, timeout: float = 10.0) -> dict[str, Any]:
        """Discord archives a thread (after its auto-archive time, or a moderator does): THREAD_UPDATE."""
        thread = self.channels[int(thread_id)]
        entry = self._set_archived(thread, True, locked)
        if entry is not None:
            await self._delivered(entry, timeout)
        return thread
