"""Where the bot answers and who may ask: plain functions of the settings and ids."""

from __future__ import annotations

from collections.abc import Collection

from bot.config import DiscordSettings
from bot.reply import NEEDS_ROLE, NOT_IN_CHANNEL, NOT_IN_DMS


def place_refusal(
    cfg: DiscordSettings,
    *,
    is_dm: bool,
    channel_ids: Collection[int | None] = (),
    role_ids: Collection[int] = (),
    allowed_roles: Collection[int] | None = None,
) -> str | None:
    """Why the bot does not answer here (None: it does).

    ``channel_ids``: the channel and, for a thread, its parent.  ``role_ids``:
    the asker's roles (in a DM, their roles in the servers the bot is in):
    ``allowed_roles`` applies in DMs too.  ``allowed_roles``: the server's own
    (``/settings role kind:allowed``), where it set them; else the file's.
    """
    roles = cfg.allowed_roles if allowed_roles is None else allowed_roles
    if is_dm:
        if not cfg.dm:
            return NOT_IN_DMS
    elif cfg.allowed_channels and not set(channel_ids) & set(cfg.allowed_channels):
        return NOT_IN_CHANNEL
    if roles and not set(role_ids) & set(roles):
        return NEEDS_ROLE
    return None


def channel_ids(channel: object) -> set[int | None]:
    """The channel's id and, for a thread, its parent's."""
    return {getattr(channel, "id", None), getattr(channel, "parent_id", None)}
