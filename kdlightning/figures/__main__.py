"""``python -m kdlightning.figures RUN_DIR [--temperatures ...]``: see cli.py."""

from kdlightning.figures.cli import main

raise SystemExit(main())
