"""The journal's format and its crash bookkeeping (real SQLite files)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from bot.journal import Journal


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
