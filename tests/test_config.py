"""Settings: TOML file, env overrides, CLI overrides, and one-line errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from bot.config import ConfigError, Settings, load_settings

ROOT = Path(__file__).parents[1]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    import os

    for key in list(os.environ):
        if key.startswith("LLAVA_BOT_") and key != "LLAVA_BOT_CACHE_DIR":
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no config/bot.toml here unless a test writes one


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bot.toml"
    path.write_text(text)
    return path


def test_defaults_are_the_documented_contract() -> None:
    s = load_settings()
    assert s.model.path is None and s.model.chat_format == "auto"
    assert (s.model.n_gpu_layers, s.model.n_ctx) == (-1, 4096)
    assert s.generation.max_tokens <= s.generation.max_tokens_limit
    assert s.queue.max_size >= 1 and s.queue.per_user >= 1


def test_file_then_env_then_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "[generation]\nmax_tokens = 100\ntemperature = 0.5\n[queue]\nper_user = 3\n")
    assert load_settings(path).generation.max_tokens == 100
    monkeypatch.setenv("LLAVA_BOT_GENERATION__MAX_TOKENS", "77")
    s = load_settings(path)
    assert (s.generation.max_tokens, s.generation.temperature, s.queue.per_user) == (77, 0.5, 3)
    s = load_settings(path, overrides={"generation": {"max_tokens": 5}})
    assert (s.generation.max_tokens, s.generation.temperature) == (5, 0.5)


def test_config_bot_toml_is_read_by_default(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "bot.toml").write_text("[queue]\nmax_size = 3\n")
    assert load_settings().queue.max_size == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[modle]\npath = 'x'\n", "config error: unknown setting modle"),
        ("[model]\nn_ctx = 'big'\n", "config error: model.n_ctx: Input should be a valid integer"),
        ("[model]\nn_ctx = 1000\n", "config error: model.n_ctx: must be a multiple of 256 (got 1000)"),
        ("[model]\nchat_format = 'llava-9'\n", "config error: model.chat_format: Input should be"),
        ("[model]\npath = '/no/such/model.gguf'\nmmproj = '/no/such/mmproj.gguf'\n", "config error: model.path: file not found: /no/such/model.gguf"),
        ("[generation]\nmax_tokens = 5000\n", "config error: generation.max_tokens (5000) is above generation.max_tokens_limit (1024)"),
        ("[queue]\nper_user = 0\n", "config error: queue.per_user: Input should be greater than or equal to 1"),
        ("[images\n", "is not valid TOML"),
    ],
)
def test_bad_settings_give_one_line_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_model_path_needs_its_mmproj(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    with pytest.raises(ConfigError, match="model.mmproj is not set"):
        load_settings(overrides={"model": {"path": str(model)}})


def test_unknown_env_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAVA_BOT_MODEL__NCTX", "8192")
    with pytest.raises(ConfigError, match=r"unknown setting model.nctx \(from environment variable LLAVA_BOT_MODEL__NCTX\)"):
        load_settings()


def test_bad_env_value_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAVA_BOT_QUEUE__MAX_SIZE", "lots")
    with pytest.raises(ConfigError, match=r"queue.max_size: .* \(got 'lots'\)"):
        load_settings()


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="config file not found: nope.toml"):
        load_settings("nope.toml")


def test_max_tokens_clamp() -> None:
    gen = load_settings().generation
    assert gen.clamp(None) == gen.max_tokens
    assert gen.clamp(10) == 10
    assert gen.clamp(10**6) == gen.max_tokens_limit
    assert gen.clamp(0) == 1


def _paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += _paths(ann, f"{prefix}{name}.")
        else:
            out.append(f"{prefix}{name}")
    return out


def test_example_toml_loads_and_documents_every_setting() -> None:
    example = ROOT / "config" / "example.toml"
    load_settings(example)
    text = example.read_text()
    sections = {m.group(1): m.start() for m in re.finditer(r"^\[(\w+)\]", text, re.M)}
    assert "DISCORD_TOKEN" in text  # the token is documented, but never set in a file
    for path in _paths(Settings):
        if path in ("discord.token", "web.token"):  # environment only: described, never set
            continue
        section, _, key = path.rpartition(".")
        start = sections.get(section, 0) if section else 0
        assert re.search(rf"^#? ?{key} = ", text[start:], re.M), f"{path} is not in config/example.toml"


def test_web_token_comes_from_the_environment_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="web.token must not be in a file; set the LLAVA_BOT_WEB__TOKEN"):
        load_settings(write(tmp_path, "[web]\ntoken = 'abc'\n"))
    monkeypatch.setenv("LLAVA_BOT_WEB__TOKEN", "web-secret-value")
    s = load_settings(write(tmp_path, "[web]\nhost = '0.0.0.0'\n"), overrides={"web": {"port": 9000}})
    assert s.web.token is not None and s.web.token.get_secret_value() == "web-secret-value"
    assert (s.web.host, s.web.port) == ("0.0.0.0", 9000)  # file, env and flags merge
    assert "web-secret-value" not in repr(s)
    monkeypatch.setenv("LLAVA_BOT_WEB__TOKEN", "  ")
    assert load_settings().web.token is None  # an empty token is no token


def test_token_comes_from_the_environment_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="discord.token must not be in a file; set the DISCORD_TOKEN"):
        load_settings(write(tmp_path, "[discord]\ntoken = 'abc'\n"))
    monkeypatch.setenv("DISCORD_TOKEN", "secret-token-value")
    s = load_settings()
    assert s.discord.token is not None and s.discord.token.get_secret_value() == "secret-token-value"
    assert "secret-token-value" not in repr(s) and "secret-token-value" not in str(s.model_dump())
    monkeypatch.setenv("LLAVA_BOT_DISCORD__TOKEN", "other")
    assert load_settings().discord.token.get_secret_value() == "other"
