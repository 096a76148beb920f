"""``llava-bot fetch-model``: plans, dry run, settings file, and failures without a network.

Nothing here reaches the network.  The download tests use the real
huggingface_hub: in offline mode (HF_HUB_OFFLINE) or pointed at a closed
local port (HF_ENDPOINT), so the library fails the way it does for a user
without a connection.  Only the plan test replaces ``hf_hub_download``, to
record which files would be asked for.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from bot.fetch_model import (
    DEFAULT_MODEL,
    KNOWN_MODELS,
    FetchError,
    add_arguments,
    cmd_fetch_model,
    docker_env,
    human_size,
    plan,
)

ROOT = Path(__file__).resolve().parents[1]

# Written out again on purpose: a change to the table must show up here.
EXPECTED = {
    "llava-1.5-7b": ("mys/ggml_llava-v1.5-7b", "ggml-model-q4_k.gguf", "mmproj-model-f16.gguf", "llava-1-5", 4096),
    "llava-1.5-13b": ("mys/ggml_llava-v1.5-13b", "ggml-model-q4_k.gguf", "mmproj-model-f16.gguf", "llava-1-5", 4096),
    "llava-1.6-mistral-7b": (
        "cjpais/llava-1.6-mistral-7b-gguf",
        "llava-v1.6-mistral-7b.Q4_K_M.gguf",
        "mmproj-model-f16.gguf",
        "llava-1-6",
        8192,
    ),
    "gemma-3-4b": (
        "ggml-org/gemma-3-4b-it-GGUF",
        "gemma-3-4b-it-Q4_K_M.gguf",
        "mmproj-model-f16.gguf",
        "auto",
        8192,
    ),
    "qwen2.5-vl-3b": (
        "ggml-org/Qwen2.5-VL-3B-Instruct-GGUF",
        "Qwen2.5-VL-3B-Instruct-Q4_K_M.gguf",
        "mmproj-Qwen2.5-VL-3B-Instruct-f16.gguf",
        "auto",
        8192,
    ),
    "qwen2.5-vl-7b": (
        "ggml-org/Qwen2.5-VL-7B-Instruct-GGUF",
        "Qwen2.5-VL-7B-Instruct-Q4_K_M.gguf",
        "mmproj-Qwen2.5-VL-7B-Instruct-f16.gguf",
        "auto",
        8192,
    ),
    "smolvlm2-2.2b": (
        "ggml-org/SmolVLM2-2.2B-Instruct-GGUF",
        "SmolVLM2-2.2B-Instruct-Q4_K_M.gguf",
        "mmproj-SmolVLM2-2.2B-Instruct-f16.gguf",
        "auto",
        4096,
    ),
    "minicpm-v-2.6": ("openbmb/MiniCPM-V-2_6-gguf", "ggml-model-Q4_K_M.gguf", "mmproj-model-f16.gguf", "auto", 4096),
}
# The LLaVA pairs' files carry no chat template: they keep a named format.
LLAVA = {"llava-1.5-7b", "llava-1.5-13b", "llava-1.6-mistral-7b"}


def args(**kw: object) -> argparse.Namespace:
    base = {"name": None, "dir": "models", "dry_run": False, "list": False, "config": "config/bot.toml"}
    base.update(kw)
    return argparse.Namespace(**base)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub's own offline mode: every request it makes fails at once."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # The library reads the variable when it is first imported; set its switch too.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_known_models_are_the_expected_ones() -> None:
    assert set(KNOWN_MODELS) == set(EXPECTED)
    assert DEFAULT_MODEL == "llava-1.5-7b"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_plan_for_each_known_model(name: str, tmp_path: Path) -> None:
    repo, text, mmproj, chat_format, n_ctx = EXPECTED[name]
    p = plan(name, tmp_path)
    assert p.name == name
    assert p.repo_id == repo
    assert p.chat_format == chat_format
    # Each model in its own folder: the repositories reuse the same file names.
    assert p.files == ((text, tmp_path / name / text), (mmproj, tmp_path / name / mmproj))
    assert p.model_path == tmp_path / name / text and p.mmproj_path == tmp_path / name / mmproj
    assert all(size > 100_000_000 for size in p.sizes) and len(p.sizes) == 2
    settings = tomllib.loads(p.settings_toml)
    assert settings == {
        "model": {
            "path": str(tmp_path / name / text),
            "mmproj": str(tmp_path / name / mmproj),
            "chat_format": chat_format,
            "n_gpu_layers": -1,
            "n_ctx": n_ctx,
        }
    }


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_known_model_table_entry(name: str) -> None:
    m = KNOWN_MODELS[name]
    assert m.name == name
    assert m.text_file.endswith(".gguf") and m.mmproj_file.endswith(".gguf")
    assert m.text_file != m.mmproj_file and "mmproj" in m.mmproj_file and "mmproj" not in m.text_file
    assert m.text_bytes > m.mmproj_bytes > 100_000_000 and m.total_bytes == m.text_bytes + m.mmproj_bytes
    # Everything must fit on the GPU together: the estimate is above the download.
    assert m.gpu_gb * 1e9 > m.total_bytes
    assert m.speed in ("fastest", "fast", "medium", "slow")
    assert m.good_at and m.description and "\n" not in m.good_at + m.description
    assert m.n_ctx % 256 == 0 and m.n_ctx >= 4096
    assert (m.chat_format == "auto") == (name not in LLAVA)
    # llama-server: the GGUF's own template, or a built-in one where the file has none.
    assert (m.server_template is None) == (m.chat_format == "auto")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_settings_snippet_loads_as_the_bots_settings(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The written [model] table is valid for the bot itself (chat_format "auto" included)."""
    from bot.config import load_settings

    for key in list(os.environ):
        if key.startswith("LLAVA_BOT_"):
            monkeypatch.delenv(key)
    p = plan(name, tmp_path)
    for _, local in p.files:
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(b"GGUF")
    config = tmp_path / "bot.toml"
    config.write_text(p.settings_toml)
    model = load_settings(config).model
    *_, chat_format, n_ctx = EXPECTED[name]
    assert (model.path, model.mmproj) == (p.model_path, p.mmproj_path)
    assert (model.chat_format, model.n_ctx, model.n_gpu_layers) == (chat_format, n_ctx, -1)


def test_list_shows_every_model_with_its_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_fetch_model(args(list=True)) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["name", "download", "GPU", "speed"]
    for name, m in KNOWN_MODELS.items():
        (row,) = [line for line in lines if line.split()[0] == name]
        assert human_size(m.total_bytes) in row and f"~{m.gpu_gb:g} GB" in row and m.good_at in row
    assert "llava-1.5-7b (default)" in out
    assert "4.70 GB" in out and "3.34 GB" in out  # llava-1.5-7b, gemma-3-4b


def test_list_through_the_cli(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "fetch-model", "--list"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert all(name in proc.stdout for name in EXPECTED)
    assert not (tmp_path / "models").exists() and not (tmp_path / "config").exists()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_docker_env_matches_the_plan(name: str) -> None:
    m = KNOWN_MODELS[name]
    env = dict(line.split("=", 1) for line in docker_env(m).splitlines() if line and not line.startswith("#"))
    fetched = plan(name, "/models")
    assert env["LLAVA_BOT_MODEL__PATH"] == env["LLAMA_ARG_MODEL"] == str(fetched.model_path)
    assert env["LLAVA_BOT_MODEL__MMPROJ"] == env["LLAMA_ARG_MMPROJ"] == str(fetched.mmproj_path)
    assert env["LLAVA_BOT_MODEL__CHAT_FORMAT"] == m.chat_format
    assert env["LLAVA_BOT_MODEL__N_CTX"] == env["LLAMA_ARG_CTX_SIZE"] == str(m.n_ctx)
    if m.server_template is None:
        assert env["LLAMA_ARG_JINJA"] == "1" and "LLAMA_ARG_CHAT_TEMPLATE" not in env
    else:
        assert env["LLAMA_ARG_JINJA"] == "0" and env["LLAMA_ARG_CHAT_TEMPLATE"] == m.server_template


def test_plan_default_name_and_folder() -> None:
    p = plan(None)
    assert p.name == "llava-1.5-7b"
    assert p.model_path == Path("models/llava-1.5-7b/ggml-model-q4_k.gguf")


def test_plan_is_frozen() -> None:
    p = plan(None)
    with pytest.raises(AttributeError):
        p.name = "other"  # type: ignore[misc]


def test_unknown_name_lists_the_known_ones(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(FetchError) as info:
        plan("llava-9", tmp_path)
    message = str(info.value)
    assert "'llava-9'" in message and "\n" not in message
    for name in EXPECTED:
        assert name in message

    assert cmd_fetch_model(args(name="llava-9", dir=str(tmp_path), config=str(tmp_path / "bot.toml"))) == 2
    out, err = capsys.readouterr()
    assert err.splitlines() == [f"llava-bot: {message}"]
    assert not (tmp_path / "bot.toml").exists()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fetch_asks_huggingface_hub_for_the_two_files(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import huggingface_hub

    calls: list[dict[str, object]] = []

    def record(**kw: object) -> str:
        calls.append(kw)
        return str(Path(str(kw["local_dir"])) / str(kw["filename"]))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", record)
    config = tmp_path / "config" / "bot.toml"
    assert cmd_fetch_model(args(name=name, dir=str(tmp_path / "m"), config=str(config))) == 0

    repo, text, mmproj, _, _ = EXPECTED[name]
    folder = tmp_path / "m" / name
    assert [(c["repo_id"], c["filename"], Path(str(c["local_dir"]))) for c in calls] == [
        (repo, text, folder),
        (repo, mmproj, folder),
    ]
    out, err = capsys.readouterr()
    assert err == ""
    assert out.splitlines()[-3:] == [f"model:  {folder / text}", f"mmproj: {folder / mmproj}", "Next: llava-bot doctor"]
    assert tomllib.loads(config.read_text())["model"]["path"] == str(folder / text)


def test_dry_run_prints_the_plan_and_downloads_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import huggingface_hub

    calls: list[object] = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda **kw: calls.append(kw))
    config = tmp_path / "bot.toml"
    rc = cmd_fetch_model(args(name="llava-1.6-mistral-7b", dir=str(tmp_path / "m"), dry_run=True, config=str(config)))
    assert rc == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert calls == []
    assert not (tmp_path / "m").exists() and not config.exists()
    folder = tmp_path / "m" / "llava-1.6-mistral-7b"
    assert "cjpais/llava-1.6-mistral-7b-gguf" in out
    assert f"-> {folder / 'llava-v1.6-mistral-7b.Q4_K_M.gguf'}" in out
    assert f"-> {folder / 'mmproj-model-f16.gguf'}" in out
    assert "4.37 GB" in out and "624 MB" in out
    assert plan("llava-1.6-mistral-7b", tmp_path / "m").settings_toml in out
    assert "nothing downloaded" in out


def test_no_network_is_one_line_and_exit_2(offline: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bot.toml"
    assert cmd_fetch_model(args(dir=str(tmp_path / "m"), config=str(config))) == 2
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        "llava-bot: cannot download mys/ggml_llava-v1.5-7b/ggml-model-q4_k.gguf: "
        "offline mode is on (HF_HUB_OFFLINE=1); unset HF_HUB_OFFLINE to download"
    ]
    assert not config.exists()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_no_network_in_a_real_process(tmp_path: Path) -> None:
    """The real library against a port nobody listens on: it retries (about 25 s), then one line."""
    port = _closed_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(
        HF_ENDPOINT=f"http://127.0.0.1:{port}",
        HF_HOME=str(tmp_path / "hf-home"),
        PYTHONPATH=str(ROOT),
    )
    dest = tmp_path / "m"
    code = f"import sys; from bot.fetch_model import main; sys.exit(main(['--dir', {str(dest)!r}]))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        "llava-bot: cannot download mys/ggml_llava-v1.5-7b/ggml-model-q4_k.gguf: "
        f"no network connection to 127.0.0.1:{port} ([Errno 111] Connection refused)"
    ]
    assert "Traceback" not in proc.stdout
    assert not (tmp_path / "config" / "bot.toml").exists()


def _present(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True)
    for n in names:
        (folder / n).write_bytes(b"GGUF already here")


def test_config_written_when_absent(
    offline: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Files already in the folder (huggingface_hub keeps them when the Hub is out of reach): settings written."""
    from bot.config import load_settings

    monkeypatch.chdir(tmp_path)
    _present(tmp_path / "models" / "llava-1.5-7b", "ggml-model-q4_k.gguf", "mmproj-model-f16.gguf")
    assert cmd_fetch_model(args()) == 0
    out, err = capsys.readouterr()
    assert err == ""
    config = tmp_path / "config" / "bot.toml"
    text = config.read_text()
    assert text.startswith("# llava-bot settings, written by `llava-bot fetch-model llava-1.5-7b`")
    assert plan(None).settings_toml in text
    assert f"Wrote the [model] settings to {Path('config/bot.toml')}" in out
    # The written file is valid for the bot itself (relative paths, from the working directory).
    settings = load_settings(config)
    assert settings.model.path == Path("models/llava-1.5-7b/ggml-model-q4_k.gguf")
    assert settings.model.mmproj == Path("models/llava-1.5-7b/mmproj-model-f16.gguf")
    assert settings.model.chat_format == "llava-1-5" and settings.model.n_ctx == 4096


def test_existing_config_is_left_alone(offline: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "m" / "llava-1.6-mistral-7b"
    _present(folder, "llava-v1.6-mistral-7b.Q4_K_M.gguf", "mmproj-model-f16.gguf")
    config = tmp_path / "bot.toml"
    config.write_text("# mine\n[model]\nn_ctx = 2048\n")
    before = config.stat().st_mtime_ns
    rc = cmd_fetch_model(args(name="llava-1.6-mistral-7b", dir=str(tmp_path / "m"), config=str(config)))
    assert rc == 0
    assert config.read_text() == "# mine\n[model]\nn_ctx = 2048\n" and config.stat().st_mtime_ns == before
    out, _ = capsys.readouterr()
    assert f"{config} exists and was left alone" in out
    assert plan("llava-1.6-mistral-7b", tmp_path / "m").settings_toml in out
    assert out.splitlines()[-3:-1] == [
        f"model:  {folder / 'llava-v1.6-mistral-7b.Q4_K_M.gguf'}",
        f"mmproj: {folder / 'mmproj-model-f16.gguf'}",
    ]


def test_add_arguments_defaults_and_options() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    a = parser.parse_args([])
    assert (a.name, a.dir, a.dry_run, a.list) == ("llava-1.5-7b", "models", False, False)
    a = parser.parse_args(["llava-1.6-mistral-7b", "--dir", "/srv/models", "--dry-run"])
    assert (a.name, a.dir, a.dry_run) == ("llava-1.6-mistral-7b", "/srv/models", True)
    assert parser.parse_args(["--list"]).list is True
