"""Where the tiny pairs are kept, and writing them: each file at once or not at all."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from bot.engine.tiny.families import WRITERS as FAMILY_WRITERS
from bot.engine.tiny.llava import write_llava_mmproj, write_llava_text
from bot.engine.tiny.shapes import TINY, ModelShape

log = logging.getLogger(__name__)

#: a writer of one file of a pair: (shape, path)
Writer = Callable[[ModelShape, Path], None]

#: family -> (text model writer, mmproj writer)
WRITERS: dict[str, tuple[Writer, Writer]] = {"llava": (write_llava_text, write_llava_mmproj), **FAMILY_WRITERS}


def default_cache_dir() -> Path:
    """``$LLAVA_BOT_CACHE_DIR``, else ``$XDG_CACHE_HOME/llava-bot``, else ``~/.cache/llava-bot``."""
    explicit = os.environ.get("LLAVA_BOT_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "llava-bot"


def ensure_model_pair(shape: ModelShape = TINY, cache_dir: Path | None = None) -> tuple[Path, Path]:
    """Return ``(text_model_path, mmproj_path)``, writing them only if missing.

    Each file is written to a temporary file in the same directory and moved
    into place with :func:`os.replace`, so a crash never leaves a half file
    and concurrent callers at worst both write the same bytes.  The file
    names carry a hash of the shape, so a changed shape never reuses stale
    files.
    """
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    text_path, mmproj_path = (directory / n for n in shape.file_names())
    write_text, write_mmproj = WRITERS[shape.family]
    if not text_path.is_file():
        _write_atomically(text_path, lambda p: write_text(shape, p))
    if not mmproj_path.is_file():
        _write_atomically(mmproj_path, lambda p: write_mmproj(shape, p))
    return text_path, mmproj_path


def write_model_pair(shape: ModelShape, directory: Path) -> tuple[Path, Path]:
    """Write (or overwrite) the pair for ``shape`` into ``directory``."""
    directory = Path(directory)
    text_path, mmproj_path = (directory / n for n in shape.file_names())
    write_text, write_mmproj = WRITERS[shape.family]
    _write_atomically(text_path, lambda p: write_text(shape, p))
    _write_atomically(mmproj_path, lambda p: write_mmproj(shape, p))
    return text_path, mmproj_path


def _write_atomically(target: Path, write: Callable[[Path], None]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # A unique name that the writer creates itself, so the usual umask
    # applies (tempfile.mkstemp would leave the file readable by us only).
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.info("wrote %s (%d bytes)", target, target.stat().st_size)
