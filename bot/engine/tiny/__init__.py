"""Tiny, random, LLaVA-1.5-shaped GGUF model pairs for tests and benchmarks.

(Gemma-3- and Qwen2.5-VL-shaped pairs too: a :class:`ModelShape` with
``family="gemma3"`` or ``"qwen2.5vl"``, written by
:mod:`bot.engine.tiny.families`, whose answers end on their own; the
LLaVA pair's writers are :mod:`bot.engine.tiny.llava`.)

A real LLaVA-1.5 pair is a ``llama`` text model plus a CLIP "mmproj" file,
several gigabytes together.  This package writes a pair with the same
*structure* but random weights and tiny widths, so the whole real stack
(llama-cpp-python, libllama, libmtmd) can be exercised in milliseconds
without downloading anything.  The answers are gibberish; the shapes, the
token accounting and the timings are real.

The files are written deterministically (fixed numpy seed, fixed key and
tensor order), so the same :class:`ModelShape` always produces the same bytes.

The package: :mod:`~bot.engine.tiny.shapes` (the sizes, the built-in
shapes), :mod:`~bot.engine.tiny.common` (what the writers share),
:mod:`~bot.engine.tiny.llava` and :mod:`~bot.engine.tiny.families` (the
writers), :mod:`~bot.engine.tiny.files` (the cache folder, atomic writes) and
:mod:`~bot.engine.tiny.cli` (``python -m bot.engine.tiny``).
"""

from __future__ import annotations

from bot.engine.tiny.cli import main
from bot.engine.tiny.files import default_cache_dir, ensure_model_pair, write_model_pair
from bot.engine.tiny.shapes import (
    BENCH,
    BENCH_60M,
    FAMILIES,
    FAMILY_SHAPES,
    GEMMA3_TINY,
    LLAVA_7B,
    QWEN25VL_TINY,
    TINY,
    ModelShape,
)

__all__ = [
    "BENCH",
    "BENCH_60M",
    "FAMILIES",
    "FAMILY_SHAPES",
    "GEMMA3_TINY",
    "LLAVA_7B",
    "QWEN25VL_TINY",
    "TINY",
    "ModelShape",
    "default_cache_dir",
    "ensure_model_pair",
    "main",
    "write_model_pair",
]
