"""The footer and the rendered reply."""

from __future__ import annotations

from bot.engine.base import Answer, StageTimings
from bot.reply import CUT_MARK, EMPTY_ANSWER, render
from bot.timing import footer


def test_footer_line_matches_the_reference_format() -> None:
    t = StageTimings(image_encode_s=0.02, prompt_eval_s=0.31, generation_s=54 / 58.5, total_s=2.01, completion_tokens=54)
    assert footer(t) == "⏱ queue 0.00 s · image 0.02 s · prompt 0.31 s · 54 tok @ 58.5 tok/s · total 2.01 s"


def test_total_includes_the_queue_wait() -> None:
    t = StageTimings(total_s=1.0, queue_wait_s=0.5, completion_tokens=0)
    assert footer(t).endswith("0 tok @ 0.0 tok/s · total 1.50 s")
    assert "queue 0.50 s" in footer(t)


def test_render_puts_the_footer_in_small_text_under_the_answer() -> None:
    answer = Answer("A red square.", "stop", 10, 4, StageTimings(total_s=0.1, completion_tokens=4, generation_s=0.05))
    body, foot = render(answer).split("\n")
    assert body == "A red square."
    assert foot.startswith("-# ⏱ queue ") and "4 tok @ 80.0 tok/s" in foot


def test_cut_and_empty_answers_are_marked() -> None:
    assert render(Answer("", "stop", 1, 0)).startswith(EMPTY_ANSWER)
    assert render(Answer("Once upon", "length", 1, 2)).split("\n")[0] == "Once upon" + CUT_MARK


def test_long_answers_split_on_whole_words_with_the_footer_last() -> None:
    from bot.reply import render_parts, split_text

    words = " ".join(f"word{i}" for i in range(1500))
    answer = Answer(words, "stop", 1, 1500, StageTimings(total_s=1.0, generation_s=1.0, completion_tokens=1500))
    parts = render_parts(answer)
    assert len(parts) >= 4 and all(len(p) <= 2000 for p in parts)
    assert " ".join(p for p in parts[:-1]) + " " + parts[-1].split("\n")[0] == words
    assert parts[-1].split("\n")[-1].startswith("-# ⏱")
    assert split_text("a" * 1500 + "\n" + "b c" * 400)[0] == "a" * 1500
    assert [len(p) for p in split_text("x" * 4500)] == [2000, 2000, 500]


def test_answer_text_is_recovered_from_a_posted_reply() -> None:
    from bot.reply import answer_from_message

    answer = Answer("A cat.", "length", 1, 2, StageTimings(total_s=0.1))
    assert answer_from_message(render(answer)) == "A cat."


def test_timed_out_answers_are_marked() -> None:
    from bot.reply import TIMEOUT_MARK, answer_from_message

    text = render(Answer("Half an", "timeout", 1, 2))
    assert text.split("\n")[0] == "Half an" + TIMEOUT_MARK
    assert answer_from_message(text) == "Half an"
