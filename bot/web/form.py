"""The ``/api/ask`` form, read part by part with a cap on every part.

The image is read in chunks and reading stops as soon as it passes
``images.max_bytes``: the rest of the upload is never held in memory.  A
declared request size far over the cap is refused before reading anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import BodyPartReader, web

from bot.images import ImageError, ImageLimits, check_declared_size
from bot.reply import WEB_BAD_MAX_TOKENS, WEB_FIELD_TOO_LONG, WEB_NOT_A_FORM

#: room for the text fields and the multipart framing beside the image
FORM_SLACK = 64 * 1024
#: bytes of a field other than the image and the question
SMALL_FIELD = 1024
#: parts a form may have (image, question, max_tokens, conversation and a few spare)
MAX_PARTS = 16
CHUNK = 64 * 1024


class FormError(Exception):
    """The form cannot be used.  ``str(exc)`` is fit for the user."""


@dataclass(frozen=True, slots=True)
class AskForm:
    image: bytes | None
    question: str
    max_tokens: int | None
    conversation: str | None


async def read_form(request: web.Request, limits: ImageLimits, max_question_chars: int) -> AskForm:
    """Read the multipart form; raise :class:`FormError` or :class:`~bot.images.ImageError`."""
    if request.content_type == "application/x-www-form-urlencoded":
        return await _read_urlencoded(request, max_question_chars)  # a follow-up from a script
    if request.content_type != "multipart/form-data":
        raise FormError(WEB_NOT_A_FORM)
    declared = request.content_length
    if declared is not None and declared > limits.max_bytes + FORM_SLACK:
        check_declared_size(declared, limits)  # raises the size line, nothing read
    fields: dict[str, str] = {}
    image: bytes | None = None
    reader = await request.multipart()
    for _ in range(MAX_PARTS):
        part = await reader.next()
        if part is None:
            break
        if not isinstance(part, BodyPartReader):
            raise FormError(WEB_NOT_A_FORM)
        if part.name == "image":
            image = await _read_image(part, limits, declared) or image
        else:
            cap = max_question_chars * 4 + SMALL_FIELD if part.name == "question" else SMALL_FIELD
            fields[part.name or ""] = await _read_text(part, cap)
    else:
        raise FormError(WEB_NOT_A_FORM)
    return _form(image, fields)


def _form(image: bytes | None, fields: dict[str, str]) -> AskForm:
    return AskForm(
        image=image,
        question=fields.get("question", ""),
        max_tokens=_max_tokens(fields.get("max_tokens", "")),
        conversation=fields.get("conversation", "").strip() or None,
    )


async def _read_urlencoded(request: web.Request, max_question_chars: int) -> AskForm:
    """Text fields only (no image: a follow-up with ``conversation``)."""
    cap = max_question_chars * 4 + FORM_SLACK
    if request.content_length is None or request.content_length > cap:
        raise FormError(WEB_FIELD_TOO_LONG.format(field="question"))
    data = await request.post()
    fields = {key: value for key, value in data.items() if isinstance(value, str) and key != "image"}
    return _form(None, fields)


async def _read_capped(part: BodyPartReader, cap: int) -> tuple[bytes, int]:
    """Up to ``cap`` bytes of a part; the size read when it stops past the cap."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await part.read_chunk(CHUNK)
        if not chunk:
            return b"".join(chunks), size
        size += len(chunk)
        if size > cap:
            return b"", size
        chunks.append(chunk)


async def _read_image(part: BodyPartReader, limits: ImageLimits, declared: int | None) -> bytes | None:
    """The file's bytes (None for the empty part of a form with no file chosen)."""
    data, size = await _read_capped(part, limits.max_bytes)
    if size > limits.max_bytes:
        # Stop here; the whole request's declared size is the best known upper bound.
        check_declared_size(max(size, declared or 0), limits)
        raise ImageError("the file is too large")  # not reached: check_declared_size raised
    if not data and not part.filename:
        return None
    return data


async def _read_text(part: BodyPartReader, cap: int) -> str:
    data, size = await _read_capped(part, cap)
    if size > cap:
        raise FormError(WEB_FIELD_TOO_LONG.format(field=part.name or "unnamed"))
    return data.decode(part.get_charset(default="utf-8"), errors="replace")


def _max_tokens(text: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise FormError(WEB_BAD_MAX_TOKENS) from None
