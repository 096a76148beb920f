"""Odd images people post (and files that are not images): the corpus the bad-input
tests and the load test's odd-image burst share.  Each case: (file name, bytes,
declared content type, declared size, the exact reply or None for an answer,
downloaded?)."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

from tests.helpers import jpeg_bytes, picture


def encode(im: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A few dozen bytes whose PNG header claims width x height (a decompression bomb)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"\x00" * 16) + chunk(b"IEND", b"")


def exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(picture((120, 60)), "JPEG", exif=exif)


def animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (48, 48), (255, 0, 0)), Image.new("RGB", (48, 48), (0, 0, 255))]
    extra = {"lossless": True} if fmt == "WEBP" else {}
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, **extra)


def palette_with_transparency() -> bytes:
    im = Image.new("P", (40, 40), 0)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    im.paste(1, (10, 10, 30, 30))
    return encode(im, "PNG", transparency=0)


HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 200
WHOLE = jpeg_bytes(picture((200, 150)))
NOISY_PNG = encode(Image.effect_noise((200, 150), 60).convert("RGB"), "PNG")

# (file name, bytes, declared content type, declared size, exact reply or None for an answer, downloaded?)
CASES = [
    ("empty.png", b"", "image/png", 0, "⚠️ That file is empty.", False),
    ("cut.jpg", WHOLE[: len(WHOLE) // 2], "image/jpeg", None, "⚠️ That image file is damaged or incomplete.", True),
    ("cut.png", NOISY_PNG[: len(NOISY_PNG) // 2], "image/png", None, "⚠️ That image file is damaged or incomplete.", True),
    ("photo.jpg", b"Hello, I am plain text pretending to be a JPEG.", "image/jpeg", None, "⚠️ That file is not an image.", True),
    ("doc.pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "application/pdf", None, "⚠️ That file is not an image.", False),
    ("notes.txt", b"just some notes\n", "text/plain", None, "⚠️ That file is not an image.", False),
    ("bomb.png", png_claiming(50_000, 50_000), "image/png", None, "⚠️ Image is 2500 MP, the limit is 40 MP.", True),
    ("huge.jpg", WHOLE, "image/jpeg", 200 * 1024 * 1024, "⚠️ File is 200 MB, the limit is 25 MB.", False),
    ("iphone.heic", HEIC, "image/heic", None, "⚠️ HEIC/AVIF images are not supported here, please send JPEG, PNG, WebP or GIF.", True),
    ("anim.gif", animated("GIF"), "image/gif", None, None, True),
    ("anim.png", animated("PNG"), "image/png", None, None, True),
    ("anim.webp", animated("WEBP"), "image/webp", None, None, True),
    ("cmyk.jpg", encode(picture().convert("CMYK"), "JPEG"), "image/jpeg", None, None, True),
    ("grey16.png", encode(Image.new("I;16", (40, 30), 30000), "PNG"), "image/png", None, None, True),
    ("palette.png", palette_with_transparency(), "image/png", None, None, True),
    ("rotated.jpg", exif_rotated(), "image/jpeg", None, None, True),
]
