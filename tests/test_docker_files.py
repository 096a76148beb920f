"""The Docker files, checked by reading them (Docker itself is not needed).

docker-compose.yml is parsed as YAML and its structure checked; the
Dockerfile is read instruction by instruction, and its pip commands are held
to what the README tells people to run.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import pytest
import yaml

from bot.fetch_model import DEFAULT_MODEL, KNOWN_MODELS, docker_env, plan

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
MODEL_ENVS = ROOT / "docker" / "models"
DOCKERFILE = ROOT / "Dockerfile"
README = ROOT / "README.md"

# A Discord bot token: three base64url parts separated by dots.
TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{23,28}\.[A-Za-z0-9_-]{6,7}\.[A-Za-z0-9_-]{27,}")
GPU = {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}


# -- helpers --------------------------------------------------------------------------


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) for each Dockerfile instruction, continuation lines joined."""
    out: list[tuple[str, str]] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):  # comment lines inside a continuation are dropped
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        word, _, rest = current.partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    return out


def stages(instrs: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instrs:
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def pip_installs(instrs: list[tuple[str, str]]) -> list[str]:
    """Every shell command in a RUN that is a `pip install`, with its env prefix (CMAKE_ARGS=...)."""
    commands = []
    for word, rest in instrs:
        if word != "RUN":
            continue
        for part in re.split(r"&&|;|\|\|", rest):
            if re.search(r"\bpip3? install\b", part):
                commands.append(" ".join(part.split()))
    return commands


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def default_of(value: str) -> str:
    """The default in a compose substitution: "${VAR:-default}" -> "default"; a plain value as is."""
    m = re.fullmatch(r"\$\{\w+:?-(.*)\}", value)
    return m.group(1) if m else value


def with_defaults(value: str) -> str:
    """Every "${VAR:-default}" in ``value`` replaced by its default."""
    return re.sub(r"\$\{\w+:?-([^}]*)\}", r"\1", value)


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines (no quoting: what both `docker run --env-file` and Compose read the same way)."""
    env = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep and key == key.strip() and " " not in value and '"' not in value, line
            env[key] = value
    return env


def env_files_of(service: dict) -> list[str]:
    files = service.get("env_file", [])
    return [files] if isinstance(files, str) else [f if isinstance(f, str) else f["path"] for f in files]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def docker() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text(encoding="utf-8"))


# -- docker-compose.yml ---------------------------------------------------------------


def test_compose_services_and_profiles(compose: dict) -> None:
    services = compose["services"]
    assert set(services) == {"bot", "llama-server", "bot-remote"}
    assert "profiles" not in services["bot"]  # `docker compose up -d` starts the bot alone
    assert services["llama-server"]["profiles"] == ["server"]
    assert services["bot-remote"]["profiles"] == ["server"]


def test_compose_comment_explains_both_ways_to_start() -> None:
    header = COMPOSE.read_text(encoding="utf-8").split("\n\n")[0]
    assert "docker compose up -d" in header
    assert "docker compose --profile server up -d bot-remote" in header


def test_compose_bot_is_built_from_the_dockerfile(compose: dict) -> None:
    for name in ("bot", "bot-remote"):
        build = compose["services"][name]["build"]
        assert build["context"] == "."
        assert build.get("dockerfile", "Dockerfile") == "Dockerfile"
        assert "CUDA_ARCHITECTURES" in build["args"]
        assert compose["services"][name]["restart"] == "unless-stopped"
    assert compose["services"]["bot"]["image"] == compose["services"]["bot-remote"]["image"]


def test_compose_gpu_reservations(compose: dict) -> None:
    for name in ("bot", "llama-server"):
        devices = compose["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [GPU], name
    assert "deploy" not in compose["services"]["bot-remote"]  # the model lives in llama-server


def test_compose_model_is_one_variable_naming_a_known_model(compose: dict) -> None:
    """MODEL chooses docker/models/MODEL.env for "bot" and "llama-server"; its default is fetch-model's."""
    for name in ("bot", "llama-server"):
        service = compose["services"][name]
        assert env_files_of(service) == ["docker/models/${MODEL:-llava-1.5-7b}.env"], name
        assert not any(k.startswith(("LLAVA_BOT_MODEL__", "LLAMA_ARG_")) for k in env_of(service)), name
    default = default_of(env_files_of(compose["services"]["bot"])[0].removeprefix("docker/models/").removesuffix(".env"))
    assert default == DEFAULT_MODEL and default in KNOWN_MODELS
    # bot-remote holds no model: llama-server has it.
    assert "env_file" not in compose["services"]["bot-remote"]

    # The model comes from the env file (LLAMA_ARG_*), not from the command line
    # (which would win over it).
    command = [str(a) for a in compose["services"]["llama-server"]["command"]]
    for option in ("-m", "--model", "--mmproj", "-c", "--ctx-size", "--chat-template", "--jinja"):
        assert option not in command
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert command[command.index("-ngl") + 1] == "99"
    port = command[command.index("--port") + 1]
    assert port == "8080"
    assert compose["services"]["llama-server"]["image"] == "ghcr.io/ggml-org/llama.cpp:server-cuda"


def test_compose_header_lists_the_model_names() -> None:
    header = COMPOSE.read_text(encoding="utf-8").split("\nx-bot:")[0]
    comment = " ".join(line.lstrip("# ") for line in header.splitlines())
    listed = re.search(r"MODEL \(default (\S+)\) is one of: ([^.]+(?:\.\d[^.]*)*)\. ", comment)
    assert listed, "the header names MODEL's values"
    assert listed.group(1) == DEFAULT_MODEL
    assert [n.strip() for n in listed.group(2).split(",")] == list(KNOWN_MODELS)


def test_model_env_files_match_the_known_models() -> None:
    """docker/models/NAME.env for every known model, as bot/models.py writes it."""
    files = {p.stem: p for p in MODEL_ENVS.glob("*.env")}
    assert set(KNOWN_MODELS) <= set(files)
    for name in set(files) - set(KNOWN_MODELS):  # a user's own file is fine, a left-over generated one is not
        assert "write_docker_envs" not in files[name].read_text(encoding="utf-8"), f"{files[name]}: no such model"
    for name, model in KNOWN_MODELS.items():
        assert files[name].read_text(encoding="utf-8") == docker_env(model), (
            f"{files[name]} is out of date: python -c 'from bot.fetch_model import write_docker_envs; write_docker_envs()'"
        )


@pytest.mark.parametrize("name", list(KNOWN_MODELS))
def test_model_env_file_is_what_fetch_model_downloads(name: str) -> None:
    env = read_env_file(MODEL_ENVS / f"{name}.env")
    fetched = plan(name, "/models")  # ./models is mounted at /models
    assert env["LLAVA_BOT_MODEL__PATH"] == env["LLAMA_ARG_MODEL"] == str(fetched.model_path)
    assert env["LLAVA_BOT_MODEL__MMPROJ"] == env["LLAMA_ARG_MMPROJ"] == str(fetched.mmproj_path)
    assert env["LLAVA_BOT_MODEL__CHAT_FORMAT"] == fetched.chat_format
    assert env["LLAVA_BOT_MODEL__N_CTX"] == env["LLAMA_ARG_CTX_SIZE"] == str(KNOWN_MODELS[name].n_ctx)
    assert set(env) <= {
        "LLAVA_BOT_MODEL__PATH",
        "LLAVA_BOT_MODEL__MMPROJ",
        "LLAVA_BOT_MODEL__CHAT_FORMAT",
        "LLAVA_BOT_MODEL__N_CTX",
        "LLAMA_ARG_MODEL",
        "LLAMA_ARG_MMPROJ",
        "LLAMA_ARG_CTX_SIZE",
        "LLAMA_ARG_JINJA",
        "LLAMA_ARG_CHAT_TEMPLATE",
    }


def test_compose_volumes(compose: dict) -> None:
    named = set(compose.get("volumes") or {})
    for name in ("bot", "bot-remote"):
        volumes = compose["services"][name]["volumes"]
        state = [v for v in volumes if v.split(":")[1] == "/state"]
        assert len(state) == 1, name
        assert state[0].split(":")[0] in named, f"{name}: /state should be a named volume"
    assert "./models:/models:ro" in compose["services"]["bot"]["volumes"]
    assert "./models:/models:ro" in compose["services"]["llama-server"]["volumes"]


def test_compose_remote_bot_uses_llama_server(compose: dict) -> None:
    from bot.config import EngineSettings

    remote = compose["services"]["bot-remote"]
    depends = remote["depends_on"]
    assert "llama-server" in depends
    engines = json.loads(env_of(remote)["LLAVA_BOT_ENGINES"])
    assert engines == [{"kind": "openai", "url": "http://llama-server:8080/v1"}]
    for engine in engines:
        EngineSettings(**engine)  # the bot's own schema accepts it
    assert not any(k.startswith("LLAVA_BOT_MODEL__PATH") for k in env_of(remote))


def test_compose_has_no_token(compose: dict) -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    assert not TOKEN_SHAPE.search(text)
    for name, service in compose["services"].items():
        env = env_of(service)
        for key in ("DISCORD_TOKEN", "LLAVA_BOT_DISCORD__TOKEN"):
            if key in env:
                assert env[key].startswith("${DISCORD_TOKEN"), f"{name}: {key} must come from the host environment"
    assert env_of(compose["services"]["bot"])["DISCORD_TOKEN"] == "${DISCORD_TOKEN:?set DISCORD_TOKEN}"


# -- Dockerfile ---------------------------------------------------------------------


def test_dockerfile_has_a_build_and_a_runtime_stage(docker: list[tuple[str, str]]) -> None:
    froms = [rest for word, rest in docker if word == "FROM"]
    assert len(froms) == 2
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-devel-ubuntu\d+\.\d+ AS build", froms[0])
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-runtime-ubuntu\d+\.\d+ AS runtime", froms[1])
    # The same CUDA version in both stages.
    assert froms[0].split(":")[1].split("-")[0] == froms[1].split(":")[1].split("-")[0]
    runtime = stages(docker)[1]
    assert ("COPY", "--from=build /opt/venv /opt/venv") in runtime
    assert not any(w == "RUN" and re.search(r"\b(cmake|build-essential|nvcc)\b", r) for w, r in runtime)


def test_dockerfile_builds_llama_cpp_python_with_cuda(docker: list[tuple[str, str]]) -> None:
    args = {rest.split("=", 1)[0]: rest.split("=", 1)[1].strip('"') for w, rest in docker if w == "ARG" and "=" in rest}
    assert args["CUDA_ARCHITECTURES"]
    cuda_runs = [r for w, r in docker if w == "RUN" and "llama-cpp-python" in r and "CMAKE_ARGS" in r]
    assert len(cuda_runs) == 1
    cmake_args = re.search(r'CMAKE_ARGS="([^"]*)"', cuda_runs[0])
    assert cmake_args, "CMAKE_ARGS must be set on the llama-cpp-python install"
    flags = cmake_args.group(1).split()
    assert "-DGGML_CUDA=on" in flags
    assert "-DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES}" in flags
    assert not any("LLAMA_CUBLAS" in f for f in flags)  # the old flag is a CMake error now


def test_dockerfile_pip_commands_match_the_readme(docker: list[tuple[str, str]]) -> None:
    readme = README.read_text(encoding="utf-8")
    # What the README tells people to run.
    assert 'CMAKE_ARGS="-DGGML_CUDA=on"' in readme
    assert "--no-binary llama-cpp-python" in readme
    readme_cuda = re.search(r'CMAKE_ARGS="-DGGML_CUDA=on" \S*pip install ([^\n`]*)', readme)
    assert readme_cuda, "the README's CUDA install line"
    readme_opts = [o for o in shlex.split(readme_cuda.group(1)) if o.startswith("--")]
    assert re.search(r"\bpip install \.", readme)

    commands = pip_installs(docker)
    assert commands, "no pip install in the Dockerfile"
    kinds = []
    for cmd in commands:
        words = shlex.split(cmd)
        targets = [w for w in words[words.index("install") + 1 :] if not w.startswith("-")]
        if any(t.startswith("llama-cpp-python") for t in targets) and "--no-binary" in words:
            # The README's CUDA line: same options, CMAKE_ARGS with GGML_CUDA=on.
            assert "-DGGML_CUDA=on" in cmd
            for opt in readme_opts:
                assert opt in words, f"{opt} (from the README) missing in: {cmd}"
            assert "--no-binary llama-cpp-python" in cmd
            kinds.append("cuda")
        elif targets == ["."]:
            kinds.append("project")
        elif targets == ["pip"] and "--upgrade" in words:
            kinds.append("pip")
        else:
            pytest.fail(f"a pip install the README does not describe: {cmd}")
    assert kinds.count("cuda") == 1 and kinds.count("project") == 1
    # llama-cpp-python is built before the project is installed, so pip keeps the CUDA build.
    assert kinds.index("cuda") < kinds.index("project")


def test_dockerfile_runs_as_non_root(docker: list[tuple[str, str]]) -> None:
    runtime = stages(docker)[-1]
    users = [rest for word, rest in runtime if word == "USER"]
    assert users, "the runtime stage needs a USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert any(w == "RUN" and "useradd" in r and "--uid 10001" in r and " llava" in r for w, r in runtime)
    assert user in ("llava", "10001")


def test_dockerfile_healthcheck_volumes_and_entrypoint(docker: list[tuple[str, str]]) -> None:
    runtime = stages(docker)[-1]
    health = [rest for word, rest in runtime if word == "HEALTHCHECK"]
    assert len(health) == 1 and "/healthz" in health[0] and "9100" in health[0]
    assert "curl" not in health[0]  # not in the image
    volumes = [json.loads(rest) for word, rest in runtime if word == "VOLUME"]
    assert volumes and "/models" in volumes[0] and "/state" in volumes[0]
    assert ("EXPOSE", "9100") in runtime
    assert ("ENTRYPOINT", '["llava-bot"]') in runtime
    assert ("CMD", '["run"]') in runtime
    env = " ".join(rest for word, rest in runtime if word == "ENV")
    assert "LLAVA_BOT_STATE__PATH=/state/" in env
    assert "LLAVA_BOT_METRICS__PORT=9100" in env


def test_dockerfile_never_holds_the_token(docker: list[tuple[str, str]]) -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert not TOKEN_SHAPE.search(text)
    for word, rest in docker:
        if word in ("ENV", "ARG"):
            assert "TOKEN" not in rest, f"{word} {rest}"


def test_dockerignore_keeps_models_and_secrets_out() -> None:
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for pattern in ("models", ".venv", ".git", "config/bot.toml", ".env"):
        assert pattern in ignored
    assert any(p.endswith("*.gguf") for p in ignored)
    # Nothing the Dockerfile copies is ignored.
    copied = []
    for word, rest in instructions(DOCKERFILE.read_text(encoding="utf-8")):
        if word == "COPY" and not rest.startswith("--from"):
            copied += [p.rstrip("/") for p in rest.split()[:-1]]
    assert copied
    for path in copied:
        assert path not in ignored, path
        assert (ROOT / path).exists(), path


# -- both files against the bot's own settings ------------------------------------------


@pytest.mark.parametrize("service", ["bot", "bot-remote"])
def test_image_and_compose_environment_are_valid_settings(
    service: str, compose: dict, docker: list[tuple[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image's ENV plus the service's environment (defaults filled in) load as settings."""
    from bot.config import load_settings

    env: dict[str, str] = {}
    for word, rest in stages(docker)[-1]:
        if word == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(rest))
    for env_file in env_files_of(compose["services"][service]):  # the default model's
        env.update(read_env_file(ROOT / with_defaults(env_file)))
    env.update({k: default_of(v) for k, v in env_of(compose["services"][service]).items()})
    env["DISCORD_TOKEN"] = "not-a-real-token"
    for key in ("LLAVA_BOT_MODEL__PATH", "LLAVA_BOT_MODEL__MMPROJ"):  # the files, here instead of /models
        if key in env:
            (tmp_path / Path(env[key]).name).write_bytes(b"GGUF")
            env[key] = str(tmp_path / Path(env[key]).name)
    for key in list(os.environ):
        if key.startswith("LLAVA_BOT_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("LLAVA_BOT_") or key == "DISCORD_TOKEN":
            monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)  # no config/bot.toml from the checkout

    settings = load_settings()
    assert str(settings.state.path).startswith("/state/")
    assert settings.metrics.port == 9100
    kinds = [e.kind for e in settings.engines]
    assert kinds == (["local"] if service == "bot" else ["openai"])
    if service == "bot":
        assert settings.model.path == tmp_path / Path(plan(None).model_path).name
        assert settings.model.chat_format == KNOWN_MODELS[DEFAULT_MODEL].chat_format


@pytest.mark.parametrize("name", list(KNOWN_MODELS))
def test_every_model_env_file_is_valid_settings(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MODEL=NAME gives the bot valid settings (with the files where fetch-model puts them)."""
    from bot.config import load_settings

    for key in list(os.environ):
        if key.startswith("LLAVA_BOT_"):
            monkeypatch.delenv(key)
    for key, value in read_env_file(MODEL_ENVS / f"{name}.env").items():
        if key.startswith("LLAVA_BOT_"):
            local = tmp_path / value.removeprefix("/") if value.startswith("/models/") else None
            if local is not None:
                local.parent.mkdir(parents=True, exist_ok=True)
                local.write_bytes(b"GGUF")
            monkeypatch.setenv(key, str(local) if local is not None else value)
    monkeypatch.chdir(tmp_path)
    model = load_settings().model
    assert model.chat_format == KNOWN_MODELS[name].chat_format
    assert model.n_ctx == KNOWN_MODELS[name].n_ctx
    assert model.path is not None and model.path.name == KNOWN_MODELS[name].text_file
