"""Rules' track record and the decision memory (bot.moderation.record), on a real SQLite file and in memory."""

from __future__ import annotations

import base64
import io
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from bot.moderation.record import (
    COLOUR_NEAR,
    PHASH_NEAR,
    SCHEMA_VERSION,
    AlertRow,
    Decision,
    RecordStore,
    RuleRecord,
    hash_distance,
    image_hash,
    migrate,
    near,
)

G1, G2 = 1001, 1002
MOD, MOD2 = 501, 502
DAY = 86400.0

# -- pictures -------------------------------------------------------------------------


def scene(colour: tuple[int, int, int] = (200, 40, 40), size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A picture with structure: a gradient, two shapes in ``colour``, a dark triangle and a line."""
    w, h = size
    img = Image.new("RGB", size)
    draw = ImageDraw.Draw(img)
    for y in range(h):
        grey = 170 + 60 * y // h
        draw.line((0, y, w, y), fill=(grey, grey, grey - 10))
    draw.ellipse((w * 0.08, h * 0.15, w * 0.45, h * 0.65), fill=colour)
    draw.rectangle((w * 0.55, h * 0.45, w * 0.92, h * 0.9), fill=colour)
    draw.polygon([(w * 0.15, h * 0.9), (w * 0.35, h * 0.7), (w * 0.5, h * 0.92)], fill=(30, 30, 30))
    draw.line((0, h * 0.1, w, h * 0.35), fill=(20, 20, 20), width=max(2, w // 60))
    return img


def other_scene(size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A different picture: stripes on green and a white disc."""
    w, h = size
    img = Image.new("RGB", size, (30, 60, 30))
    draw = ImageDraw.Draw(img)
    for x in range(0, w, 40):
        draw.rectangle((x, 0, x + 18, h), fill=(220, 200, 60))
    draw.ellipse((w * 0.6, h * 0.05, w * 0.95, h * 0.5), fill=(240, 240, 240))
    return img


def uri(img: Image.Image, fmt: str = "PNG", **save: object) -> str:
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def flip(value: str, phash_bits: int = 0, colour_bits: int = 0) -> str:
    """The hash with its lowest ``phash_bits`` / ``colour_bits`` bits flipped."""
    phash, colour = value.split(":")
    p = int(phash, 16) ^ ((1 << phash_bits) - 1)
    c = int(colour, 16) ^ ((1 << colour_bits) - 1)
    return f"{p:0{len(phash)}x}:{c:0{len(colour)}x}"


RED = image_hash(uri(scene()))
OTHER = image_hash(uri(other_scene()))

# -- hashing --------------------------------------------------------------------------


def test_the_same_picture_re_encoded_resized_cropped_or_brightened_is_near() -> None:
    assert RED.count(":") == 1 and len(RED.split(":")[0]) == 16
    jpeg = image_hash(uri(scene(), "JPEG", quality=85))
    resized = image_hash(uri(scene().resize((288, 216)), "JPEG", quality=85))  # 90%
    brighter = image_hash(uri(Image.eval(scene(), lambda v: min(255, v + 10))))
    cropped = image_hash(uri(scene().crop((6, 5, 316, 236))))
    for copy in (jpeg, resized, brighter, cropped):
        assert near(RED, copy) and near(copy, RED), hash_distance(RED, copy)
    # other modes are hashed as RGB; a transparent PNG like its copy flattened on white
    assert near(RED, image_hash(uri(scene().convert("P", palette=Image.Palette.ADAPTIVE))))
    assert near(RED, image_hash(uri(scene().convert("RGBA"))))
    grey = scene().convert("L")
    assert near(image_hash(uri(grey)), image_hash(uri(grey.convert("RGB"), "JPEG", quality=85)))
    hole = scene().convert("RGBA")
    ImageDraw.Draw(hole).rectangle((0, 0, 60, 40), fill=(0, 0, 0, 0))  # transparent black: shown white
    on_white = scene()
    ImageDraw.Draw(on_white).rectangle((0, 0, 60, 40), fill=(255, 255, 255))
    assert image_hash(uri(hole)) == image_hash(uri(on_white))


def test_a_different_picture_or_the_same_shapes_in_another_colour_are_not_near() -> None:
    assert not near(RED, OTHER)
    assert hash_distance(RED, OTHER)[0] > PHASH_NEAR
    blue = image_hash(uri(scene((40, 90, 230))))
    phash, colour = hash_distance(RED, blue)
    assert phash <= PHASH_NEAR  # pHash alone sees one picture ...
    assert colour > COLOUR_NEAR and not near(RED, blue)  # ... the colour hash keeps them apart
    assert not near(RED, image_hash(uri(scene((40, 160, 40)))))


def test_the_thresholds_and_unreadable_hashes() -> None:
    assert hash_distance(RED, flip(RED, 3, 2)) == (3, 2)
    assert near(RED, flip(RED, PHASH_NEAR, COLOUR_NEAR))
    assert not near(RED, flip(RED, PHASH_NEAR + 1, 0))
    assert not near(RED, flip(RED, 0, COLOUR_NEAR + 1))
    for bad in ("", "nonsense", "zz:zz", RED.split(":")[0], "ab:" + RED.split(":")[1], RED + "0", RED.split(":")[0] + ":"):
        assert not near(RED, bad) and not near(bad, RED), bad
    with pytest.raises(ValueError):
        hash_distance(RED, "nonsense")
    for bad in ("hello", "data:text/plain;base64,aGk=", "data:image/png;base64,bm90IGFuIGltYWdl", "data:image/png;base64,%%%"):
        with pytest.raises(ValueError):
            image_hash(bad)


def test_a_decision_s_day_is_utc() -> None:
    at = 1796256000.0  # 2026-12-03 00:00 UTC
    assert Decision("cats", "fine", MOD, at + 3600, 1, 2).day == "2026-12-03"
    assert Decision("cats", "fine", MOD, at - 1, 1, 2).day == "2026-12-02"


def test_a_rule_record_s_open_alerts_and_wrong_share() -> None:
    assert RuleRecord("cats").wrong_share is None and RuleRecord("cats").open == 0
    record = RuleRecord("cats", checks=20, alerts=6, fine=1, deleted=2, confirmed=1)
    assert record.open == 2 and record.wrong_share == 0.25
    assert RuleRecord("cats", alerts=1, fine=2).open == 0  # never below 0


# -- the store ------------------------------------------------------------------------


@pytest.fixture(params=["file", "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RecordStore]:
    s = RecordStore(tmp_path / "state.sqlite3" if request.param == "file" else None)
    await s.open()
    yield s
    await s.close()


_next_id = iter(range(10_000, 1_000_000))


async def alert(
    store: RecordStore, rule: str, *, guild: int = G1, hashed: str | None = RED, poster: int | None = 300, message: int | None = None,
    alert_id: int | None = None, trial: bool = False, remembered: bool = False, created: float | None = None,
) -> int:
    alert_id = alert_id if alert_id is not None else next(_next_id)
    await store.add_alert(
        guild, rule, alert_id=alert_id, message_id=message if message is not None else alert_id + 1, channel_id=77,
        poster_id=poster, image_hash=hashed, trial=trial, remembered=remembered, created=created,
    )
    return alert_id


async def test_checks_and_alerts_are_counted_per_guild_and_rule(store: RecordStore) -> None:
    await store.count_checks(G1, {"Cats": 1, "knives": 1})
    await store.count_checks(G1, {"cats": 1, "dogs": 0})
    await store.count_checks(G2, {"cats": 5})
    await store.count_checks(G1, {})
    await alert(store, "cats")
    await alert(store, "CATS", trial=True)
    await alert(store, "cats", remembered=True)
    await alert(store, "spiders")  # alerted, never counted as checked
    first = await alert(store, "cats", guild=G2)
    await store.add_alert(G2, "cats", alert_id=first, message_id=1, channel_id=1, poster_id=1, image_hash=None, trial=False)
    assert await store.records(G1) == {
        "Cats": RuleRecord("Cats", checks=2, alerts=3, remembered=1),
        "knives": RuleRecord("knives", checks=1),
        "spiders": RuleRecord("spiders", alerts=1),
    }
    assert await store.records(G2) == {"cats": RuleRecord("cats", checks=5, alerts=1)}  # an alert id is recorded once
    assert await store.records(999) == {}


async def test_the_first_review_stands_and_fates_are_counted(store: RecordStore) -> None:
    a, b, c, d = [await alert(store, "cats", created=100.0) for _ in range(4)]
    row = await store.review(a, "fine", MOD, at=200.0)
    assert row == AlertRow(G1, "cats", a, a + 1, 77, 300, RED, False, 100.0, "fine", MOD, 200.0)
    assert await store.review(a, "deleted", MOD2) is None  # the first decision stands
    assert await store.alert_row(a) == row
    assert (await store.review(b, "deleted", MOD2)).fate == "deleted"  # type: ignore[union-attr]
    assert (await store.review(c, "confirmed", MOD)).by_user == MOD  # type: ignore[union-attr]
    assert await store.review(123, "fine", MOD) is None  # posted before records existed
    assert await store.alert_row(123) is None
    with pytest.raises(ValueError):
        await store.review(d, "maybe", MOD)  # type: ignore[arg-type]
    record = (await store.records(G1))["cats"]
    assert (record.alerts, record.fine, record.deleted, record.confirmed, record.open) == (4, 1, 1, 1, 1)
    assert record.wrong_share == pytest.approx(1 / 3)
    untouched = await store.alert_row(d)
    assert untouched is not None and (untouched.fate, untouched.by_user, untouched.decided_at) == (None, None, None)


async def test_recall_finds_the_latest_fine_or_deleted_decision_about_a_near_image(store: RecordStore) -> None:
    a = await alert(store, "Cats")
    await store.review(a, "fine", MOD, at=1000.0)
    b = await alert(store, "knives", hashed=flip(RED, 2, 1))
    await store.review(b, "deleted", MOD2, at=1100.0)
    c = await alert(store, "spiders")
    await store.review(c, "confirmed", MOD, at=1200.0)  # not a decision about the image
    await alert(store, "dogs")  # never reviewed
    e = await alert(store, "cats", hashed=OTHER)
    await store.review(e, "deleted", MOD, at=1300.0)  # another picture
    f = await alert(store, "cats", guild=G2)
    await store.review(f, "deleted", MOD, at=1400.0)  # another server
    assert await store.recall(G1, image_hash(uri(scene(), "JPEG", quality=85))) == {
        "Cats": Decision("Cats", "fine", MOD, 1000.0, a + 1, a),
        "knives": Decision("knives", "deleted", MOD2, 1100.0, b + 1, b),
    }
    assert await store.recall(G1, OTHER) == {"cats": Decision("cats", "deleted", MOD, 1300.0, e + 1, e)}
    assert await store.recall(G2, RED) == {"cats": Decision("cats", "deleted", MOD, 1400.0, f + 1, f)}
    assert await store.recall(G1, flip(RED, PHASH_NEAR + 4)) == {}  # 8 bits from knives' image, 10 from the cats one
    assert await store.recall(G1, image_hash(uri(scene((40, 90, 230))))) == {}  # same shapes, blue
    # only the rules asked about, any case, keyed as asked
    assert await store.recall(G1, RED, ["CATS", "spiders", "dogs"]) == {"CATS": Decision("CATS", "fine", MOD, 1000.0, a + 1, a)}
    assert await store.recall(G1, RED, []) == {}
    # the latest decision wins, whatever the order the alerts came in
    g = await alert(store, "cats", hashed=flip(RED, 1))
    await store.review(g, "deleted", MOD2, at=2000.0)
    h = await alert(store, "cats")
    await store.review(h, "fine", MOD, at=1500.0)
    assert (await store.recall(G1, RED, ["cats"]))["cats"] == Decision("cats", "deleted", MOD2, 2000.0, g + 1, g)


async def test_forgetting_a_member_or_old_rows_drops_the_image_but_keeps_counts(store: RecordStore) -> None:
    now = time.time()
    mine = [await alert(store, "cats", poster=300, created=now) for _ in range(2)]
    theirs = await alert(store, "cats", poster=400, message=9000, created=now)
    old = await alert(store, "cats", poster=500, created=now - 40 * DAY)
    elsewhere = await alert(store, "cats", guild=G2, poster=300, created=now)
    for i, alert_id in enumerate([*mine, theirs, old, elsewhere]):
        await store.review(alert_id, "fine", MOD, at=now + i)
    assert set(await store.recall(G1, RED)) == {"cats"}

    assert await store.forget_member(G1, 300) == 2
    assert await store.forget_member(G1, 300) == 0
    row = await store.alert_row(mine[0])
    assert row is not None and (row.poster_id, row.image_hash, row.fate) == (None, None, "fine")
    assert (await store.recall(G1, RED))["cats"].alert_id == old  # the latest decision left
    assert await store.purge(now - 30 * DAY) == 1 and await store.purge(now - 30 * DAY) == 0
    assert (await store.recall(G1, RED))["cats"].alert_id == theirs  # a deleted message's picture is still known
    assert await store.forget_member(G1, 400) == 1
    assert await store.recall(G1, RED) == {}
    assert (await store.records(G1))["cats"] == RuleRecord("cats", alerts=4, fine=4)  # the counts stay
    assert (await store.alert_row(elsewhere)).poster_id == 300  # type: ignore[union-attr]  # another server's member
    assert set(await store.recall(G2, RED)) == {"cats"}


async def test_forgetting_a_rule_drops_its_record_in_one_server(store: RecordStore) -> None:
    await store.count_checks(G1, {"Cats": 3, "dogs": 2})
    await store.count_checks(G2, {"cats": 1})
    a = await alert(store, "cats")
    await store.review(a, "deleted", MOD)
    await alert(store, "dogs")
    await alert(store, "cats", guild=G2)
    await store.forget_rule(G1, "CATS")
    assert await store.records(G1) == {"dogs": RuleRecord("dogs", checks=2, alerts=1)}
    assert await store.recall(G1, RED) == {} and await store.alert_row(a) is None
    assert await store.records(G2) == {"cats": RuleRecord("cats", checks=1, alerts=1)}


async def test_the_store_needs_open_and_reopening_the_file_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    store = RecordStore(path)
    with pytest.raises(RuntimeError, match="open"):
        await store.records(G1)
    await store.open()
    await store.count_checks(G1, {"cats": 2})
    a = await alert(store, "cats", created=50.0)
    await store.review(a, "deleted", MOD, at=60.0)
    before = (await store.records(G1), await store.recall(G1, RED), await store.alert_row(a))
    await store.close()
    await store.close()  # twice is fine

    again = RecordStore(path)
    await again.open()
    assert (await again.records(G1), await again.recall(G1, RED), await again.alert_row(a)) == before
    assert before[0] == {"cats": RuleRecord("cats", checks=2, alerts=1, deleted=1)}
    await again.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM rec_schema").fetchall() == [(SCHEMA_VERSION,)]

    memory = RecordStore(None)  # nothing kept between stores without a file
    await memory.open()
    assert await memory.records(G1) == {}
    await memory.close()


@pytest.mark.parametrize("version_table", [False, True])
async def test_a_fresh_file_is_migrated_from_version_0(tmp_path: Path, version_table: bool) -> None:
    path = tmp_path / "state.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY)")  # another store's table, untouched
        if version_table:
            db.execute("CREATE TABLE rec_schema (version INTEGER NOT NULL)")
            db.execute("INSERT INTO rec_schema VALUES (0)")
    db.close()
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn) == 0
    assert migrate(conn) == SCHEMA_VERSION  # nothing to do the second time
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"rec_alerts", "rec_checks", "rec_schema", "jobs"} <= tables
    conn.close()
    store = RecordStore(path)
    await store.open()
    await store.count_checks(G1, {"cats": 1})
    assert await store.records(G1) == {"cats": RuleRecord("cats", checks=1)}
    await store.close()


async def test_a_file_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE rec_schema (version INTEGER NOT NULL)")
        db.execute("INSERT INTO rec_schema VALUES (?)", (SCHEMA_VERSION + 1,))
    db.close()
    store = RecordStore(path)
    with pytest.raises(RuntimeError, match="newer"):
        await store.open()
    await store.close()
