"""``python -m bot.engine.tiny``: write (if missing) a built-in pair and print its paths."""

from __future__ import annotations

import argparse
from pathlib import Path

from bot.engine.tiny.files import default_cache_dir, ensure_model_pair
from bot.engine.tiny.shapes import SHAPES, TINY


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bot.engine.tiny",
        description="Write (if missing) a tiny random LLaVA-1.5-, Gemma-3- or Qwen2.5-VL-shaped model pair and print its paths.",
    )
    parser.add_argument("--shape", choices=sorted(SHAPES), default=TINY.name)
    parser.add_argument("--dir", type=Path, default=None, help=f"cache folder (default {default_cache_dir()})")
    args = parser.parse_args(argv)
    text_path, mmproj_path = ensure_model_pair(SHAPES[args.shape], args.dir)
    print(text_path)
    print(mmproj_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
