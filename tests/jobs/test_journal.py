"""The journal's format and its crash bookkeeping (real SQLite files)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from bot.jobs.journal import Journal


async def reopened(path: Path) -> Journal:
    journal = Journal(path)
    await journal.open()
    return journal


async def test_a_message_is_journaled_in_one_group(tmp_path: Path) -> None:
    journal = await reopened(tmp_path / "j.sqlite3")
    ids = await journal.add_group([{"n": 1}, {"n": 2}, {"n": 3}])
    other = await journal.add({"n": 4})
    rows = sqlite3.connect(tmp_path / "j.sqlite3").execute("SELECT id, grp, payload FROM jobs ORDER BY id").fetchall()
    assert [r[0] for r in rows] == [*ids, other]
    assert {r[1] for r in rows[:3]} == {ids[0]} and rows[3][1] == other
    assert [json.loads(r[2])["n"] for r in rows] == [1, 2, 3, 4]
    await journal.close()


async def test_only_rows_of_earlier_processes_are_leftovers(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    first = await reopened(path)
    await first.add_group([{"n": 1}, {"n": 2}])
    await first.close()
    second = await reopened(path)
    assert [e.payload["n"] for e in second.leftovers] == [1, 2]
    assert second.leftovers[0].group == second.leftovers[1].group
    await second.add({"n": 3})  # a live question of the new process
    assert [e.payload["n"] for e in second.leftovers] == [1, 2]
    assert len(await second.pending()) == 3
    await second.close()


async def test_a_crash_counts_only_against_jobs_being_worked_on(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    journal = await reopened(path)
    busy, waiting = await journal.add_group([{"n": 1}, {"n": 2}])
    await journal.mark_active(busy)
    await journal.close()  # no park(): the process "died"
    journal = await reopened(path)
    crashes = {e.id: e.crashes for e in journal.leftovers}
    assert crashes == {busy: 1, waiting: 0}
    await journal.mark_active(busy)
    await journal.close()
    journal = await reopened(path)
    assert {e.id: e.crashes for e in journal.leftovers} == {busy: 2, waiting: 0}
    await journal.close()


async def test_a_clean_stop_is_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    journal = await reopened(path)
    entry = await journal.add({"n": 1})
    await journal.mark_active(entry)
    await journal.set_note(entry, 1234)
    assert await journal.park() == 1
    await journal.close()
    journal = await reopened(path)
    (left,) = journal.leftovers
    assert (left.id, left.crashes, left.note_id) == (entry, 0, 1234)
    await journal.remove(entry)
    assert await journal.count() == 0
    await journal.close()


async def test_a_journal_of_the_first_release_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, created REAL NOT NULL, payload TEXT NOT NULL)")
    db.execute("INSERT INTO jobs (created, payload) VALUES (1.0, ?)", (json.dumps({"n": 1}),))
    db.execute("INSERT INTO jobs (created, payload) VALUES (1.0, 'not json')")
    db.execute("INSERT INTO jobs (created, payload) VALUES (1.0, '[1, 2]')")
    db.commit()
    db.close()
    journal = await reopened(path)
    (entry,) = journal.leftovers  # the unreadable rows are dropped, with a log line
    assert (entry.payload, entry.group, entry.crashes, entry.note_id) == ({"n": 1}, entry.id, 0, None)
    assert await journal.count() == 1
    await journal.close()


async def test_no_path_keeps_nothing() -> None:
    journal = Journal(None)
    await journal.open()
    assert await journal.add_group([{"n": 1}, {"n": 2}]) == [None, None]
    await journal.mark_active(None)
    assert await journal.park() == 0 and await journal.pending() == [] and not journal.enabled


async def test_a_job_waiting_in_line_during_a_crash_is_not_charged(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    journal = await reopened(path)
    entry = await journal.add({"n": 1})
    await journal.mark_active(entry)
    await journal.mark_active(entry, False)  # prepared, now only waiting for an engine
    await journal.close()
    journal = await reopened(path)
    assert [e.crashes for e in journal.leftovers] == [0]
    await journal.close()


async def test_a_seen_message_is_replaced_by_its_jobs_in_one_transaction(tmp_path: Path) -> None:
    """A message is journaled as received before any request; its jobs take the row's place."""
    path = tmp_path / "j.sqlite3"
    journal = await reopened(path)
    seen = await journal.add_seen(10, 20, 30)
    other = await journal.add_seen(10, 21, 30)
    (entry, entry2) = await journal.pending()
    assert entry.seen == {"channel_id": 10, "message_id": 20, "user_id": 30, "created": entry.seen["created"]}
    ids = await journal.add_group([{"n": 1}, {"n": 2}], replaces=seen)
    assert [e.id for e in await journal.pending()] == [other, *ids]
    assert all(e.seen is None for e in await journal.pending() if e.id != other)
    await journal.close()
    # a received message counts as in flight: a process killed while reading it counts a crash
    again = await reopened(path)
    assert [(e.id, e.crashes) for e in again.leftovers if e.seen] == [(other, 1)]
    await again.close()


async def test_every_part_of_a_reply_is_journaled_as_it_is_created(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    journal = await reopened(path)
    (row,) = await journal.add_group([{"n": 1}])
    await journal.set_part(row, 0, 111)
    await journal.set_part(row, 2, 333)
    await journal.set_part(row, 1, 222)
    await journal.close()
    again = await reopened(path)
    (entry,) = again.leftovers
    assert entry.note_id == 111 and entry.parts == {1: 222, 2: 333}
    await again.close()


async def test_a_journal_from_before_the_parts_column_opens(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, created REAL NOT NULL, payload TEXT NOT NULL)")
    db.execute("INSERT INTO jobs (created, payload) VALUES (1.0, '{\"n\": 1}')")
    db.commit()
    db.close()
    journal = await reopened(path)
    (entry,) = journal.leftovers
    assert entry.payload == {"n": 1} and entry.parts == {} and entry.seen is None
    await journal.set_part(entry.id, 1, 5)
    assert (await journal.pending())[0].parts == {1: 5}
    await journal.close()
