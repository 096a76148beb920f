"""``llava-bot bench`` part 8: what a moving picture costs against a still one.

Method: the same runtime and model as the other parts.  Three kinds of
picture at 640x480, each ``repeats`` times with different content (so the
prefix cache never serves an image): a still JPEG, a 4-frame animated GIF,
and a 4-second H.264 clip (made here with PyAV).  Each is prepared as the bot
prepares it (``Runtime.prepare_media``: ``images.frames`` frames of a moving
picture) and answered through the queue with the same question and
``max_tokens``.  Medians per kind: preparation time, image encode time (all
frames), engine total; the ratios are clip / still and GIF / still, measured
in this one run.
"""

from __future__ import annotations

import io
import time
from typing import Any

from PIL import Image

from bot.bench.common import QUESTION, encode, median, ms, photo
from bot.runtime import Runtime


def animated_gif(seed: int, frames: int = 4, size: tuple[int, int] = (640, 480)) -> bytes:
    """A GIF of ``frames`` photo-like frames, 250 ms each."""
    images = [photo(*size, seed=seed * 10 + i).convert("P", palette=Image.Palette.ADAPTIVE) for i in range(frames)]
    buf = io.BytesIO()
    images[0].save(buf, "GIF", save_all=True, append_images=images[1:], duration=250, loop=0)
    return buf.getvalue()


def h264_clip(seed: int, seconds: float = 4.0, fps: int = 10, size: tuple[int, int] = (640, 480)) -> bytes:
    """A short MP4 clip of photo-like frames that change every second."""
    import av
    import numpy as np

    stills = [np.asarray(photo(*size, seed=seed * 10 + i).convert("RGB")) for i in range(int(seconds) + 1)]
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(round(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(stills[i // fps], format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


async def part_frames(runtime: Runtime, max_tokens: int, repeats: int = 3) -> dict[str, Any]:
    makers = {
        "still": lambda seed: encode(photo(640, 480, seed=seed), "JPEG", quality=90),
        "gif": animated_gif,
        "clip": h264_clip,
    }
    results: dict[str, Any] = {"frames_repeats": repeats, "frames_sampled": runtime.settings.images.frames}
    for kind, make in makers.items():
        prepare_s: list[float] = []
        encode_s: list[float] = []
        total_s: list[float] = []
        images = 0
        for n in range(repeats):
            data = make(500 + 37 * n + len(kind))
            t0 = time.perf_counter()
            media = await runtime.prepare_media(data)
            prepare_s.append(time.perf_counter() - t0)
            images = len(media.images)
            answer = await runtime.submit(runtime.request(media.images, QUESTION, max_tokens=max_tokens), user_id="bench").result()
            encode_s.append(answer.timings.image_encode_s)
            total_s.append(answer.timings.total_s)
        results[f"frames_{kind}_images"] = images
        results[f"frames_{kind}_prepare_ms"] = ms(median(prepare_s))
        results[f"frames_{kind}_encode_ms"] = ms(median(encode_s))
        results[f"frames_{kind}_total_ms"] = ms(median(total_s))
    for kind in ("gif", "clip"):
        results[f"frames_{kind}_over_still"] = round(results[f"frames_{kind}_total_ms"] / max(results["frames_still_total_ms"], 1e-9), 2)
    return results


def rows(r: dict[str, Any], row: Any) -> list[str]:
    """Part 8 of the human-readable report."""
    out = ["", f"8. moving pictures: {r['frames_sampled']} frames sampled (median of {r['frames_repeats']})"]
    for kind, label in (("still", "still JPEG 640x480"), ("gif", "4-frame GIF 640x480"), ("clip", "4 s H.264 clip 640x480")):
        out.append(
            row(
                f"{label}: prepare / encode / total",
                f"{r[f'frames_{kind}_prepare_ms']} / {r[f'frames_{kind}_encode_ms']} / {r[f'frames_{kind}_total_ms']} ms",
                f"{r[f'frames_{kind}_images']} image(s) to the model",
            )
        )
    out.append(row("total, GIF / still and clip / still", f"{r['frames_gif_over_still']}x / {r['frames_clip_over_still']}x"))
    return out
