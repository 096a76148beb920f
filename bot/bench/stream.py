"""``llava-bot bench`` part 7: what streaming answers into Discord costs.

Method: the whole bot on loopback (the fake Discord), the same runtime and
model as the other parts.  Questions alternate between streaming off and on
(``discord.stream``, switched between questions) so that both see the same
machine state.  Per question: the wall time from the user's message to the
reply's final text (the footer), and the engine's own time; the cost of
streaming is the ratio of (bot time / engine time) on and off, measured in
this one run.  "First words" is the time from the engine handing out its
first text to the first message of the reply reaching Discord (both read on
the monotonic clock).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from bot.bench.loopback import loopback_bot
from bot.engine.base import Answer, VisionRequest
from bot.runtime import Runtime

QUESTION = "Describe this image in detail."


def _watched_engine(runtime: Runtime) -> list[dict[str, float]]:
    """Record each call's duration and the moment of its first text ("del engine.generate" undoes it)."""
    engine = runtime.engine
    original = engine.generate
    calls: list[dict[str, float]] = []

    def generate(request: VisionRequest, **kw: Any) -> Answer:
        call: dict[str, float] = {}
        on_text = kw.get("on_text")

        def first_text(text: str) -> None:
            call.setdefault("first_text", time.monotonic())
            if on_text is not None:
                on_text(text)

        kw["on_text"] = first_text
        t0 = time.perf_counter()
        try:
            return original(request, **kw)
        finally:
            call["seconds"] = time.perf_counter() - t0
            calls.append(call)

    engine.generate = generate  # type: ignore[method-assign]
    return calls


async def part_streaming(runtime: Runtime, pictures: list[bytes], max_tokens: int) -> dict[str, Any]:
    from bot.testing.fake_discord import BOT_ID, GENERAL_ID

    calls = _watched_engine(runtime)
    ratios: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    first_words: list[float] = []
    edits: list[int] = []
    try:
        async with loopback_bot(runtime, stream=True, stream_edit_s=1.0) as (fake, bot):
            for i, data in enumerate(pictures * 2):
                stream = i % 2 == 1
                bot.settings.discord.stream = stream
                before = len(calls)
                att = fake.add_attachment(f"stream{i}.jpg", data)
                t0 = time.perf_counter()
                msg = await fake.user_message(1, GENERAL_ID, f"<@{BOT_ID}> {QUESTION}", attachments=[att], mentions_bot=True)
                first = await fake.wait_for_sent(lambda s, m=msg: _replies_to(s, m["id"]), timeout=120)
                await fake.wait_until(lambda f=first: "⏱" in fake.messages[f["id"]]["content"], timeout=120)
                wall = time.perf_counter() - t0
                call = calls[before]
                ratios[stream].append((wall, call["seconds"]))
                if stream:
                    first_words.append(first["time"] - call["first_text"])
                    edits.append(sum(1 for s in fake.sent if s["id"] == first["id"]))
    finally:
        del runtime.engine.generate

    def ratio(pairs: list[tuple[float, float]]) -> float:
        return sum(w for w, _ in pairs) / sum(e for _, e in pairs)

    off, on = ratio(ratios[False]), ratio(ratios[True])
    return {
        "stream_max_tokens": max_tokens,
        "stream_bot_over_engine_off": round(off, 4),
        "stream_bot_over_engine_on": round(on, 4),
        "stream_cost_pct": round((on / off - 1) * 100, 2),
        "stream_first_words_ms_p50": round(statistics.median(first_words) * 1000, 1),
        "stream_first_words_ms_max": round(max(first_words) * 1000, 1),
        "stream_messages_per_answer": round(statistics.median(edits), 1),
    }


def _replies_to(sent: dict[str, Any], message_id: str) -> bool:
    reference = sent.get("message_reference")
    return reference is not None and str(reference["message_id"]) == str(message_id)


def rows(r: dict[str, Any], row: Any) -> list[str]:
    """Part 7 of the human-readable report."""
    return [
        "",
        f"7. streaming into Discord (max_tokens {r['stream_max_tokens']}, one edit a second at most)",
        row("bot time / engine time: off / on", f"{r['stream_bot_over_engine_off']} / {r['stream_bot_over_engine_on']}",
            f"streaming costs {r['stream_cost_pct']:+.2f} % (target < 2 %)"),
        row("first words in Discord after the first token", f"{r['stream_first_words_ms_p50']} ms",
            f"p50; max {r['stream_first_words_ms_max']} ms (target < 1 s)"),
        row("messages sent or edited per answer", r["stream_messages_per_answer"]),
    ]
