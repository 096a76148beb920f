"""An in-process test engine whose answers depend on the picture: its dominant colour.

For end-to-end tests of behaviour that hangs on what the model says about an
image (moderation rules match one image and not another) without a real
model.  It speaks the :class:`bot.engine.base.Engine` protocol, so the real
queue, runtime and bot run around it::

    engine = ColourEngine()
    runtime = Runtime(settings, engine=engine)

What it answers, for an image whose dominant colour is ``C`` (one of
:data:`PALETTE`'s names):

* a rule question (it contains :data:`bot.moderation.RULE_SUFFIX`): "Yes, the
  picture is mostly C." when ``C`` is named in the question, else "No, the
  picture is mostly C.";
* an alt-text question (it contains "alt text" and "factual"): "An image of a
  C square." (the "image of" is for the bot to remove);
* anything else: "A C square on a plain background."

It records each request and how many distinct images it "encoded"
(``encodes``), like a prefix cache that keeps the last image.
"""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Callable

from PIL import Image

from bot.engine.base import Answer, EngineInfo, StageTimings, VisionRequest
from bot.moderation.checker import RULE_SUFFIX

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 200, 60),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 40),
    "white": (245, 245, 245),
    "black": (10, 10, 10),
}


def dominant_colour(data_uri: str) -> str:
    """The palette name nearest to the image's most common (coarse) colour."""
    raw = base64.b64decode(data_uri.split(",", 1)[1])
    with Image.open(io.BytesIO(raw)) as img:
        small = img.convert("RGB").resize((32, 32))
    counts: dict[tuple[int, int, int], int] = {}
    raw_rgb = small.tobytes()
    for i in range(0, len(raw_rgb), 3):
        r, g, b = raw_rgb[i], raw_rgb[i + 1], raw_rgb[i + 2]
        key = (r // 32, g // 32, b // 32)
        counts[key] = counts.get(key, 0) + 1
    r, g, b = (v * 32 + 16 for v in max(counts, key=lambda k: counts[k]))
    return min(PALETTE, key=lambda name: sum((x - y) ** 2 for x, y in zip(PALETTE[name], (r, g, b), strict=True)))


def openai_colour_answer(body: dict) -> str:
    """:meth:`ColourEngine.answer_text` for an OpenAI-compatible request body (a test server
    such as :class:`tests.fakes.slow_engine.SlowEngine` answers with it:
    ``SlowEngine(answer=openai_colour_answer, tokens=64)``)."""
    images: list[str] = []
    question = ""
    for message in body.get("messages") or []:
        content = message.get("content")
        if isinstance(content, str):
            question = content
            continue
        for part in content or []:
            if part.get("type") == "image_url":
                images.append(part["image_url"]["url"])
            elif part.get("type") == "text":
                question = part.get("text", "")
    request = VisionRequest(images=tuple(images[-1:]), question=question, max_tokens=int(body.get("max_tokens") or 64))
    return ColourEngine().answer_text(request)


class ColourEngine:
    """Answers from the picture's dominant colour; see the module docstring."""

    def __init__(self, *, delay_s: float = 0.0, fail_on: str | None = None) -> None:
        #: seconds each answer takes (to hold jobs in the queue)
        self.delay_s = delay_s
        #: a question containing this text raises (a failing check)
        self.fail_on = fail_on
        self.requests: list[VisionRequest] = []
        #: images "encoded": a request about the previous request's image costs none
        self.encodes = 0
        self._last_image: str | None = None
        self._lock = threading.Lock()

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(name="colour", model="colour-test", chat_format="test", text_backend="CPU", clip_backend="CPU")

    def load(self) -> None:
        pass

    def close(self) -> None:
        pass

    def answer_text(self, request: VisionRequest) -> str:
        colour = dominant_colour(request.images[0]) if request.images else "none"
        question = request.question
        if RULE_SUFFIX in question:
            asked = question.replace(RULE_SUFFIX, "").lower()
            return f"{'Yes' if colour in asked else 'No'}, the picture is mostly {colour}."
        if "alt text" in question.lower() and "factual" in question.lower():
            return f"An image of a {colour} square."
        return f"A {colour} square on a plain background."

    def generate(
        self,
        request: VisionRequest,
        *,
        should_stop: Callable[[], bool] | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> Answer:
        from bot.engine.base import EngineError

        started = time.perf_counter()
        with self._lock:
            self.requests.append(request)
            image = request.images[0] if request.images else None
            if image is not None and image != self._last_image:
                self.encodes += 1
                self._last_image = image
        if self.fail_on and self.fail_on in request.question:
            raise EngineError("the colour engine failed on purpose")
        if self.delay_s:
            time.sleep(self.delay_s)
        text = self.answer_text(request)
        if on_text is not None:
            on_text(text)
        tokens = len(text.split())
        total = time.perf_counter() - started
        return Answer(text, "stop", 10, tokens, StageTimings(total_s=total, generation_s=total, completion_tokens=tokens))
