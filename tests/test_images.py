"""bot.images against real files made with Pillow: formats, pixels, refusals."""

from __future__ import annotations

import base64
import hashlib
import io
import struct
import warnings
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageFile, features

import bot.images as images
from bot.images import (
    ImageError,
    ImageLimits,
    PreparedImage,
    check_declared_size,
    plain_prepare,
    prepare_image,
)

NOT_IMAGE = "that file is not an image"
DAMAGED = "that image file is damaged or incomplete"
EMPTY = "that file is empty"
UNREADABLE = "could not read that image"
HEIC_AVIF = (
    "HEIC/AVIF images are not supported here, please send JPEG, PNG, WebP or GIF"
)

RED = (255, 0, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)


# --------------------------------------------------------------------------
# helpers


def encode(im: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def decoded(prepared: PreparedImage) -> Image.Image:
    """The prepared JPEG, decoded again (and checked to be a JPEG data URI)."""
    prefix = "data:image/jpeg;base64,"
    assert prepared.data_uri.startswith(prefix)
    raw = base64.b64decode(prepared.data_uri[len(prefix) :], validate=True)
    assert hashlib.sha256(raw).hexdigest() == prepared.digest
    im = Image.open(io.BytesIO(raw))
    assert im.format == "JPEG"
    assert im.mode == "RGB"
    assert im.size == (prepared.width, prepared.height)
    im.load()
    return im


def close_to(pixel, expected, tolerance=12) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected, strict=True))


def refused(data: bytes, limits: ImageLimits = ImageLimits()) -> ImageError:
    with pytest.raises(ImageError) as info:
        prepare_image(data, limits)
    return info.value


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return (
        struct.pack(">I", len(body))
        + kind
        + body
        + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    )


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height; its IDAT is garbage, so
    it can only be refused from the header, never decoded."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", b"\x00" * 16)
        + png_chunk(b"IEND", b"")
    )


def noisy_photo(width: int, height: int) -> Image.Image:
    """Picture-like content (gradients plus noise), so JPEGs are realistic."""
    base = Image.merge(
        "RGB",
        (
            Image.linear_gradient("L").resize((width, height)),
            Image.linear_gradient("L").rotate(90).resize((width, height)),
            Image.effect_noise((width, height), 40),
        ),
    )
    return base


# --------------------------------------------------------------------------
# still images


def test_jpeg_small_passes_through_unscaled(tmp_path: Path):
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (320, 240), (200, 30, 30)).save(path, "JPEG", quality=95)
    data = path.read_bytes()

    prepared = prepare_image(data)

    assert (prepared.width, prepared.height) == (320, 240)
    assert (prepared.source_width, prepared.source_height) == (320, 240)
    assert prepared.source_format == "JPEG"
    assert prepared.source_bytes == len(data)
    assert prepared.frames == 1
    assert prepared.prepare_ms > 0
    assert close_to(decoded(prepared).getpixel((160, 120)), (200, 30, 30))


def test_png_rgb(tmp_path: Path):
    im = Image.new("RGB", (200, 100), BLUE)
    im.paste(RED, (0, 0, 100, 100))
    path = tmp_path / "x.png"
    im.save(path)

    prepared = prepare_image(path.read_bytes())

    assert prepared.source_format == "PNG"
    out = decoded(prepared)
    assert close_to(out.getpixel((20, 50)), RED)
    assert close_to(out.getpixel((180, 50)), BLUE)


def test_format_is_detected_by_content_not_name(tmp_path: Path):
    path = tmp_path / "looks_like.gif"
    Image.new("RGB", (64, 64), RED).save(path, "PNG")
    assert prepare_image(path.read_bytes()).source_format == "PNG"


def test_webp():
    data = encode(Image.new("RGB", (300, 150), (20, 160, 40)), "WEBP", quality=90)
    prepared = prepare_image(data)
    assert prepared.source_format == "WEBP"
    assert (prepared.width, prepared.height) == (300, 150)
    assert close_to(decoded(prepared).getpixel((150, 75)), (20, 160, 40))


def test_bmp_and_tiff():
    im = Image.new("RGB", (80, 60), (10, 200, 90))
    for fmt in ("BMP", "TIFF"):
        prepared = prepare_image(encode(im, fmt))
        assert prepared.source_format == fmt
        assert close_to(decoded(prepared).getpixel((40, 30)), (10, 200, 90))


def test_greyscale_and_one_bit_become_rgb():
    grey = prepare_image(encode(Image.new("L", (50, 50), 100), "JPEG"))
    assert close_to(decoded(grey).getpixel((25, 25)), (100, 100, 100), 3)

    one_bit = Image.new("1", (50, 50), 0)
    one_bit.paste(1, (25, 0, 50, 50))
    out = decoded(prepare_image(encode(one_bit, "PNG")))
    assert close_to(out.getpixel((5, 25)), (0, 0, 0))
    assert close_to(out.getpixel((45, 25)), WHITE)


def test_cmyk_jpeg_colours_come_out_right():
    cmyk_red = (0, 255, 255, 0)  # no cyan, full magenta and yellow
    data = encode(Image.new("CMYK", (120, 80), cmyk_red), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"

    prepared = prepare_image(data)

    assert close_to(decoded(prepared).getpixel((60, 40)), RED, 20)


def test_cielab_tiff_is_colour_converted():
    # L*=50 a*=0 b*=0 (Pillow stores a*, b* offset by 128) is sRGB grey 119;
    # copying the channels raw would give (127, 128, 128) in the wrong sense
    # and a saturated colour for any a*/b* other than 128.
    grey = encode(Image.new("LAB", (40, 40), (127, 128, 128)), "TIFF")
    assert close_to(decoded(prepare_image(grey)).getpixel((20, 20)), (119, 119, 119), 4)
    red = encode(Image.new("LAB", (40, 40), (137, 208, 195)), "TIFF")
    assert close_to(decoded(prepare_image(red)).getpixel((20, 20)), (250, 5, 12), 20)


def test_palette_png_transparency_becomes_white():
    im = Image.new("P", (100, 50), 0)
    im.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)  # index 0 black, 1 blue
    im.paste(1, (50, 0, 100, 50))
    data = encode(im, "PNG", transparency=0)

    out = decoded(prepare_image(data))

    assert close_to(out.getpixel((10, 25)), WHITE)  # transparent black -> white
    assert close_to(out.getpixel((90, 25)), BLUE)


def test_rgba_and_la_composite_on_white():
    rgba = Image.new("RGBA", (60, 60), (0, 0, 0, 0))
    rgba.paste((0, 0, 0, 128), (30, 0, 60, 60))  # half-transparent black
    out = decoded(prepare_image(encode(rgba, "PNG")))
    assert close_to(out.getpixel((10, 30)), WHITE)
    assert close_to(out.getpixel((50, 30)), (127, 127, 127), 4)

    la = Image.new("LA", (40, 40), (0, 0))
    out = decoded(prepare_image(encode(la, "PNG")))
    assert close_to(out.getpixel((20, 20)), WHITE)


def test_sixteen_bit_grey_png_keeps_mid_grey():
    im = Image.new("I;16", (64, 64), 32768)
    im.paste(65535, (0, 0, 32, 64))
    data = encode(im, "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")

    out = decoded(prepare_image(data))

    assert close_to(out.getpixel((48, 32)), (128, 128, 128), 3)  # not clipped
    assert close_to(out.getpixel((8, 32)), WHITE, 3)


# --------------------------------------------------------------------------
# animations: first frame, frame count


def red_then_blue() -> list[Image.Image]:
    return [Image.new("RGB", (64, 64), RED), Image.new("RGB", (64, 64), BLUE)]


def test_animated_gif_first_frame():
    first, second = red_then_blue()
    data = encode(first, "GIF", save_all=True, append_images=[second], duration=100)

    prepared = prepare_image(data)

    assert prepared.source_format == "GIF"
    assert prepared.frames == 2
    assert close_to(decoded(prepared).getpixel((32, 32)), RED)


def test_apng_first_frame():
    first, second = red_then_blue()
    data = encode(first, "PNG", save_all=True, append_images=[second], duration=100)

    prepared = prepare_image(data)

    assert prepared.source_format == "PNG"
    assert prepared.frames == 2
    assert close_to(decoded(prepared).getpixel((32, 32)), RED)


def test_animated_webp_first_frame():
    first, second = red_then_blue()
    data = encode(
        first, "WEBP", save_all=True, append_images=[second], duration=100, lossless=True
    )

    prepared = prepare_image(data)

    assert prepared.source_format == "WEBP"
    assert prepared.frames == 2
    assert close_to(decoded(prepared).getpixel((32, 32)), RED)


def test_mpo_camera_file_is_taken_as_its_first_picture():
    first, second = red_then_blue()
    data = encode(first, "MPO", save_all=True, append_images=[second])

    prepared = prepare_image(data)

    assert prepared.source_format == "MPO"
    assert prepared.frames == 2
    assert close_to(decoded(prepared).getpixel((32, 32)), RED, 20)


# --------------------------------------------------------------------------
# EXIF orientation


def rotated_jpeg(width: int, height: int) -> bytes:
    """A landscape JPEG stored sideways: orientation 6 means "rotate 90° clockwise
    to display".  The stored top-left corner is marked red."""
    im = Image.new("RGB", (width, height), (0, 160, 0))
    mark = max(8, width // 8)
    im.paste(RED, (0, 0, mark, mark))
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(im, "JPEG", quality=95, exif=exif)


def test_exif_orientation_is_applied():
    prepared = prepare_image(rotated_jpeg(400, 200))

    assert (prepared.source_width, prepared.source_height) == (400, 200)
    assert (prepared.width, prepared.height) == (200, 400)  # swapped
    out = decoded(prepared)
    # Rotating 90° clockwise moves the stored top-left to the top-right.
    assert close_to(out.getpixel((190, 10)), RED, 20)
    assert close_to(out.getpixel((10, 10)), (0, 160, 0), 20)


def test_exif_orientation_with_draft_downscale():
    prepared = prepare_image(rotated_jpeg(3000, 1500), ImageLimits(max_side=672))

    assert (prepared.width, prepared.height) == (336, 672)
    out = decoded(prepared)
    assert close_to(out.getpixel((330, 5)), RED, 25)
    assert close_to(out.getpixel((5, 5)), (0, 160, 0), 25)


# --------------------------------------------------------------------------
# downscaling


def test_twelve_megapixel_jpeg_is_downscaled():
    source = noisy_photo(4000, 3000)
    data = encode(source, "JPEG", quality=90)

    prepared = prepare_image(data)  # default max_side 1344
    assert (prepared.width, prepared.height) == (1344, 1008)
    assert (prepared.source_width, prepared.source_height) == (4000, 3000)

    small = prepare_image(data, ImageLimits(max_side=672))
    assert (small.width, small.height) == (672, 504)

    # Same picture as the naive full decode gives, within JPEG noise.
    naive = Image.open(io.BytesIO(plain_prepare(data, 672)))
    assert naive.size == (672, 504)
    ours = decoded(small)
    for x, y in [(10, 10), (300, 250), (660, 20), (20, 490), (600, 480)]:
        assert close_to(ours.getpixel((x, y)), naive.getpixel((x, y)), 40)
    # The gradient survived (red: dark at the top, bright at the bottom).
    assert ours.getpixel((336, 3))[0] < 40 < 215 < ours.getpixel((336, 500))[0]


def test_large_jpeg_is_decoded_at_reduced_scale(monkeypatch):
    from PIL.JpegImagePlugin import JpegImageFile

    calls = []
    original = JpegImageFile.draft

    def spy(self, mode, size):
        result = original(self, mode, size)
        calls.append((mode, size, self.size))
        return result

    monkeypatch.setattr(JpegImageFile, "draft", spy)
    data = encode(noisy_photo(4000, 3000), "JPEG", quality=85)

    prepared = prepare_image(data, ImageLimits(max_side=672))

    # libjpeg was asked for the target size and decoded at 1/4 scale.
    assert calls == [("RGB", (672, 504), (1000, 750))]
    assert (prepared.width, prepared.height) == (672, 504)


def test_png_downscaled_keeping_aspect():
    prepared = prepare_image(encode(Image.new("RGB", (8000, 1000), RED), "PNG"))
    assert (prepared.width, prepared.height) == (1344, 168)


def test_never_upscaled():
    prepared = prepare_image(
        encode(Image.new("RGB", (100, 50), RED), "PNG"), ImageLimits(max_side=4096)
    )
    assert (prepared.width, prepared.height) == (100, 50)


def test_jpeg_quality_is_used():
    data = encode(noisy_photo(400, 300), "PNG")
    low = prepare_image(data, ImageLimits(jpeg_quality=30))
    high = prepare_image(data, ImageLimits(jpeg_quality=95))
    assert len(low.data_uri) < len(high.data_uri)
    assert low.digest != high.digest


def test_same_image_same_digest():
    data = encode(noisy_photo(300, 200), "PNG")
    assert prepare_image(data).digest == prepare_image(data).digest


# --------------------------------------------------------------------------
# memory: one full-size buffer (conversions and scaling go by bands of rows)


def max_difference(a: Image.Image, b: Image.Image) -> int:
    from PIL import ImageChops

    assert a.size == b.size and a.mode == b.mode == "RGB"
    return max(high for _, high in ImageChops.difference(a, b).getextrema())


def whole_picture(im: Image.Image, max_side: int) -> Image.Image:
    """What the bands must add up to: convert it all, then scale it all."""
    target = images.fit(im.width, im.height, max_side)
    return images._scale(images._to_rgb(im), target, images._reduce_factor(im.size, target))


@pytest.mark.parametrize(
    ("size", "max_side"),
    [
        ((3000, 2000), 672),  # no reduction first (3000 / 672 < 3 x)
        ((6000, 1000), 672),  # reduced by 2 across only
        ((2000, 3001), 300),  # reduced by 3, a partial last block
        ((900, 700), 900),  # no scaling at all: only the conversion is banded
    ],
)
def test_banded_conversion_matches_the_whole_picture(monkeypatch, size, max_side):
    rgba = noisy_photo(*size).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(size))
    expected = whole_picture(rgba, max_side)
    monkeypatch.setattr(images, "_BAND_PIXELS", 50_000)  # dozens of bands

    target = images.fit(*size, max_side)
    banded = images._scale_in_bands(rgba, target, images._reduce_factor(size, target))

    assert banded.size == target == expected.size
    assert max_difference(banded, expected) <= 2


def test_large_palette_png_with_transparency_by_bands(monkeypatch):
    monkeypatch.setattr(images, "_BAND_PIXELS", 20_000)
    im = Image.new("P", (2400, 1600), 0)
    im.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)  # index 0 black, 1 blue
    im.paste(1, (1200, 0, 2400, 1600))
    prepared = prepare_image(encode(im, "PNG", transparency=0), ImageLimits(max_side=600))

    assert (prepared.width, prepared.height) == (600, 400)
    out = decoded(prepared)
    assert close_to(out.getpixel((100, 200)), WHITE)  # transparent black -> white
    assert close_to(out.getpixel((500, 200)), BLUE)
    assert close_to(out.getpixel((100, 395)), WHITE) and close_to(out.getpixel((500, 3)), BLUE)


def test_float_grey_is_stretched_over_the_whole_picture_not_each_band(monkeypatch):
    monkeypatch.setattr(images, "_BAND_PIXELS", 5_000)  # 25-row bands
    im = Image.new("F", (200, 400), -100.0)
    im.paste(100.0, (0, 200, 200, 400))

    out = decoded(prepare_image(encode(im, "TIFF")))

    assert close_to(out.getpixel((100, 20)), (0, 0, 0), 3)  # a flat band alone would be 128
    assert close_to(out.getpixel((100, 380)), WHITE, 3)


def test_exif_orientation_of_a_scaled_png():
    im = Image.new("RGBA", (3000, 1500), (0, 160, 0, 255))
    im.paste((255, 0, 0, 255), (0, 0, 375, 375))
    exif = Image.Exif()
    exif[0x0112] = 6
    prepared = prepare_image(encode(im, "PNG", exif=exif), ImageLimits(max_side=672))

    assert (prepared.width, prepared.height) == (336, 672)
    out = decoded(prepared)
    assert close_to(out.getpixel((330, 5)), RED, 25)
    assert close_to(out.getpixel((5, 5)), (0, 160, 0), 25)


def test_the_source_is_released_before_the_jpeg_is_encoded(monkeypatch):
    from PIL._util import DeferredError

    data = encode(Image.new("RGBA", (1500, 1000), (10, 20, 30, 200)), "PNG")
    opened: list[Image.Image] = []
    source_gone_at_save: list[bool] = []
    real_open, real_save = Image.open, Image.Image.save

    def spy_open(*args, **kwargs):
        opened.append(real_open(*args, **kwargs))
        return opened[-1]

    def spy_save(self, *args, **kwargs):
        source_gone_at_save.append(isinstance(opened[0]._im, DeferredError))
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(Image, "open", spy_open)
    monkeypatch.setattr(Image.Image, "save", spy_save)
    prepared = prepare_image(data, ImageLimits(max_side=300))

    assert (prepared.width, prepared.height) == (300, 200)
    assert source_gone_at_save == [True]


# --------------------------------------------------------------------------
# refusals


def test_zero_bytes():
    assert str(refused(b"")) == EMPTY


def test_text_pdf_and_random_bytes_are_not_images():
    assert str(refused(b"hello, this is just some text\n" * 10)) == NOT_IMAGE
    assert str(refused(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n")) == NOT_IMAGE
    noise = bytes((i * 7919 + 13) % 251 for i in range(4096))
    assert str(refused(noise)) == NOT_IMAGE
    assert str(refused(b"BMW owners club\n" * 4)) == NOT_IMAGE


def test_heic_and_unavailable_avif_are_refused_by_magic(monkeypatch):
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 200
    assert str(refused(heic)) == HEIC_AVIF
    heif_mif1 = b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1heic" + b"\x00" * 200
    assert str(refused(heif_mif1)) == HEIC_AVIF

    avif = b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + b"\x00" * 200
    monkeypatch.setattr(images, "_ALLOWED_FORMATS", ("JPEG", "PNG", "WEBP", "GIF"))
    assert str(refused(avif)) == HEIC_AVIF


@pytest.mark.skipif(not features.check("avif"), reason="Pillow built without AVIF")
def test_avif_is_taken_when_pillow_can_read_it():
    data = encode(Image.new("RGB", (64, 48), (0, 128, 255)), "AVIF", quality=90)
    prepared = prepare_image(data)
    assert prepared.source_format == "AVIF"
    assert close_to(decoded(prepared).getpixel((32, 24)), (0, 128, 255), 20)


def test_other_known_formats_get_a_helpful_message():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"
    assert str(refused(eps)) == (
        "PostScript images are not supported here, please send JPEG, PNG, WebP or GIF"
    )
    psd = b"8BPS\x00\x01" + b"\x00" * 100
    assert str(refused(psd)) == (
        "Photoshop (PSD) images are not supported here, please send JPEG, PNG, WebP or GIF"
    )
    svg = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"></svg>'
    assert str(refused(svg)) == (
        "SVG images are not supported here, please send JPEG, PNG, WebP or GIF"
    )


def test_truncated_jpeg():
    data = encode(noisy_photo(800, 600), "JPEG", quality=90)
    assert str(refused(data[: len(data) // 2])) == DAMAGED
    assert str(refused(data[:40])) == DAMAGED  # cut inside the header


def test_truncated_png():
    data = encode(noisy_photo(400, 300), "PNG")
    assert str(refused(data[: len(data) // 2])) == DAMAGED
    assert str(refused(data[:20])) == DAMAGED  # signature, half an IHDR


def test_png_with_bad_checksum_is_damaged():
    data = bytearray(encode(noisy_photo(64, 64), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 10] ^= 0xFF
    assert str(refused(bytes(data))) == DAMAGED


def test_truncated_images_are_not_enabled_globally():
    data = encode(noisy_photo(400, 300), "JPEG")
    refused(data[: len(data) // 2])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_pixel_limit_from_header_below_pillows_own_limit():
    # 48 MP: over our limit, under Pillow's, decoding would fail (garbage IDAT).
    assert str(refused(png_header_only(8000, 6000))) == "image is 48 MP, the limit is 40 MP"


def test_pixel_limit_where_pillow_refuses_first():
    before = Image.MAX_IMAGE_PIXELS
    # 400 MP: Pillow raises DecompressionBombError inside Image.open.
    assert str(refused(png_header_only(20000, 20000))) == (
        "image is 400 MP, the limit is 40 MP"
    )
    # 100 MP: Pillow only warns; our own check refuses.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        assert str(refused(png_header_only(10000, 10000))) == (
            "image is 100 MP, the limit is 40 MP"
        )
    assert Image.MAX_IMAGE_PIXELS == before


def test_pixel_limit_is_configurable_and_rounds_up():
    data = encode(Image.new("RGB", (1001, 1000), RED), "PNG")
    assert str(refused(data, ImageLimits(max_pixels=1_000_000))) == (
        "image is 1.1 MP, the limit is 1 MP"
    )
    prepare_image(data, ImageLimits(max_pixels=1_001_000))  # exactly at the limit


def test_over_max_bytes():
    big = b"\x00" * 32_715_571  # 31.2 MB
    assert str(refused(big)) == "file is 31.2 MB, the limit is 25 MB"
    just_over = b"\x00" * (1024 * 1024 + 1)
    assert str(refused(just_over, ImageLimits(max_bytes=1024 * 1024))) == (
        "file is 1.1 MB, the limit is 1 MB"
    )

    data = encode(noisy_photo(200, 200), "PNG")
    with pytest.raises(ImageError, match=r"^file is [\d.]+ MB, the limit is [\d.]+ MB$"):
        prepare_image(data, ImageLimits(max_bytes=len(data) - 1))
    prepare_image(data, ImageLimits(max_bytes=len(data)))  # exactly at the limit


def test_check_declared_size():
    limits = ImageLimits()
    check_declared_size(None, limits)  # unknown: let the download decide
    check_declared_size(1, limits)
    check_declared_size(25 * 1024 * 1024, limits)
    with pytest.raises(ImageError) as info:
        check_declared_size(0, limits)
    assert str(info.value) == EMPTY
    with pytest.raises(ImageError) as info:
        check_declared_size(25 * 1024 * 1024 + 1, limits)
    assert str(info.value) == "file is 25.1 MB, the limit is 25 MB"
    with pytest.raises(ImageError) as info:
        check_declared_size(40 * 1024 * 1024, ImageLimits(max_bytes=8 * 1024 * 1024))
    assert str(info.value) == "file is 40 MB, the limit is 8 MB"


def test_unexpected_pillow_failure_becomes_image_error(monkeypatch):
    def broken(self, *args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(Image.Image, "resize", broken)
    with pytest.raises(ImageError) as info:
        prepare_image(encode(Image.new("RGB", (3000, 100), RED), "PNG"))
    assert str(info.value) == UNREADABLE
    assert isinstance(info.value.__cause__, RuntimeError)


def test_limits_are_validated():
    with pytest.raises(ValueError):
        ImageLimits(max_side=0)
    with pytest.raises(ValueError):
        ImageLimits(jpeg_quality=101)
    with pytest.raises(ValueError):
        ImageLimits(max_bytes=0)
    with pytest.raises(ValueError):
        ImageLimits(max_pixels=-1)


# --------------------------------------------------------------------------
# the shipped example picture


def test_example_asset_is_a_usable_picture():
    path = Path(images.__file__).parent / "assets" / "example.jpg"
    data = path.read_bytes()
    assert len(data) < 60 * 1024
    prepared = prepare_image(data)
    assert prepared.source_format == "JPEG"
    assert (prepared.width, prepared.height) == (640, 480)
