"""bot.media on animated GIF / WebP / APNG: which frames, how many, as stills or one grid."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from bot.images import ImageError, ImageLimits, prepare_image
from bot.media import MediaLimits, PreparedMedia, media_pixels, prepare_media
from bot.media.animation import frame_durations, pick_frames
from bot.media.base import GRID_GAP, grid_layout
from tests.helpers import jpeg_bytes, picture
from tests.media.makers import COLOURS, animation, centre, nearest, picture_of

FORMATS = ["GIF", "WEBP", "PNG"]


def sampled(media: PreparedMedia) -> list[int]:
    return [nearest(centre(image)) for image in media.images]


@pytest.mark.parametrize("fmt", FORMATS)
def test_frames_are_sampled_evenly_over_the_time(fmt: str) -> None:
    media = prepare_media(animation(fmt, 8))

    assert (media.kind, media.frames, media.grid) == ("animation", 4, False)
    assert media.duration_s == pytest.approx(0.8)
    assert sampled(media) == [0, 2, 4, 6]
    assert media.describe() == "4 frames of a 0.8 s animation"
    first = media.images[0]
    assert (first.source_format, first.frames, first.width, first.height) == (fmt, 8, 64, 48)


@pytest.mark.parametrize("fmt", FORMATS)
def test_sampling_follows_the_frame_timing_not_the_frame_numbers(fmt: str) -> None:
    # 0.8 s: frames 0-2 take 0.1 s each, frame 3 the last 0.5 s -> times 0, .2, .4, .6
    media = prepare_media(animation(fmt, 4, duration=[100, 100, 100, 500]))

    assert sampled(media) == [0, 2, 3]  # the last frame is on screen at 0.4 and 0.6: once
    assert media.frames == 3
    assert media.describe() == "3 frames of a 0.8 s animation"


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_animation_with_fewer_frames_gives_them_all(fmt: str) -> None:
    media = prepare_media(animation(fmt, 3), media=MediaLimits(frames=8))
    assert sampled(media) == [0, 1, 2]


@pytest.mark.parametrize("fmt", FORMATS)
def test_one_frame_is_the_first_frame_exactly_as_today(fmt: str) -> None:
    data = animation(fmt, 5)
    media = prepare_media(data, media=MediaLimits(frames=1))

    assert (media.kind, media.frames) == ("animation", 1)
    assert media.images[0].data_uri == prepare_image(data).data_uri
    assert media.describe() == "1 frame of a 0.5 s animation"


@pytest.mark.parametrize(
    "data",
    [
        jpeg_bytes(picture((120, 80))),
        animation("GIF", 1),
        animation("PNG", 1),
        animation("WEBP", 1),
    ],
    ids=["jpeg", "gif", "png", "webp"],
)
def test_a_still_is_the_same_picture_as_prepare_image(data: bytes) -> None:
    media = prepare_media(data)

    assert (media.kind, media.frames, media.duration_s, media.grid) == ("image", 1, None, False)
    assert media.images[0].data_uri == prepare_image(data).data_uri
    assert media.describe() == ""


def test_a_camera_mpo_stays_a_still() -> None:
    first, second = Image.new("RGB", (64, 48), COLOURS[0]), Image.new("RGB", (64, 48), COLOURS[1])
    buf = io.BytesIO()
    first.save(buf, "MPO", save_all=True, append_images=[second])
    media = prepare_media(buf.getvalue())
    assert (media.kind, sampled(media)) == ("image", [0])


@pytest.mark.parametrize("fmt", FORMATS)
def test_grid_is_one_contact_sheet(fmt: str) -> None:
    media = prepare_media(animation(fmt, 8), media=MediaLimits(frames_as="grid"))

    assert (media.kind, media.frames, media.grid, len(media.images)) == ("animation", 4, True, 1)
    assert media.describe() == "4 frames of a 0.8 s animation, as one grid"
    sheet = picture_of(media.images[0])
    assert sheet.size == (2 * 64 + GRID_GAP, 2 * 48 + GRID_GAP)  # 2x2, frames at their own size
    cells = [(32, 24), (64 + GRID_GAP + 32, 24), (32, 48 + GRID_GAP + 24), (64 + GRID_GAP + 32, 48 + GRID_GAP + 24)]
    assert [nearest(sheet.getpixel(xy)) for xy in cells] == [0, 2, 4, 6]  # type: ignore[arg-type]


def test_grid_is_no_larger_than_max_side() -> None:
    limits = ImageLimits(max_side=300)
    media = prepare_media(animation("GIF", 16, size=(400, 225)), limits, MediaLimits(frames=9, frames_as="grid"))

    sheet = media.images[0]
    assert max(sheet.width, sheet.height) <= 300
    assert media.frames == 9
    cols, cell = grid_layout(9, (400, 225), 300)
    assert cols * cell + (cols - 1) * GRID_GAP <= 300
    assert (sheet.source_width, sheet.source_height) == (400, 225)


def test_each_frame_is_shrunk_like_a_still() -> None:
    media = prepare_media(animation("GIF", 4, size=(800, 400)), ImageLimits(max_side=200))
    assert {(image.width, image.height) for image in media.images} == {(200, 100)}


def test_timing_is_read_from_the_file_blocks() -> None:
    assert frame_durations(animation("GIF", 3, duration=[30, 50, 70]), "GIF", 3) == [30, 50, 70]
    assert frame_durations(animation("PNG", 3, duration=[30, 50, 70]), "PNG", 3) == [30, 50, 70]
    assert frame_durations(animation("WEBP", 3, duration=[30, 50, 70]), "WEBP", 3) == [30, 50, 70]
    # Browsers show a delay of 10 ms or less for 100 ms.
    assert frame_durations(animation("GIF", 3, duration=0), "GIF", 3) == [100, 100, 100]
    # A count that does not match Pillow's: no timing (sampled by frame number).
    assert frame_durations(animation("GIF", 3), "GIF", 4) is None
    assert pick_frames(None, 8, 4) == [0, 2, 4, 6]


def test_apng_whose_default_image_is_not_a_frame() -> None:
    hidden = Image.new("RGB", (64, 48), COLOURS[8])
    frames = [Image.new("RGB", (64, 48), COLOURS[i]) for i in range(4)]
    buf = io.BytesIO()
    hidden.save(buf, "PNG", save_all=True, append_images=frames, duration=100, default_image=True)

    media = prepare_media(buf.getvalue())

    assert sampled(media) == [0, 1, 2, 3]  # the default image (black) is never shown


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_damaged_animation_is_one_line(fmt: str) -> None:
    noise = np.random.default_rng(1)
    frames = [Image.fromarray(noise.integers(0, 255, (60, 80, 3), dtype=np.uint8)) for _ in range(4)]
    buf = io.BytesIO()
    frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], duration=100)
    with pytest.raises(ImageError, match="^that image file is damaged or incomplete$"):
        prepare_media(buf.getvalue()[: len(buf.getvalue()) // 3])


def test_size_limits_hold_for_animations() -> None:
    data = animation("GIF", 4, size=(200, 200))
    with pytest.raises(ImageError, match="image is 0.1 MP, the limit is 0"):
        prepare_media(data, ImageLimits(max_pixels=1000))
    with pytest.raises(ImageError, match="the limit is"):
        prepare_media(data, ImageLimits(max_bytes=100))


def test_the_cost_counts_every_sampled_frame() -> None:
    assert media_pixels(animation("GIF", 8)) == 4 * 64 * 48
    assert media_pixels(animation("WEBP", 3)) == 3 * 64 * 48
    assert media_pixels(animation("GIF", 8), media=MediaLimits(frames=1)) == 64 * 48
    assert media_pixels(jpeg_bytes(picture((96, 64)))) == 96 * 64
    assert media_pixels(b"not a picture at all") == ImageLimits().max_pixels  # as decoded_pixels: a guess


def test_describe() -> None:
    clip = PreparedMedia(images=(), kind="video", frames=4, duration_s=12.34, grid=False)
    assert clip.describe() == "4 frames of a 12.3 s clip"
    assert PreparedMedia(images=(), kind="video", frames=4, duration_s=12.34, grid=True).describe() == (
        "4 frames of a 12.3 s clip, as one grid"
    )
    assert PreparedMedia(images=(), kind="animation", frames=2, duration_s=None).describe() == "2 frames of an animation"
    assert PreparedMedia(images=(), kind="animation", frames=4, duration_s=2.0).describe() == "4 frames of a 2.0 s animation"


def test_media_limits_are_checked() -> None:
    for bad in ({"frames": 0}, {"frames": 17}, {"frames_as": "sheet"}, {"max_video_bytes": 0}, {"max_video_seconds": 0}):
        with pytest.raises(ValueError):
            MediaLimits(**bad)  # type: ignore[arg-type]
