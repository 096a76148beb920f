"""Streaming's partial text: split into parts like the final text, the cursor on the last."""

from __future__ import annotations

from bot.jobs.streaming import CURSOR, partial_parts


def test_partial_parts_split_like_the_final_text() -> None:
    text = " ".join(f"w{i}" for i in range(700))
    parts = partial_parts(text, "**Image 1 of 2** (a.png)")
    assert parts[0].startswith("**Image 1 of 2** (a.png)\nw0 w1")
    assert all(len(p) <= 2000 for p in parts) and parts[-1].endswith(CURSOR)
    assert " ".join(parts).removesuffix(CURSOR).split()[5:] == text.split()
