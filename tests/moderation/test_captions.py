"""The caption store moderators search (a real SQLite file), and their queries."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import replace
from pathlib import Path

from bot.moderation.captions import CaptionRow, CaptionStore, match_expression


def test_moderator_queries_never_reach_fts_as_syntax() -> None:
    assert match_expression('weapon" OR NEAR(x') == '"weapon" "or" "near" "x"'
    assert match_expression("knife gun", any_word=True) == '"knife" OR "gun"'
    assert match_expression("?! *") is None


def row(message_id: int, poster: int, caption: str, created: float | None = None, rules: tuple[str, ...] = ()) -> CaptionRow:
    return CaptionRow(message_id, 10, 1, poster, created or time.time(), f"https://discord.com/channels/1/10/{message_id}", caption, "a.png", rules)


async def test_the_store_claims_once_searches_forgets_purges_and_keeps_unfinished_checks(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    store = CaptionStore(path)
    await store.open()
    assert await store.claim(1, {"message_id": 1}) and not await store.claim(1, {"message_id": 1})
    assert await store.claim(2, {"message_id": 2})
    await store.done(1)
    now = time.time()
    await store.add([row(1, 100, "A red bicycle by a wall", rules=("bikes",)), row(2, 200, "Two dogs on a red sofa"), row(3, 100, "A cat", now - 40 * 86400)])
    assert [r.message_id for r in await store.search("red bicycle")] == [1]
    assert {r.message_id for r in await store.search("red")} == {1, 2}
    assert [r.message_id for r in await store.search("bikes")] == [1]  # rule names are searchable
    assert {r.message_id for r in await store.search("bicycle sofa")} == {1, 2}  # no row has both: any word
    assert [r.message_id for r in await store.search("red", poster_id=200)] == [2]
    assert await store.search("cat", since=now - 86400) == []
    assert await store.purge(now - 30 * 86400) == 1
    assert await store.forget_member(100) == 1 and await store.forget_message(2) == 1
    assert await store.count() == 0
    await store.close()

    again = CaptionStore(path)
    await again.open()
    assert again.leftovers == [{"message_id": 2}]  # claimed, never finished: checked after the restart
    assert not await again.claim(1, {})
    await again.close()


async def test_a_repeated_check_keeps_one_row_per_image_and_its_steps_survive(tmp_path: Path) -> None:
    """The store's key is (message, image position): a check repeated after a restart adds no
    row; the steps a check completed are read back with its leftover description."""
    path = tmp_path / "state.sqlite3"
    store = CaptionStore(path)
    await store.open()
    assert await store.claim(7, {"message_id": 7})
    two = [replace(row(7, 100, "A red kite"), position=0), replace(row(7, 100, "A blue kite"), position=1)]
    await store.add(two)
    await store.step_done(7, "caption:0")
    await store.step_done(7, "alert:1:kites")
    await store.add(two)  # the replay keeps them again
    assert sorted(r.caption for r in await store.search("kite")) == ["A blue kite", "A red kite"]
    await store.close()
    again = CaptionStore(path)
    await again.open()
    assert again.leftovers == [{"message_id": 7}] and again.leftover_steps == {7: {"caption:0", "alert:1:kites"}}
    await again.add(two)
    assert await again.count() == 2
    await again.close()


async def test_a_store_from_before_the_unique_key_is_numbered_and_keyed(tmp_path: Path) -> None:
    """Rows kept by an older release (no position) are numbered per message in the order they came."""
    path = tmp_path / "state.sqlite3"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE mod_captions (id INTEGER PRIMARY KEY AUTOINCREMENT, message_id INTEGER NOT NULL, channel_id INTEGER NOT NULL,"
        " guild_id INTEGER, poster_id INTEGER NOT NULL, created REAL NOT NULL, link TEXT NOT NULL, filename TEXT NOT NULL DEFAULT '',"
        " caption TEXT NOT NULL, rules TEXT NOT NULL DEFAULT '')"
    )
    db.execute("CREATE TABLE mod_seen (message_id INTEGER PRIMARY KEY, created REAL NOT NULL, payload TEXT)")
    for caption in ("one", "two"):
        db.execute(
            "INSERT INTO mod_captions (message_id, channel_id, poster_id, created, link, caption) VALUES (5, 10, 100, ?, 'l', ?)",
            (time.time(), caption),
        )
    db.commit()
    db.close()
    store = CaptionStore(path)
    await store.open()
    positions = sqlite3.connect(path).execute("SELECT caption, position FROM mod_captions ORDER BY id").fetchall()
    assert positions == [("one", 0), ("two", 1)]
    await store.add([replace(row(5, 100, "one again"), position=1)])
    assert await store.count() == 2
    await store.close()
