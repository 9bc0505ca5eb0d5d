"""``python -m kdlightning.report DIR [--by-role] [--wandb auto|on|off]``: see cli.py."""

from kdlightning.report.cli import main

raise SystemExit(main())
