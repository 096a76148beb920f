"""``llava-bot fetch-model``: download a known vision model (GGUF pair) and write its settings.

A vision model is two files: the language model and the image projector
("mmproj") made for it.  :data:`KNOWN_MODELS` lists pairs known to work:
the LLaVA pairs with llama-cpp-python's LLaVA chat handlers, and current
models from ggml-org's (and OpenBMB's) GGUF repositories with
``chat_format = "auto"`` (the template stored in the model file).
:func:`plan` says where each file goes and which ``[model]`` settings use
them, :func:`fetch` downloads them with ``huggingface_hub.hf_hub_download``
(its own progress bars, resumable: running the command again continues an
interrupted download and skips finished files), and :func:`cmd_fetch_model`
ties it together for the CLI (``--list`` prints the table).

Each model goes into its own folder under ``--dir`` (``models/<name>/``):
several of these repositories use the same file names
(``mmproj-model-f16.gguf``, ``ggml-model-q4_k.gguf``) for different files.

:func:`docker_env` is a model's settings as environment variables, for
docker-compose.yml and ``docker run --env-file`` (``docker/models/<name>.env``,
written by :func:`write_docker_envs`).

Every failure the user can fix (no network, offline mode, a gated or missing
repository, a full disk, an unknown name) is a :class:`FetchError` whose
message is one line; the CLI prints it and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_MODEL = "llava-1.5-7b"
DEFAULT_DIR = "models"
DEFAULT_CONFIG = "config/bot.toml"

EXIT_OK, EXIT_BAD_INPUT = 0, 2


class FetchError(Exception):
    """A download or setup step failed in a way the user can fix.  ``str(exc)`` is one line."""


@dataclass(frozen=True)
class KnownModel:
    name: str
    repo_id: str
    text_file: str
    mmproj_file: str
    #: "auto" (the chat template stored in the GGUF) or a named format for files without one
    chat_format: str
    n_ctx: int
    text_bytes: int  # approximate, as Hugging Face lists them (decimal units)
    mmproj_bytes: int
    description: str
    #: what it answers well, for ``--list`` and the README's table
    good_at: str = ""
    #: answer speed on one GPU, relative: "fastest", "fast", "medium" or "slow"
    speed: str = ""
    #: GPU memory with every layer offloaded at ``n_ctx`` (weights, mmproj, KV
    #: cache, buffers): an estimate from the file sizes and the architecture, not measured
    gpu_gb: float = 0.0
    #: llama-server's prompt format: None for the GGUF's own template (--jinja),
    #: else one of llama.cpp's built-in template names (--chat-template NAME)
    server_template: str | None = None

    @property
    def total_bytes(self) -> int:
        return self.text_bytes + self.mmproj_bytes


# Sizes: decimal bytes as Hugging Face lists them.  The LLaVA pairs' are rounded.
# The others are exact byte counts taken from public references that pin the
# file with its sha256, each agreeing with at least one more reference (for
# MiniCPM-V 2.6 the others give only "about 4.68 GB" and "about 1.04 GB").
# Not read from Hugging Face itself: unreachable from where this was written.
KNOWN_MODELS: dict[str, KnownModel] = {
    m.name: m
    for m in (
        KnownModel(
            name="llava-1.5-7b",
            repo_id="mys/ggml_llava-v1.5-7b",
            text_file="ggml-model-q4_k.gguf",
            mmproj_file="mmproj-model-f16.gguf",
            chat_format="llava-1-5",
            n_ctx=4096,
            text_bytes=4_080_000_000,
            mmproj_bytes=624_000_000,
            description="LLaVA-1.5 7B (Vicuna), Q4_K: the default; fits in 8 GB of GPU memory",
            good_at="the original: short general descriptions; the weakest answers, misreads text",
            speed="medium",
            gpu_gb=7,
            server_template="vicuna",
        ),
        KnownModel(
            name="llava-1.5-13b",
            repo_id="mys/ggml_llava-v1.5-13b",
            text_file="ggml-model-q4_k.gguf",
            mmproj_file="mmproj-model-f16.gguf",
            chat_format="llava-1-5",
            n_ctx=4096,
            text_bytes=7_870_000_000,
            mmproj_bytes=645_000_000,
            description="LLaVA-1.5 13B (Vicuna), Q4_K: better answers, needs about 12 GB of GPU memory",
            good_at="somewhat better LLaVA-1.5 answers; still weak on text in images",
            speed="slow",
            gpu_gb=12,
            server_template="vicuna",
        ),
        KnownModel(
            name="llava-1.6-mistral-7b",
            repo_id="cjpais/llava-1.6-mistral-7b-gguf",
            text_file="llava-v1.6-mistral-7b.Q4_K_M.gguf",
            mmproj_file="mmproj-model-f16.gguf",
            chat_format="llava-1-6",
            n_ctx=8192,
            text_bytes=4_370_000_000,
            mmproj_bytes=624_000_000,
            description=(
                "LLaVA-1.6 7B (Mistral), Q4_K_M: sees more detail and text in images "
                "(up to about 2880 tokens an image); fits in 8 GB of GPU memory"
            ),
            good_at="more detail and some text than LLaVA-1.5; big images cost up to ~2,900 tokens",
            speed="medium",
            gpu_gb=7,
            # LLaVA-1.6-Mistral's prompt is "[INST] ... [/INST]" (llama.cpp's "llama2");
            # not tried against llama-server here.
            server_template="llama2",
        ),
        KnownModel(
            name="gemma-3-4b",
            repo_id="ggml-org/gemma-3-4b-it-GGUF",
            text_file="gemma-3-4b-it-Q4_K_M.gguf",
            mmproj_file="mmproj-model-f16.gguf",
            chat_format="auto",
            n_ctx=8192,
            text_bytes=2_489_757_856,
            mmproj_bytes=851_251_104,
            description=(
                "Gemma 3 4B it (Google), Q4_K_M: good general answers, reads short text; "
                "about 5 GB of GPU memory (256 tokens an image)"
            ),
            good_at="good general answers and descriptions, OCR-ish reading of short text, many languages",
            speed="fast",
            gpu_gb=5,
        ),
        KnownModel(
            name="qwen2.5-vl-3b",
            repo_id="ggml-org/Qwen2.5-VL-3B-Instruct-GGUF",
            text_file="Qwen2.5-VL-3B-Instruct-Q4_K_M.gguf",
            mmproj_file="mmproj-Qwen2.5-VL-3B-Instruct-f16.gguf",
            chat_format="auto",
            n_ctx=8192,
            text_bytes=1_929_901_056,
            mmproj_bytes=1_338_428_128,
            description=(
                "Qwen2.5-VL 3B Instruct, Q4_K_M: documents and text in images at a small size; "
                "about 5 GB of GPU memory (dynamic resolution: bigger images, more tokens)"
            ),
            good_at="documents, screenshots and text in images; dynamic resolution (big photos cost more tokens)",
            speed="fast",
            gpu_gb=5,
        ),
        KnownModel(
            name="qwen2.5-vl-7b",
            repo_id="ggml-org/Qwen2.5-VL-7B-Instruct-GGUF",
            text_file="Qwen2.5-VL-7B-Instruct-Q4_K_M.gguf",
            mmproj_file="mmproj-Qwen2.5-VL-7B-Instruct-f16.gguf",
            chat_format="auto",
            n_ctx=8192,
            text_bytes=4_683_072_032,
            mmproj_bytes=1_354_162_912,
            description=(
                "Qwen2.5-VL 7B Instruct, Q4_K_M: the strongest here on documents, text and detail; "
                "about 8 GB of GPU memory (dynamic resolution: bigger images, more tokens)"
            ),
            good_at="the best here on documents, charts, text in images and fine detail; dynamic resolution",
            speed="medium",
            gpu_gb=8,
        ),
        KnownModel(
            name="smolvlm2-2.2b",
            repo_id="ggml-org/SmolVLM2-2.2B-Instruct-GGUF",
            text_file="SmolVLM2-2.2B-Instruct-Q4_K_M.gguf",
            mmproj_file="mmproj-SmolVLM2-2.2B-Instruct-f16.gguf",
            chat_format="auto",
            n_ctx=4096,
            # One older reference lists 1_116_691_496 for the text file (an earlier upload?).
            text_bytes=1_112_602_656,
            mmproj_bytes=872_303_680,
            description=("SmolVLM2 2.2B Instruct (Hugging Face), Q4_K_M: the smallest and fastest; about 3 GB of GPU memory"),
            good_at="the smallest and fastest: simple descriptions and captions; less detail",
            speed="fastest",
            gpu_gb=3,
        ),
        KnownModel(
            name="minicpm-v-2.6",
            repo_id="openbmb/MiniCPM-V-2_6-gguf",
            text_file="ggml-model-Q4_K_M.gguf",
            mmproj_file="mmproj-model-f16.gguf",
            # The GGUF carries its chat template (ChatML); "minicpm-v-2.6" names
            # llama-cpp-python's handler for the same format.
            chat_format="auto",
            n_ctx=4096,
            text_bytes=4_681_089_344,
            mmproj_bytes=1_044_425_152,
            description=(
                "MiniCPM-V 2.6 (OpenBMB, 8B), Q4_K_M: strong OCR and detail from high-resolution slices; about 7 GB of GPU memory"
            ),
            good_at="text in images and detail (OCR), high-resolution images in slices of 64 tokens",
            speed="medium",
            gpu_gb=7,
        ),
    )
}


@dataclass(frozen=True)
class FetchPlan:
    """What :func:`fetch` downloads and where, and the settings that use it."""

    name: str
    repo_id: str
    #: (file name in the repository, local path), text model first, then mmproj
    files: tuple[tuple[str, Path], ...]
    chat_format: str
    #: the ``[model]`` table to put into the settings file
    settings_toml: str
    dest_dir: Path
    #: approximate sizes in bytes, in the order of ``files``
    sizes: tuple[int, ...] = ()

    @property
    def model_path(self) -> Path:
        return self.files[0][1]

    @property
    def mmproj_path(self) -> Path:
        return self.files[1][1]

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes)


def known_names() -> str:
    return ", ".join(KNOWN_MODELS)


def _toml_str(value: str) -> str:
    # A JSON string is a valid TOML basic string (same escapes, \uXXXX included).
    return json.dumps(value, ensure_ascii=False)


def settings_snippet(model: KnownModel, model_path: Path, mmproj_path: Path) -> str:
    chat_format = f"chat_format = {_toml_str(model.chat_format)}"
    if model.chat_format == "auto":
        chat_format += "   # the chat template stored in the model file"
    return (
        "[model]\n"
        f"path = {_toml_str(str(model_path))}\n"
        f"mmproj = {_toml_str(str(mmproj_path))}\n"
        f"{chat_format}\n"
        "n_gpu_layers = -1      # all layers on the GPU\n"
        f"n_ctx = {model.n_ctx}\n"
    )


def docker_env(model: KnownModel, models_dir: str = "/models") -> str:
    """``model``'s settings as environment variables (``docker/models/<name>.env``).

    For docker-compose.yml (``MODEL=<name>``) and ``docker run --env-file``:
    the bot's ``[model]`` table (``LLAVA_BOT_MODEL__*``) and the same model
    for llama.cpp's llama-server (``LLAMA_ARG_*``, which it reads like its
    options), with the files where ``fetch-model`` puts them and
    ``models_dir`` the folder they are mounted at.
    """
    folder = f"{models_dir}/{model.name}"
    text, mmproj = f"{folder}/{model.text_file}", f"{folder}/{model.mmproj_file}"
    if model.server_template is None:
        server = ["LLAMA_ARG_JINJA=1"]  # the template stored in the GGUF
    else:
        # A built-in template name: the server's own renderer applies it (Jinja off).
        server = ["LLAMA_ARG_JINJA=0", f"LLAMA_ARG_CHAT_TEMPLATE={model.server_template}"]
    lines = [
        f"# {model.name}: {model.description}",
        f"# Files: `llava-bot fetch-model {model.name}` (into ./models/{model.name}/, mounted at {models_dir}).",
        "# Written from bot/models.py by write_docker_envs(); tests/test_docker_files.py checks it.",
        "",
        "# the bot's [model] settings",
        f"LLAVA_BOT_MODEL__PATH={text}",
        f"LLAVA_BOT_MODEL__MMPROJ={mmproj}",
        f"LLAVA_BOT_MODEL__CHAT_FORMAT={model.chat_format}",
        f"LLAVA_BOT_MODEL__N_CTX={model.n_ctx}",
        "",
        "# llama-server (docker compose --profile server)",
        f"LLAMA_ARG_MODEL={text}",
        f"LLAMA_ARG_MMPROJ={mmproj}",
        f"LLAMA_ARG_CTX_SIZE={model.n_ctx}",
        *server,
    ]
    return "\n".join(lines) + "\n"


DOCKER_ENV_DIR = Path(__file__).resolve().parents[1] / "docker" / "models"


def write_docker_envs(folder: Path = DOCKER_ENV_DIR) -> list[Path]:
    """Write ``docker/models/<name>.env`` for every known model (run after changing the table)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for model in KNOWN_MODELS.values():
        path = folder / f"{model.name}.env"
        path.write_text(docker_env(model), encoding="utf-8")
        written.append(path)
    return written


def plan(name: str | None, dest_dir: str | Path | None = None) -> FetchPlan:
    """The files of model ``name`` and their places under ``dest_dir``/``name``.

    Raises :class:`FetchError` (listing the known names) for an unknown name.
    """
    name = name or DEFAULT_MODEL
    model = KNOWN_MODELS.get(name)
    if model is None:
        raise FetchError(f"unknown model {name!r}; known models: {known_names()}")
    folder = Path(dest_dir if dest_dir is not None else DEFAULT_DIR).expanduser() / model.name
    text_path, mmproj_path = folder / model.text_file, folder / model.mmproj_file
    return FetchPlan(
        name=model.name,
        repo_id=model.repo_id,
        files=((model.text_file, text_path), (model.mmproj_file, mmproj_path)),
        chat_format=model.chat_format,
        settings_toml=settings_snippet(model, text_path, mmproj_path),
        dest_dir=folder,
        sizes=(model.text_bytes, model.mmproj_bytes),
    )


def human_size(n: int) -> str:
    if n >= 1_000_000_000:
        return f"{n / 1e9:.2f} GB"
    if n >= 1_000_000:
        return f"{n / 1e6:.0f} MB"
    return f"{n / 1e3:.0f} kB"


# -- download ---------------------------------------------------------------------


class _ToStdout(logging.Handler):
    """huggingface_hub's own notes (retries, "using the existing file") as indented stdout lines.

    The library logs them to stderr by default; stderr is kept for the one
    line that says why the command failed.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(f"  {record.getMessage()}", flush=True)
        except Exception:  # a logging handler must not raise
            self.handleError(record)


@contextmanager
def _library_notes_to_stdout() -> Iterator[None]:
    logger = logging.getLogger("huggingface_hub")
    handlers, propagate = logger.handlers[:], logger.propagate
    handler = _ToStdout(logging.WARNING)
    logger.handlers = [handler]
    logger.propagate = False
    try:
        yield
    finally:
        logger.handlers = handlers
        logger.propagate = propagate


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def _network_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [ConnectionError, TimeoutError, socket.gaierror]
    # huggingface_hub has used requests, httpx and (2.x) httpx2 over the years.
    for module, names in (
        ("httpx2", ("TransportError",)),
        ("httpx", ("TransportError",)),
        ("requests", ("ConnectionError", "Timeout")),
    ):
        try:
            mod = __import__(module)
        except ImportError:
            continue
        types.extend(t for n in names if isinstance(t := getattr(mod, n, None), type))
    return tuple(types)


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _reason(exc: BaseException, repo_id: str, dest: Path) -> str:
    """One short phrase for why downloading failed."""
    from huggingface_hub import constants, errors

    host = urlsplit(constants.ENDPOINT).netloc or constants.ENDPOINT
    chain = _chain(exc)

    def first(*names: str) -> BaseException | None:
        # By name, so that error classes an older or newer huggingface_hub lacks are skipped.
        kinds = tuple(k for n in names if isinstance(k := getattr(errors, n, None), type))
        return next((e for e in chain if isinstance(e, kinds)), None) if kinds else None

    if first("OfflineModeIsEnabled") is not None:
        return "offline mode is on (HF_HUB_OFFLINE=1); unset HF_HUB_OFFLINE to download"
    if first("GatedRepoError") is not None:
        return f"the repository is gated: accept its terms on {constants.ENDPOINT}/{repo_id} and log in (hf auth login)"
    if first("RepositoryNotFoundError") is not None:
        return f"repository not found on {host} (or it is private: log in with hf auth login)"
    if first("RemoteEntryNotFoundError") is not None:
        return f"the file is not in the repository on {host}"
    net = next((e for e in chain if isinstance(e, _network_error_types())), None)
    if net is not None:
        detail = str(net).strip() or type(net).__name__
        return f"no network connection to {host} ({detail})"
    http = first("HfHubHTTPError")
    if http is not None:
        status = _status(http)
        if status == 404:
            return f"the file is not in the repository on {host}"
        return f"{host} answered HTTP {status}" if status else f"{host}: {str(http).splitlines()[0]}"
    if first("LocalEntryNotFoundError") is not None:
        return f"no network connection to {host}, and the file is not in {dest} yet"
    os_err = next((e for e in chain if isinstance(e, OSError)), None)
    if os_err is not None and os_err.strerror:
        where = getattr(os_err, "filename", None) or dest
        return f"cannot write {where}: {os_err.strerror}"
    return str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__


def fetch(fetch_plan: FetchPlan, *, token: str | bool | None = None) -> list[Path]:
    """Download the plan's files into its folder; return their local paths.

    Files already there are checked against the repository and skipped when
    current; an interrupted download resumes.  Any failure is one
    :class:`FetchError` line.
    """
    try:
        import huggingface_hub

        # Looked up here: the attribute is imported lazily, and that import sets
        # up the library's stderr log handler, which must exist before
        # _library_notes_to_stdout() swaps it out.
        download = huggingface_hub.hf_hub_download
    except ImportError:
        raise FetchError("fetch-model needs huggingface_hub: pip install huggingface_hub") from None

    try:
        fetch_plan.dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FetchError(f"cannot create {fetch_plan.dest_dir}: {exc.strerror or exc}") from None

    done: list[Path] = []
    sizes = fetch_plan.sizes or (0,) * len(fetch_plan.files)
    for (filename, local), size in zip(fetch_plan.files, sizes):
        about = f" (about {human_size(size)})" if size else ""
        print(f"{fetch_plan.repo_id}/{filename}{about} -> {local}", flush=True)
        try:
            with _library_notes_to_stdout():
                got = download(
                    repo_id=fetch_plan.repo_id,
                    filename=filename,
                    local_dir=fetch_plan.dest_dir,
                    token=token,
                )
        except Exception as exc:  # the library's errors, network and disk errors alike
            raise FetchError(
                f"cannot download {fetch_plan.repo_id}/{filename}: {_reason(exc, fetch_plan.repo_id, fetch_plan.dest_dir)}"
            ) from exc
        done.append(Path(got))
    return done


# -- settings ---------------------------------------------------------------------


def _config_header(fetch_plan: FetchPlan) -> str:
    return (
        f"# llava-bot settings, written by `llava-bot fetch-model {fetch_plan.name}`.\n"
        "# Every other setting (and what it does) is in config/example.toml.\n"
        "# Relative paths are relative to the directory llava-bot is started in.\n"
        "\n"
    )


def write_settings(fetch_plan: FetchPlan, config: Path) -> bool:
    """Write ``config`` with the plan's ``[model]`` table when it does not exist.

    Returns True when written, False when the file exists (it is never changed).
    """
    try:
        config.parent.mkdir(parents=True, exist_ok=True)
        with config.open("x", encoding="utf-8") as f:
            f.write(_config_header(fetch_plan) + fetch_plan.settings_toml)
    except FileExistsError:
        return False
    except OSError as exc:
        raise FetchError(f"cannot write {config}: {exc.strerror or exc}") from None
    return True


# -- command ----------------------------------------------------------------------


def print_models() -> None:
    """``fetch-model --list``: every known model with its download size and GPU memory."""
    rows = [
        (
            f"{m.name}{' (default)' if m.name == DEFAULT_MODEL else ''}",
            human_size(m.total_bytes),
            f"~{m.gpu_gb:g} GB",
            m.speed,
            m.chat_format,
            m.good_at,
        )
        for m in KNOWN_MODELS.values()
    ]
    head = ("name", "download", "GPU", "speed", "chat format", "good at")
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head) - 1)]
    for row in (head, *rows):
        print("  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths)) + "  " + row[-1])
    print(
        "GPU: an estimate with every layer on the GPU at the model's n_ctx. "
        "`llava-bot fetch-model NAME --dry-run` shows the files and settings."
    )


def print_plan(fetch_plan: FetchPlan, config: Path) -> None:
    model = KNOWN_MODELS[fetch_plan.name]
    print(f"{fetch_plan.name}: {model.description}")
    print(f"from https://huggingface.co/{fetch_plan.repo_id} into {fetch_plan.dest_dir}")
    width = max(len(f) for f, _ in fetch_plan.files)
    for (filename, local), size in zip(fetch_plan.files, fetch_plan.sizes):
        there = "  (present: checked, not downloaded again if current)" if local.is_file() else ""
        print(f"  {filename:<{width}}  {human_size(size):>8}  -> {local}{there}")
    print(f"  total about {human_size(fetch_plan.total_bytes)}")
    if config.exists():
        print(f"{config} exists and would be left alone; these settings would be printed to paste into it:")
    else:
        print(f"{config} does not exist and would be written with:")
    print(fetch_plan.settings_toml, end="")
    print("dry run: nothing downloaded, nothing written")


def cmd_fetch_model(args: argparse.Namespace) -> int:
    """``llava-bot fetch-model [NAME] [--dir DIR] [--dry-run] [--list]``: 0 done, 2 with one line on stderr."""
    if getattr(args, "list", False):
        print_models()
        return EXIT_OK
    config = Path(getattr(args, "config", None) or DEFAULT_CONFIG)
    try:
        fetch_plan = plan(getattr(args, "name", None), getattr(args, "dir", None) or DEFAULT_DIR)
        if getattr(args, "dry_run", False):
            print_plan(fetch_plan, config)
            return EXIT_OK
        print(
            f"Downloading {fetch_plan.name} from {fetch_plan.repo_id} into {fetch_plan.dest_dir} "
            f"(about {human_size(fetch_plan.total_bytes)} in all; run again to resume if interrupted)"
        )
        fetch(fetch_plan)
        if write_settings(fetch_plan, config):
            print(f"Wrote the [model] settings to {config}")
        else:
            print(f"{config} exists and was left alone; put these settings in it (in place of its [model] table):")
            print(fetch_plan.settings_toml, end="")
    except FetchError as exc:
        print(f"llava-bot: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("llava-bot: interrupted; run the same command again to resume the download", file=sys.stderr)
        return 130
    print(f"model:  {fetch_plan.model_path}")
    print(f"mmproj: {fetch_plan.mmproj_path}")
    print("Next: llava-bot doctor")
    return EXIT_OK


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``fetch-model`` options (``--config`` is left to the caller)."""
    parser.add_argument(
        "name",
        nargs="?",
        default=DEFAULT_MODEL,
        metavar="NAME",
        help=f"{', '.join(KNOWN_MODELS)} (default: {DEFAULT_MODEL}); --dry-run describes one",
    )
    parser.add_argument(
        "--dir",
        default=DEFAULT_DIR,
        metavar="DIR",
        help=f"model folder; each model goes into DIR/NAME/ (default: {DEFAULT_DIR})",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the files, sizes, target paths and settings; download and write nothing",
    )
    parser.add_argument(
        "--list",
        action="store_true",
        help="list the known models (download size, GPU memory, speed, what each is good at) and exit",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="llava-bot fetch-model",
        description="Download a known vision model (GGUF text model + mmproj) from Hugging Face and write its settings.",
    )
    add_arguments(parser)
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=DEFAULT_CONFIG,
        help=f"settings file to write when it does not exist (default: {DEFAULT_CONFIG}); an existing one is never changed",
    )
    return cmd_fetch_model(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
