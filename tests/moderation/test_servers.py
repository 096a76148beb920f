"""Per-server moderation settings: the store (real SQLite files), effective(), TOML, diff."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bot.config import GenerationSettings, ModerationRule, ModerationSettings
from bot.moderation.servers import (
    MIGRATIONS,
    NO_LOG,
    SCHEMA_VERSION,
    ServerRule,
    ServerSettings,
    ServerStore,
    diff,
    effective,
    effective_allowed_roles,
    export_toml,
    parse_toml,
)

G1, G2 = 1001, 1002


async def opened(path: Path | None) -> ServerStore:
    store = ServerStore(path)
    await store.open()
    return store


@pytest.mark.parametrize("in_file", [True, False])
async def test_channels_and_roles_set_and_unset_per_guild(tmp_path: Path, in_file: bool) -> None:
    store = await opened(tmp_path / "state.sqlite3" if in_file else None)
    assert await store.get(G1) == ServerSettings() and store.cached(G1) is None
    await store.set_channel(G1, "watch", 10, True)
    await store.set_channel(G1, "watch", 11, True)
    await store.set_channel(G1, "watch", 10, True)  # twice: once
    await store.set_channel(G1, "captions", 12, True)
    await store.set_channel(G1, "log", 20, True)
    await store.set_channel(G1, "log", 21, True)  # replaces the first
    await store.set_role(G1, "moderator", 30, True)
    await store.set_role(G1, "allowed", 31, True)
    await store.set_channel(G1, "watch", 10, False)
    got = await store.get(G1)
    assert got == ServerSettings(
        caption_channels=(12,), watch_channels=(11,), log_channel=21, moderator_roles=(30,), allowed_roles=(31,)
    )
    assert store.cached(G1) == got
    assert got.parts == {"captions", "watch", "log", "moderator", "allowed"}

    await store.set_channel(G1, "watch", 11, False)  # the last one: an empty own list, not the defaults
    await store.set_channel(G1, "log", 99, False)  # not the log channel: nothing changes
    await store.set_role(G1, "moderator", 30, False)
    got = await store.get(G1)
    assert got.watch_channels == () and got.log_channel == 21 and got.moderator_roles == ()
    await store.set_channel(G1, "log", 21, False)
    assert (await store.get(G1)).log_channel == NO_LOG
    await store.reset(G1, "watch")
    assert (await store.get(G1)).watch_channels is None

    assert await store.get(G2) == ServerSettings()  # another guild never sees any of it
    await store.set_channel(G2, "watch", 50, True)
    assert (await store.get(G2)).watch_channels == (50,) and (await store.get(G1)).watch_channels is None
    assert store.guilds() == [G1, G2]

    with pytest.raises(ValueError, match="channel kind"):
        await store.set_channel(G1, "nope", 1, True)
    with pytest.raises(ValueError, match="role kind"):
        await store.set_role(G1, "admin", 1, True)
    with pytest.raises(ValueError, match="channel"):
        await store.set_channel(G1, "watch", -5, True)
    await store.close()


async def test_rules_add_remove_trial_and_duplicates(tmp_path: Path) -> None:
    store = await opened(tmp_path / "state.sqlite3")
    await store.add_rule(G1, ServerRule("red-things", "Is there anything red?", alert_role=5, channel=10))
    await store.add_rule(G1, ServerRule("dogs", "Is there a dog?"))
    with pytest.raises(ValueError, match="already has a rule named 'red-things'"):
        await store.add_rule(G1, ServerRule("Red-Things", "Another question?"))
    with pytest.raises(ValueError, match=r"^rule\.name: "):
        await store.add_rule(G1, ServerRule("bad name!", "Is it bad?"))
    with pytest.raises(ValueError, match=r"^rule\.question: "):
        await store.add_rule(G1, ServerRule("short", "?"))
    await store.add_rule(G2, ServerRule("red-things", "Other guild, same name?"))  # names are per guild

    got = await store.get(G1)
    assert [r.name for r in got.rules or ()] == ["red-things", "dogs"]
    assert all(r.created > 0 for r in got.rules or ())
    assert await store.set_trial(G1, "RED-things", True)
    assert not await store.set_trial(G1, "missing", True)
    assert (await store.get(G1)).rule("red-things") == ServerRule("red-things", "Is there anything red?", 5, 10, trial=True)
    assert await store.remove_rule(G1, "dogs") and not await store.remove_rule(G1, "dogs")
    assert await store.remove_rule(G1, "red-things")
    assert (await store.get(G1)).rules == ()  # set, and empty: no rules here (not the defaults)
    assert [r.name for r in (await store.get(G2)).rules or ()] == ["red-things"]
    await store.close()


async def test_settings_survive_close_and_open(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    store = await opened(path)
    await store.set_channel(G1, "alt-text", 7, True)
    await store.set_channel(G1, "log", 8, True)
    await store.set_channel(G2, "log", 9, True)
    await store.set_channel(G2, "log", 9, False)
    await store.set_role(G1, "allowed", 3, True)
    await store.set_role(G1, "allowed", 3, False)
    await store.add_rule(G1, ServerRule("knives", "Is there a knife?", channel=7))
    await store.set_trial(G1, "knives", True)
    before = {G1: await store.get(G1), G2: await store.get(G2)}
    created = before[G1].rule("knives").created  # type: ignore[union-attr]
    await store.close()

    again = await opened(path)
    assert again.cached(G1) == before[G1] and again.cached(G2) == before[G2]  # loaded at open
    assert again.cached(G2).log_channel == NO_LOG  # type: ignore[union-attr]
    assert again.cached(G1).allowed_roles == ()  # type: ignore[union-attr]
    assert again.cached(G1).rule("knives").created == created  # type: ignore[union-attr]
    assert await again.get(G1) == before[G1]
    await again.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM srv_schema").fetchall() == [(SCHEMA_VERSION,)]


async def test_a_version_1_file_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE srv_schema (version INTEGER NOT NULL)")
    db.execute("INSERT INTO srv_schema VALUES (1)")
    for sql in MIGRATIONS[0]:
        db.execute(sql)
    db.execute("INSERT INTO srv_channels VALUES (?, 'watch', 10)", (G1,))
    db.execute("INSERT INTO srv_channels VALUES (?, 'log', 20)", (G1,))
    db.execute("INSERT INTO srv_channels VALUES (?, 'log', 21)", (G1,))  # version 1 let two in: the last stays
    db.execute("INSERT INTO srv_roles VALUES (?, 'moderator', 30)", (G2,))
    db.execute("INSERT INTO srv_rules VALUES (?, 'cats', 'Is there a cat?', NULL, NULL, 1.0)", (G2,))
    db.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY)")  # another store's table, untouched
    db.commit()
    db.close()

    store = await opened(path)
    assert store.cached(G1) == ServerSettings(watch_channels=(10,), log_channel=21)
    assert store.cached(G2) == ServerSettings(moderator_roles=(30,), rules=(ServerRule("cats", "Is there a cat?"),))
    await store.set_trial(G2, "cats", True)  # the new column works
    await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM srv_schema").fetchall() == [(SCHEMA_VERSION,)]
        assert db.execute("SELECT trial FROM srv_rules").fetchall() == [(1,)]
        with pytest.raises(sqlite3.IntegrityError):  # one log channel per guild, from now on
            db.execute("INSERT INTO srv_channels VALUES (?, 'log', 22)", (G1,))
    again = await opened(path)  # opening at the latest version changes nothing
    assert again.cached(G2).rule("cats").trial  # type: ignore[union-attr]
    await again.close()


async def test_a_file_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE srv_schema (version INTEGER NOT NULL)")
        db.execute("INSERT INTO srv_schema VALUES (?)", (SCHEMA_VERSION + 1,))
    store = ServerStore(path)
    with pytest.raises(RuntimeError, match="newer"):
        await store.open()
    await store.close()


def test_effective_replaces_only_what_the_server_set() -> None:
    defaults = ModerationSettings(
        caption_channels=[1],
        watch_channels=[2],
        alt_text_channels=[3],
        log_channel=4,
        moderator_roles=[5],
        rules=[ModerationRule(name="default-rule", question="Is it bad?")],
        rule_max_tokens=33,
        caption_prompt="custom",
    )
    assert effective(defaults, None) is defaults
    assert effective(defaults, ServerSettings()) is defaults

    server = ServerSettings(
        watch_channels=(20, 21),
        alt_text_channels=(),  # set, empty: none here
        log_channel=NO_LOG,
        rules=(ServerRule("red", "Anything red?", alert_role=9, channel=20, trial=True), ServerRule("dogs", "A dog?")),
    )
    got = effective(defaults, server)
    assert got.caption_channels == [1] and got.moderator_roles == [5]  # not set: the defaults
    assert got.watch_channels == [20, 21] and got.alt_text_channels == [] and got.log_channel is None
    assert got.rules == [
        ModerationRule(name="red", question="Anything red?", alert_role=9, channels=[20], trial=True),
        ModerationRule(name="dogs", question="A dog?"),
    ]
    assert got.rule_max_tokens == 33 and got.caption_prompt == "custom"  # the operator's other settings
    assert got.watched_channels == {1, 20, 21}
    assert defaults.watch_channels == [2]  # defaults untouched
    assert effective(defaults, ServerSettings(log_channel=8)).log_channel == 8
    assert effective(defaults, ServerSettings(rules=())).rules == []

    assert effective_allowed_roles([1, 2], None) == [1, 2]
    assert effective_allowed_roles([1, 2], ServerSettings(watch_channels=(3,))) == [1, 2]
    assert effective_allowed_roles([1, 2], ServerSettings(allowed_roles=(7,))) == [7]
    assert GenerationSettings().max_tokens_limit == 1024  # nothing here touches other sections


async def test_the_store_answers_effective_from_memory() -> None:
    store = await opened(None)
    defaults = ModerationSettings(watch_channels=[2])
    assert store.effective(defaults, G1) is defaults and store.effective(defaults, None) is defaults
    await store.set_channel(G1, "watch", 9, True)
    first = store.effective(defaults, G1)
    assert first.watch_channels == [9] and store.effective(defaults, G1) is first  # remembered
    await store.set_channel(G1, "watch", 10, True)
    assert store.effective(defaults, G1).watch_channels == [9, 10]  # a write forgets it
    other = ModerationSettings(watch_channels=[3], caption_channels=[4])
    assert store.effective(other, G1).caption_channels == [4]  # new defaults: computed again
    await store.close()


FULL = ServerSettings(
    caption_channels=(1, 2),
    watch_channels=(),
    alt_text_channels=(3,),
    log_channel=4,
    moderator_roles=(5,),
    allowed_roles=(),
    rules=(
        ServerRule("red-things", 'Is anything "red" \\ here?\n', alert_role=6, channel=1, trial=True),
        ServerRule("dog_rule", "Ist da ein Hund? 🐕"),
    ),
)


@pytest.mark.parametrize(
    "settings",
    [FULL, ServerSettings(), ServerSettings(rules=(), log_channel=NO_LOG), ServerSettings(watch_channels=(9,))],
)
def test_export_then_parse_gives_the_same_settings(settings: ServerSettings) -> None:
    text = export_toml(settings)
    assert parse_toml(text) == settings


def test_parse_accepts_a_moderation_table_and_drops_repeated_ids() -> None:
    got = parse_toml("[moderation]\nwatch_channels = [1, 1, 2]\n[[moderation.rules]]\nname = 'a'\nquestion = 'Is it?'\n")
    assert got == ServerSettings(watch_channels=(1, 2), rules=(ServerRule("a", "Is it?"),))


@pytest.mark.parametrize(
    "text, key",
    [
        ("watch_channel = [1]", "watch_channel: unknown key"),
        ("watch_channels = 5", "watch_channels: must be a list"),
        ("watch_channels = [1, 'x']", "watch_channels[1]: must be a Discord id"),
        ("moderator_roles = [true]", "moderator_roles[0]"),
        ("log_channel = -1", "log_channel: "),
        ("rules = 3", "rules: must be a list"),
        ("[[rules]]\nname = 'a'", "rules[0].question: must be a string (missing)"),
        ("[[rules]]\nname = 'a b'\nquestion = 'Is it?'", "rules[0].name: "),
        ("[[rules]]\nname = 'a'\nquestion = 'no'", "rules[0].question: "),
        ("[[rules]]\nname = 'a'\nquestion = 'Is it?'\ntrial = 'yes'", "rules[0].trial: must be true or false"),
        ("[[rules]]\nname = 'a'\nquestion = 'Is it?'\nchannels = [1]", "rules[0].channels: unknown key"),
        ("[[rules]]\nname = 'a'\nquestion = 'Is it?'\nalert_role = 0", "rules[0].alert_role: "),
        ("[[rules]]\nname = 'a'\nquestion = 'Is it?'\n[[rules]]\nname = 'A'\nquestion = 'Again?'", "rules[1].name: two rules"),
        ("watch_channels = [1", "not valid TOML"),
    ],
)
def test_parse_errors_are_one_line_naming_the_key(text: str, key: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_toml(text)
    message = str(info.value)
    assert message.startswith(key) and "\n" not in message


async def test_replace_imports_settings_and_keeps_rule_dates(tmp_path: Path) -> None:
    store = await opened(tmp_path / "state.sqlite3")
    await store.add_rule(G1, ServerRule("red-things", "Old question?"))
    await store.set_channel(G1, "watch", 77, True)
    created = store.cached(G1).rule("red-things").created  # type: ignore[union-attr]
    await store.replace(G1, FULL)
    got = await store.get(G1)
    assert got == FULL and got.rule("red-things").created == created  # type: ignore[union-attr]
    assert got.rule("dog_rule").created > 0  # type: ignore[union-attr]
    with pytest.raises(ValueError, match=r"^rules\[1\]\.name: two rules"):
        await store.replace(G1, ServerSettings(rules=(ServerRule("a", "Is it?"), ServerRule("A", "Is it?"))))
    await store.replace(G1, ServerSettings())
    assert await store.get(G1) == ServerSettings() and store.cached(G1) is None and store.guilds() == []
    await store.close()


def test_diff_lines() -> None:
    old = ServerSettings(
        watch_channels=(123, 124),
        log_channel=4,
        moderator_roles=(5,),
        rules=(ServerRule("red-things", "Red?", trial=True), ServerRule("dogs", "Dogs?", channel=1)),
    )
    new = ServerSettings(
        watch_channels=(124, 125),
        caption_channels=(7,),
        log_channel=NO_LOG,
        rules=(ServerRule("red-things", "Red?"), ServerRule("dogs", "Dogs?", alert_role=9), ServerRule("cats", "Cats?")),
    )
    assert diff(old, new) == [
        "~ captions channels: defaults -> this server's own",
        "+ captions channel <#7>",
        "- watch channel <#123>",
        "+ watch channel <#125>",
        "~ log channel: <#4> -> none",
        "~ moderator roles: this server's own -> defaults",
        "- moderator role <@&5>",
        "~ rule red-things: trial on -> off",
        "~ rule dogs: alert role none -> <@&9>",
        "~ rule dogs: channel <#1> -> all watched",
        "+ rule cats",
    ]
    assert diff(new, new) == []
    assert diff(ServerSettings(rules=(ServerRule("red-things", "Red?"),)), ServerSettings(rules=())) == ["- rule red-things"]
    assert diff(ServerSettings(), ServerSettings(log_channel=3)) == ["~ log channel: default -> <#3>"]
