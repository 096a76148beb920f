"""The prefix cache's bookkeeping (bot/engine/prefix_cache.py), without a model.
The engine tests check it against llama.cpp's own evaluation."""

from __future__ import annotations

from bot.engine.prefix_cache import IMAGE, TEXT, Piece, PrefixCache, cached_tokens


def prompt(system: tuple[int, ...], image: bytes, question: tuple[int, ...], *, image_pos: int = 4, image_tokens: int = 16):
    """[system text][image][question text]; an M-RoPE image takes fewer positions than tokens."""
    a = Piece(TEXT, system, 0, len(system), len(system))
    b = Piece(IMAGE, image, a.end, a.end + image_pos, image_tokens)
    c = Piece(TEXT, question, b.end, b.end + len(question), len(question))
    return [a, b, c]


def test_an_empty_cache_reuses_nothing() -> None:
    assert PrefixCache().reusable(prompt((1, 2), b"img", (3, 4))) == 0


def test_same_system_and_image_reuses_up_to_the_first_new_token() -> None:
    cache = PrefixCache()
    first = prompt((1, 2, 3), b"img", (7, 8, 9))
    cache.store(first)
    cache.extend((20, 21))  # the answer follows the question in the KV cache
    follow = prompt((1, 2, 3), b"img", (7, 8, 9, 20, 21, 5, 6))
    keep = cache.reusable(follow)
    assert keep == follow[2].start + 5  # question and answer reused, the new turn is evaluated
    # cells, not positions: the image's 16 tokens sit in 4 positions
    assert cached_tokens(follow, keep) == 3 + 16 + 5


def test_another_image_stops_at_the_image() -> None:
    cache = PrefixCache()
    cache.store(prompt((1, 2, 3), b"img", (7,)))
    assert cache.reusable(prompt((1, 2, 3), b"other", (7,))) == 3


def test_a_different_system_text_stops_inside_it() -> None:
    cache = PrefixCache()
    cache.store(prompt((1, 2, 3), b"img", (7,)))
    assert cache.reusable(prompt((1, 9, 3), b"img", (7,))) == 1


def test_a_shorter_text_piece_does_not_let_later_pieces_match_at_other_positions() -> None:
    cache = PrefixCache()
    cache.store(prompt((1, 2, 3), b"img", (7,)))
    new = prompt((1, 2), b"img", (7,))  # the image now starts one position earlier
    assert cache.reusable(new) == 2


def test_the_whole_prompt_cached_reports_its_end() -> None:
    cache = PrefixCache()
    pieces = prompt((1, 2), b"img", (7, 8))
    cache.store(pieces)
    assert cache.reusable(pieces) == pieces[-1].end
