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
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "LLAVA_BOT_"
DEFAULT_CONFIG_PATH = Path("config/bot.toml")

# The multimodal chat formats llama-cpp-python ships handlers for.  The
# engine maps each name to its handler class.
ChatFormat = Literal[
    "llava-1-5",
    "llava-1-6",
    "bakllava-1",
    "obsidian",
    "moondream2",
    "nanollava",
    "llama-3-vision-alpha",
    "minicpm-v-2.6",
]


class ConfigError(Exception):
    """A setting is wrong.  ``str(exc)`` is one line that names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSettings(_Section):
    path: Path | None = None
    mmproj: Path | None = None
    chat_format: ChatFormat = "llava-1-5"
    n_gpu_layers: int = Field(-1, ge=-1)
    n_ctx: int = Field(4096, ge=256)
    n_threads: int | None = Field(None, ge=1)
    n_batch: int = Field(512, ge=32)
    seed: int = 0
    warmup: bool = True

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


class ImageSettings(_Section):
    max_bytes: int = Field(25 * 1024 * 1024, ge=1)
    max_pixels: int = Field(40_000_000, ge=1)
    max_side: int = Field(1344, ge=16)
    jpeg_quality: int = Field(90, ge=10, le=100)


_file_data: ContextVar[dict[str, Any]] = ContextVar("llava_bot_file_data", default={})


class _TomlDataSource(PydanticBaseSettingsSource):
    """The parsed TOML file, handed in by :func:`load_settings`."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return _file_data.get().get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_file_data.get())


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
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Where generated models (the built-in tiny pair) are kept; None means
    # $XDG_CACHE_HOME/llava-bot or ~/.cache/llava-bot.
    cache_dir: Path | None = None

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
    _check_env(os.environ)
    token = _file_data.set(data)
    try:
        return Settings(**(overrides or {}))
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    finally:
        _file_data.reset(token)
