"""bot.media on video clips (PyAV): sampled by seeking, limits before decoding, one-line errors."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

import bot.media.video as video
from bot.images import Container, ImageError, ImageLimits, prepare_image, sniff_container
from bot.media import MSG_NO_PICTURE, MSG_VIDEO_UNREADABLE, MediaLimits, media_pixels, prepare_media
from bot.media.base import GRID_GAP
from tests.media.makers import animation, centre, clip, picture_of, ramp_colour, sound


def close(colour: tuple[int, int, int], expected: tuple[int, int, int], tolerance: int = 14) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(colour, expected, strict=True))


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the frames the decoder gives out (one entry per frame)."""
    count: list[int] = []
    real = video._decoded_frames

    def counting(source, stream):  # type: ignore[no-untyped-def]
        for frame in real(source, stream):
            count.append(1)
            yield frame

    monkeypatch.setattr(video, "_decoded_frames", counting)
    return count


@pytest.mark.parametrize(
    ("fmt", "codec", "name"),
    [
        ("mp4", "libx264", "MP4"),
        ("mp4", "mpeg4", "MP4"),
        ("mov", "libx264", "MOV"),
        ("webm", "libvpx", "WEBM"),
        ("webm", "libvpx-vp9", "WEBM"),
    ],
)
def test_frames_are_sampled_evenly_over_the_clip(fmt: str, codec: str, name: str) -> None:
    data = clip(fmt, codec, seconds=4.0, fps=10)

    media = prepare_media(data)

    assert (media.kind, media.frames, media.grid) == ("video", 4, False)
    assert media.duration_s == pytest.approx(4.0, abs=0.15)
    assert media.describe() == "4 frames of a 4.0 s clip"
    for image, t in zip(media.images, (0.0, 1.0, 2.0, 3.0), strict=True):
        assert close(centre(image), ramp_colour(t, 4.0)), (t, centre(image))
    first = media.images[0]
    assert (first.source_format, first.source_width, first.source_height, first.width, first.height) == (name, 64, 48, 64, 48)
    assert first.frames == 40
    assert first.data_uri.startswith("data:image/jpeg;base64,")


def test_a_long_clip_is_sampled_by_seeking_not_decoded_whole(decoded: list[int]) -> None:
    data = clip(seconds=20.0, fps=30, size=(32, 32), gop=45)  # 600 frames, a keyframe every 1.5 s

    media = prepare_media(data)

    assert media.frames == 4
    for image, t in zip(media.images, (0.0, 5.0, 10.0, 15.0), strict=True):
        assert close(centre(image), ramp_colour(t, 20.0)), (t, centre(image))
    assert len(decoded) <= 4 * 45  # at most a keyframe interval per sample, of 600


def test_samples_within_one_keyframe_interval_decode_on(decoded: list[int]) -> None:
    data = clip(seconds=4.0, fps=30, size=(32, 32), gop=300)  # one keyframe, at 0

    media = prepare_media(data)

    assert media.frames == 4
    assert close(centre(media.images[3]), ramp_colour(3.0, 4.0))
    # Up to 3 s, once (91 frames): seeking back to the start for every sample would be 184.
    assert len(decoded) <= 3 * 30 + 10


def test_a_live_recording_without_duration_is_measured_from_its_packets() -> None:
    data = clip("webm", "libvpx", seconds=3.0, fps=10, seekable=False)

    media = prepare_media(data)

    assert media.duration_s == pytest.approx(3.0, abs=0.15)
    assert media.frames == 4
    assert close(centre(media.images[0]), ramp_colour(0.0, 3.0))
    assert close(centre(media.images[2]), ramp_colour(1.5, 3.0))


def test_grid_is_one_contact_sheet() -> None:
    media = prepare_media(clip(seconds=4.0, size=(64, 48)), media=MediaLimits(frames_as="grid"))

    assert (media.frames, media.grid, len(media.images)) == (4, True, 1)
    assert media.describe() == "4 frames of a 4.0 s clip, as one grid"
    sheet = picture_of(media.images[0])
    assert sheet.size == (2 * 64 + GRID_GAP, 2 * 48 + GRID_GAP)
    assert close(sheet.getpixel((32, 24)), ramp_colour(0.0, 4.0))  # type: ignore[arg-type]
    assert close(sheet.getpixel((64 + GRID_GAP + 32, 48 + GRID_GAP + 24)), ramp_colour(3.0, 4.0))  # type: ignore[arg-type]


def test_grid_of_a_large_clip_fits_max_side() -> None:
    media = prepare_media(clip(seconds=1.0, size=(640, 360)), ImageLimits(max_side=400), MediaLimits(frames_as="grid"))
    sheet = media.images[0]
    assert max(sheet.width, sheet.height) <= 400
    assert sheet.width > 380  # two cells across, not a strip of tiny ones


def test_frames_are_shrunk_like_a_still() -> None:
    media = prepare_media(clip(seconds=1.0, size=(320, 180)), ImageLimits(max_side=160))
    assert {(image.width, image.height) for image in media.images} == {(160, 90)}


def test_one_frame_is_the_first() -> None:
    media = prepare_media(clip(seconds=2.0), media=MediaLimits(frames=1))
    assert media.frames == 1
    assert close(centre(media.images[0]), ramp_colour(0.0, 2.0))
    assert media.describe() == "1 frame of a 2.0 s clip"


def test_a_clip_over_the_time_limit_is_refused_before_decoding(decoded: list[int]) -> None:
    data = clip(seconds=4.0)
    with pytest.raises(ImageError, match=r"^video is 4 s long, the limit is 2.5 s$"):
        prepare_media(data, media=MediaLimits(max_video_seconds=2.5))
    assert decoded == []


def test_a_clip_over_the_pixel_limit_is_refused_before_decoding(decoded: list[int]) -> None:
    data = clip(seconds=0.5, size=(640, 480))
    with pytest.raises(ImageError, match=r"^video is 0.4 MP, the limit is 0.1 MP$"):
        prepare_media(data, ImageLimits(max_pixels=100_000))
    assert decoded == []
    assert media_pixels(data, ImageLimits(max_pixels=100_000)) == 0


def test_a_file_over_the_video_byte_limit_is_refused() -> None:
    data = clip(seconds=1.0)
    with pytest.raises(ImageError, match=r"^file is .* MB, the limit is 0 MB$"):
        prepare_media(data, media=MediaLimits(max_video_bytes=100))
    # Videos have their own byte limit: images.max_bytes does not apply to them.
    assert prepare_media(data, ImageLimits(max_bytes=100)).kind == "video"


@pytest.mark.parametrize(("fmt", "codec"), [("ipod", "aac"), ("ogg", "libopus"), ("mp4", "aac")], ids=["m4a", "voice-ogg", "mp4"])
def test_sound_only_is_one_line(fmt: str, codec: str) -> None:
    with pytest.raises(ImageError, match=f"^{MSG_NO_PICTURE}$"):
        prepare_media(sound(fmt, codec))


def test_sound_formats_are_told_by_their_magic() -> None:
    for head in (b"ID3\x04\x00\x00", b"\xff\xfb\x90\x64", b"fLaC\x00\x00", b"RIFF\x00\x00\x00\x00WAVEfmt "):
        with pytest.raises(ImageError, match=f"^{MSG_NO_PICTURE}$"):
            prepare_media(head + b"\x00" * 200)


def test_a_damaged_clip_is_one_line() -> None:
    data = clip(seconds=2.0)
    for broken in (data[:200], data[:32] + bytes(range(256)) * 8, b"\x1a\x45\xdf\xa3" + b"\x00" * 300):
        with pytest.raises(ImageError, match=f"^{MSG_VIDEO_UNREADABLE}$"):
            prepare_media(broken)


def test_containers_are_told_by_content() -> None:
    assert sniff_container(clip("mp4")) == Container("mp4", "MP4")
    assert sniff_container(clip("mov")) == Container("mov", "MOV")
    assert sniff_container(clip("webm", "libvpx")) == Container("matroska", "WEBM")
    assert sniff_container(clip("matroska", "libx264")) == Container("matroska", "MKV")
    assert sniff_container(sound("ogg", "libopus")) == Container("ogg", "OGG")
    for brand in (b"isom", b"mp41", b"mp42", b"avc1", b"M4V ", b"qt  ", b"3gp5"):
        found = sniff_container(b"\x00\x00\x00\x18ftyp" + brand + b"\x00\x00\x00\x00" + brand + b"\x00" * 100)
        assert found is not None and found.demuxer in ("mp4", "mov"), brand
    # HEIC / AVIF share the box: they stay images (HEIC refused as before).
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 200
    assert sniff_container(heic) is None
    with pytest.raises(ImageError, match="HEIC/AVIF images are not supported"):
        prepare_media(heic)
    assert sniff_container(b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf") is None
    # The name never matters, and images are not containers.
    assert sniff_container(b"\xff\xd8\xff\xe0" + b"\x00" * 100) is None
    assert sniff_container(b"GIF89a" + b"\x00" * 100) is None


def test_prepare_image_still_says_a_video_is_not_an_image() -> None:
    with pytest.raises(ImageError, match="^that file is not an image$"):
        prepare_image(clip())


def test_the_cost_is_frames_times_frame_pixels() -> None:
    assert media_pixels(clip(seconds=1.0, size=(64, 48))) == 4 * 64 * 48
    assert media_pixels(clip(seconds=1.0, size=(64, 48)), media=MediaLimits(frames=2)) == 2 * 64 * 48
    assert media_pixels(sound()) == 0
    assert media_pixels(b"\x1a\x45\xdf\xa3" + b"\x00" * 300) == 0


def test_a_phone_video_is_turned_as_its_display_matrix_says() -> None:
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height = 64, 48
        stream.pix_fmt = "yuv420p"
        stream.set_display_rotation(-90)  # stored landscape, shown turned a quarter clockwise
        pixels = np.zeros((48, 64, 3), np.uint8)
        pixels[:, :] = (0, 0, 255)
        pixels[:16, :16] = (255, 0, 0)  # the stored top-left corner
        for _ in range(5):
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)

    media = prepare_media(out.getvalue(), media=MediaLimits(frames=1))

    shown = picture_of(media.images[0])
    assert shown.size == (48, 64)  # portrait, as a phone shows it
    assert close(shown.getpixel((shown.width - 6, 5)), (255, 0, 0), 20)  # type: ignore[arg-type]
    assert close(shown.getpixel((5, 5)), (0, 0, 255), 20)  # type: ignore[arg-type]


def test_a_clip_of_one_frame_gives_one_picture() -> None:
    media = prepare_media(clip(seconds=0.1, fps=10))
    assert (media.kind, media.frames, len(media.images)) == ("video", 1, 1)
    grid = prepare_media(clip(seconds=0.1, fps=10), media=MediaLimits(frames_as="grid"))
    assert (grid.frames, len(grid.images), grid.grid) == (1, 1, False)
    assert grid.describe() == "1 frame of a 0.1 s clip"
    assert (grid.images[0].width, grid.images[0].height) == (64, 48)


def test_a_picture_is_never_taken_for_a_transport_stream() -> None:
    gif = bytearray(animation("GIF", 2))
    gif += b"\x00" * 400
    gif[188] = gif[376] = 0x47  # MPEG-TS sync bytes where a GIF's palette could have them
    assert sniff_container(bytes(gif)) is None
    ts = bytes([0x47] + [0] * 187) * 3
    assert sniff_container(ts) == Container("mpegts", "MPEG-TS")
