"""``python -m bot.engine.tiny --shape NAME [--dir DIR]``."""

from bot.engine.tiny.cli import main

raise SystemExit(main())
