"""One typed settings tree: a TOML file, then environment overrides.

Precedence, highest first: explicit overrides (CLI flags), environment
variables (``LLAVA_BOT_`` prefix, ``__`` between levels, e.g.
``LLAVA_BOT_MODEL__N_CTX=8192``), the TOML file (``--config FILE``, else
``config/bot.toml`` when present), the defaults below.

Every setting is documented in ``config/example.toml``.  A bad setting stops
start-up with :class:`ConfigError`, whose message names the key.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "LLAVA_BOT_"
DEFAULT_CONFIG_PATH = Path("config/bot.toml")

# The multimodal chat formats llama-cpp-python ships handlers for.  The
# engine maps each name to its handler class.
# "auto": the model file's own chat template, else one inferred from its projector
# (bot/engine/templates.py); the others name a format.
ChatFormat = Literal[
    "auto",
    "llava-1-5",
    "llava-1-6",
    "bakllava-1",
    "obsidian",
    "moondream2",
    "nanollava",
    "llama-3-vision-alpha",
    "minicpm-v-2.6",
    "gemma-3",
    "qwen2-vl",
]


class ConfigError(Exception):
    """A setting is wrong.  ``str(exc)`` is one line that names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSettings(_Section):
    path: Path | None = None
    mmproj: Path | None = None
    chat_format: ChatFormat = "auto"
    n_gpu_layers: int = Field(-1, ge=-1)
    n_ctx: int = Field(4096, ge=256)
    n_threads: int | None = Field(None, ge=1)
    n_batch: int = Field(512, ge=32)
    seed: int = 0
    warmup: bool = True
    # Keep the last conversation's prefix (system prompt + image + turns) in the
    # KV cache and reuse it when the next question has the same image.
    prefix_cache: bool = True
    # Answers decoded together by the local engine (slots in one llama context,
    # one thread). n_ctx is each conversation's context: the KV cache holds
    # parallel x n_ctx tokens, so its memory grows with parallel.
    parallel: int = Field(1, ge=1, le=64)
    # llama.cpp's repacking of CPU-resident weights (AMX on CPUs that have it):
    # "auto" keeps it unless a probe finds that the AMX kernels crash here
    # (bot.engine.cpu_repack); true/false decide without a probe.
    cpu_repack: Literal["auto"] | bool = "auto"

    @field_validator("path", "mmproj")
    @classmethod
    def _file_exists(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        value = value.expanduser()
        if not value.is_file():
            raise ValueError(f"file not found: {value}")
        return value

    @field_validator("n_ctx")
    @classmethod
    def _ctx_multiple(cls, value: int) -> int:
        if value % 256:
            raise ValueError(f"must be a multiple of 256 (got {value})")
        return value

    @model_validator(mode="after")
    def _pair(self) -> ModelSettings:
        if (self.path is None) != (self.mmproj is None):
            missing = "mmproj" if self.mmproj is None else "path"
            raise ValueError(f"model.path and model.mmproj go together; model.{missing} is not set")
        return self


class GenerationSettings(_Section):
    max_tokens: int = Field(256, ge=1)
    max_tokens_limit: int = Field(1024, ge=1)
    temperature: float = Field(0.2, ge=0.0, le=2.0)
    # None: the chat format's own system message (LLaVA-1.5's "A chat between
    # a curious human and an artificial intelligence assistant...").
    system_prompt: str | None = None
    default_question: str = "Describe this image."
    max_question_chars: int = Field(2000, ge=1)
    # Stop generating after this many seconds; the user gets the partial answer, marked.
    timeout_s: float = Field(120.0, gt=0)
    # One language for every answer ("fr", "pt-BR" or a name: "French"); None: the asker's
    # (a slash command's locale; a mention: the language of its question).
    language: str | None = None

    @model_validator(mode="after")
    def _cap(self) -> GenerationSettings:
        if self.max_tokens > self.max_tokens_limit:
            raise ValueError(
                f"generation.max_tokens ({self.max_tokens}) is above "
                f"generation.max_tokens_limit ({self.max_tokens_limit})"
            )
        return self

    def clamp(self, requested: int | None) -> int:
        """The max_tokens to use: the default, or the request bounded by the ceiling."""
        if requested is None:
            return self.max_tokens
        return max(1, min(int(requested), self.max_tokens_limit))


class QueueSettings(_Section):
    max_size: int = Field(32, ge=1)
    per_user: int = Field(2, ge=1)
    # Questions one user may ask per minute (0: no limit).
    per_user_per_minute: int = Field(6, ge=0)
    # Automatic captions wait in their own lane (a free engine takes questions first),
    # at most this many at once; captions beyond it are skipped (logged, no reply).
    caption_max_size: int = Field(8, ge=1)
    # Attachments downloaded and prepared at once (each holds its file in memory until prepared).
    downloads: int = Field(4, ge=1)
    # On SIGTERM / Ctrl-C: how long to wait for the running job and the last replies.
    shutdown_timeout_s: float = Field(30.0, gt=0)


def _default_state_path() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "llava-bot" / "journal.sqlite3"


class StateSettings(_Section):
    # The journal of accepted, unanswered jobs (SQLite), replayed at start-up.
    path: Path = Field(default_factory=_default_state_path)
    journal: bool = True
    # A job in flight during this many crashes is not replayed again: its asker gets one line.
    max_crashes: int = Field(2, ge=1)
    # Jobs older than this are not replayed (Discord's attachment links expire after about 24 h).
    replay_max_age_s: float = Field(20 * 3600.0, gt=0)
    # Before replaying, the bot reads each channel's messages from the oldest
    # leftover question on (at most this many, 100 a request) to find replies
    # it already made: a complete one is not sent again, a note or partial
    # text is edited into the answer.
    replay_history_limit: int = Field(1000, ge=0, le=100_000)


#: Discord's CDN (attachments, stickers) and its media proxy (embedded pictures: Discord fetches
#: a linked picture itself and serves it from these hosts; the bot never goes to the third party)
DISCORD_CDN_HOSTS = ["cdn.discordapp.com", "media.discordapp.net", "images-ext-1.discordapp.net", "images-ext-2.discordapp.net"]


class ImageSettings(_Section):
    max_bytes: int = Field(25 * 1024 * 1024, ge=1)
    max_pixels: int = Field(40_000_000, ge=1)
    # None: from the model's projector: twice a fixed-size encoder's input (672 for
    # LLaVA-1.5's 336 px, at most 1344), 1344 for tiling encoders (LLaVA-1.6,
    # MiniCPM-V), and for dynamic-resolution ones (Qwen2-VL, Qwen2.5-VL) the side
    # that fits max_image_tokens (896 px for 1024 tokens).
    max_side: int | None = Field(None, ge=16)
    # Dynamic-resolution models only: the most tokens one image may take (None: 1024).
    # A 1920x1080 photo is about 2,700 tokens on Qwen2.5-VL at full size.
    max_image_tokens: int | None = Field(None, ge=16)
    jpeg_quality: int = Field(90, ge=10, le=100)
    # Hosts attachments may be downloaded from ("host" or "host:port"); nothing else is fetched.
    allowed_hosts: list[str] = Field(default_factory=lambda: list(DISCORD_CDN_HOSTS))
    download_timeout_s: float = Field(30.0, gt=0)
    # Image preparation: threads, and decoded pixels in flight at once (an image
    # larger than the budget runs alone). Bounds memory when many arrive together.
    prepare_workers: int = Field(2, ge=1)
    pixel_budget: int = Field(48_000_000, ge=1_000_000)
    # Animations (GIF, WebP, APNG) and video clips: this many frames, sampled evenly over
    # their time (1: the first frame only); "grid" puts them on one contact sheet.
    frames: int = Field(4, ge=1, le=16)
    frames_as: Literal["images", "grid"] = "images"
    # Largest video file (checked from the declared size before download, and the
    # download's byte cap for videos), and the longest clip (from its header, before decoding).
    max_video_bytes: int = Field(50 * 1024 * 1024, ge=1)
    max_video_seconds: float = Field(60.0, gt=0)


class DiscordSettings(_Section):
    # From DISCORD_TOKEN or LLAVA_BOT_DISCORD__TOKEN only, never from a file.
    token: SecretStr | None = None
    api_base: str = "https://discord.com/api/v10"
    # None: Discord's own gateway.
    gateway_url: str | None = None
    # Where stickers are served (Discord's CDN; GIF stickers from its media proxy).
    # Another Discord-compatible server serves them elsewhere.
    cdn_url: str = "https://cdn.discordapp.com"
    media_url: str = "https://media.discordapp.net"
    allowed_channels: list[int] = Field(default_factory=list)
    allowed_roles: list[int] = Field(default_factory=list)
    dm: bool = True
    # Users (besides the application's owner) who may run admin commands.
    admin_users: list[int] = Field(default_factory=list)
    admin_roles: list[int] = Field(default_factory=list)
    # Answers appear as they are written: the reply is edited at most once per
    # stream_edit_s seconds (Discord allows about 5 edits per 5 s per channel).
    stream: bool = True
    stream_edit_s: float = Field(1.0, ge=0.5)
    # Images answered per message; more are skipped with a note.
    max_images: int = Field(4, ge=1, le=10)
    # How many earlier answers a reply-chain follow-up walks back through (in a
    # conversation thread: how many earlier turns it sends).
    reply_chain_depth: int = Field(6, ge=0, le=25)
    # A mention with a picture starts a thread on the question and is answered there;
    # the asker's later messages in that thread are follow-ups (/ask has its own option).
    threads: bool = False
    # Sync the slash commands with Discord at start-up (also: `llava-bot run --sync`).
    sync_commands: bool = False
    # Shards for very large bots: a number, or "auto" (Discord's recommendation).
    # None: one gateway connection, what almost every bot needs.
    shard_count: int | Literal["auto"] | None = None

    @field_validator("api_base", "gateway_url", "cdn_url", "media_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.match(r"^(https?|wss?)://[^/\s]+", value):
            raise ValueError(f"not a URL: {value!r}")
        return value.rstrip("/")


class ModerationRule(_Section):
    """One question every watched image is checked against (``[[moderation.rules]]``)."""

    # Shown in its alerts and in /metrics: letters, digits, - and _ only.
    name: str = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_-]+$")
    # A yes/no question about the image: "yes" (the answer's first word) raises an alert.
    question: str = Field(min_length=3, max_length=300)
    # A role to mention in this rule's alerts (the only mention an alert ever makes).
    alert_role: int | None = None
    # Only images posted in these channels (empty: every watched channel).
    channels: list[int] = Field(default_factory=list)
    # On trial: its alerts are posted marked "trial", with no role mention and no delete
    # button (a new rule can be judged on real images before it pings anyone).
    trial: bool = False


class ModerationSettings(_Section):
    # Every image posted in these channels gets a caption (alt text).
    caption_channels: list[int] = Field(default_factory=list)
    # Post captions here (with a link to the image) instead of replying in place; rule alerts go here too.
    log_channel: int | None = None
    caption_prompt: str = "Write one short sentence of alt text for this image."
    caption_max_tokens: int = Field(60, ge=1)
    # Images here are checked against the rules and their captions kept for /find, with no caption posted.
    watch_channels: list[int] = Field(default_factory=list)
    # Checked on every image in the watched channels (caption_channels, watch_channels and the rules' own channels).
    rules: list[ModerationRule] = Field(default_factory=list)
    # Longest answer to one rule's question (the yes/no and a one-line reason).
    rule_max_tokens: int = Field(40, ge=2, le=200)
    # Members with one of these roles (or Manage Messages) may press alert buttons and use /find.
    moderator_roles: list[int] = Field(default_factory=list)
    # Images posted here without alt text (Discord's description) get a suggested one as a reply.
    alt_text_channels: list[int] = Field(default_factory=list)
    alt_text_prompt: str = (
        "Write alt text for this image: one short factual sentence. If the image shows text, "
        "give that text first. Do not start with 'image of' or 'picture of'."
    )
    alt_text_max_tokens: int = Field(80, ge=1)
    # Days captions of watched images, and the images moderators judged (the decision
    # memory), are kept (0: none: no caption is kept, a judged image is forgotten within the hour).
    keep_days: float = Field(30.0, ge=0)
    # Most rules one server may set from Discord (/rule add): each is one more question per image.
    max_server_rules: int = Field(10, ge=0, le=50)

    @model_validator(mode="after")
    def _unique_rule_names(self) -> ModerationSettings:
        names = [rule.name.lower() for rule in self.rules]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"moderation.rules: two rules are named {name!r}")
        return self

    @property
    def watched_channels(self) -> set[int]:
        """Channels whose images the moderation features look at."""
        channels = set(self.caption_channels) | set(self.watch_channels) | set(self.alt_text_channels)
        for rule in self.rules:
            channels |= set(rule.channels)
        return channels


class MetricsSettings(_Section):
    # Serve Prometheus /metrics and /healthz on this port (None: off).
    port: int | None = Field(None, ge=0, le=65535)
    host: str = "127.0.0.1"


class WebSettings(_Section):
    """The playground (``llava-bot serve``; beside the bot with ``enabled``)."""

    # `llava-bot run` also serves the playground, on the same model and queue.
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    # From LLAVA_BOT_WEB__TOKEN only, never from a file. Needed to bind anything but loopback.
    token: SecretStr | None = None
    # Follow-up conversations kept in memory (least recently used go first), and for how long idle.
    conversations: int = Field(200, ge=1)
    conversation_ttl_s: float = Field(1800.0, gt=0)
    # Earlier (question, answer) turns sent with a follow-up.
    history_turns: int = Field(6, ge=0, le=25)

    @field_validator("token")
    @classmethod
    def _no_empty_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            return None
        return value


class EngineSettings(_Section):
    # "local": the model in this process ([model]); "openai": an OpenAI-compatible
    # server (llama-server --mmproj, python -m llama_cpp.server, vLLM, Ollama /v1).
    kind: Literal["local", "openai"] = "local"
    url: str | None = None  # openai: the API base, e.g. http://127.0.0.1:8080/v1
    model: str = "llava"  # openai: the model name sent with each request
    api_key_env: str | None = None  # openai: name of the environment variable with the API key
    name: str | None = None  # shown in /status and logs (default: "local" or the URL)
    timeout_s: float = Field(120.0, gt=0)

    @model_validator(mode="after")
    def _needs_url(self) -> EngineSettings:
        if self.kind == "openai" and not self.url:
            raise ValueError("an engine of kind 'openai' needs a url")
        return self


_file_data: ContextVar[dict[str, Any] | None] = ContextVar("llava_bot_file_data", default=None)


class _TomlDataSource(PydanticBaseSettingsSource):
    """The parsed TOML file, handed in by :func:`load_settings`."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return (_file_data.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_file_data.get() or {})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    model: ModelSettings = ModelSettings()
    generation: GenerationSettings = GenerationSettings()
    queue: QueueSettings = QueueSettings()
    images: ImageSettings = ImageSettings()
    discord: DiscordSettings = DiscordSettings()
    moderation: ModerationSettings = ModerationSettings()
    state: StateSettings = StateSettings()
    metrics: MetricsSettings = MetricsSettings()
    web: WebSettings = WebSettings()
    # Engines fed from the one queue, one consumer each. Default: the local model.
    engines: list[EngineSettings] = Field(default_factory=lambda: [EngineSettings()], min_length=1)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # "text" for people, "json" (one object per line) for log collectors.
    log_format: Literal["text", "json"] = "text"
    # Where generated models (the built-in tiny pair) are kept; None means
    # $XDG_CACHE_HOME/llava-bot or ~/.cache/llava-bot.
    cache_dir: Path | None = None

    @model_validator(mode="after")
    def _one_local_engine(self) -> Settings:
        if sum(e.kind == "local" for e in self.engines) > 1:
            raise ValueError("engines: at most one engine of kind 'local' (one model per process)")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlDataSource(settings_cls))


def _known_env_names(model: type[BaseModel], prefix: str) -> set[str]:
    names: set[str] = set()
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}".upper()
        names.add(key)
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            names |= _known_env_names(ann, f"{key}__")
    return names


def _check_env(environ: Mapping[str, str]) -> None:
    known = _known_env_names(Settings, ENV_PREFIX)
    for key in sorted(environ):
        if key.upper().startswith(ENV_PREFIX) and key.upper() not in known:
            dotted = key[len(ENV_PREFIX):].lower().replace("__", ".")
            raise ConfigError(f"config error: unknown setting {dotted} (from environment variable {key})")


def _describe(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        return f"config error: unknown setting {loc}"
    if "input" in first and first["type"] not in ("value_error", "missing"):
        shown = repr(first["input"])
        if len(shown) > 60:
            shown = shown[:57] + "..."
        return f"config error: {loc}: {msg} (got {shown})"
    if not loc or msg.startswith(loc):
        return f"config error: {msg}"
    return f"config error: {loc}: {msg}"


def load_settings(
    path: str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Settings:
    """Build the settings tree or raise :class:`ConfigError` with one line.

    ``path`` None means ``config/bot.toml`` when it exists, else defaults only.
    ``overrides`` is a nested dict (from CLI flags) that wins over everything.
    """
    data: dict[str, Any] = {}
    if path is None and DEFAULT_CONFIG_PATH.is_file():
        path = DEFAULT_CONFIG_PATH
    if path is not None:
        file = Path(path)
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config error: config file not found: {file}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config error: {file} is not valid TOML: {exc}") from None
    if isinstance(data.get("discord"), dict) and "token" in data["discord"]:
        raise ConfigError(
            "config error: discord.token must not be in a file; set the DISCORD_TOKEN environment variable"
        )
    if isinstance(data.get("web"), dict) and "token" in data["web"]:
        raise ConfigError("config error: web.token must not be in a file; set the LLAVA_BOT_WEB__TOKEN environment variable")
    _check_env(os.environ)
    overrides = dict(overrides or {})
    env_token = os.environ.get("DISCORD_TOKEN")
    if env_token and not os.environ.get(f"{ENV_PREFIX}DISCORD__TOKEN"):
        overrides["discord"] = {**overrides.get("discord", {}), "token": env_token}
    token = _file_data.set(data)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    finally:
        _file_data.reset(token)
