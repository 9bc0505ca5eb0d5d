"""``python -m kdlightning.export RUN_DIR`` / ``kdl-export``: export a finished run's student.

The command's name stays; the code lives in :mod:`kdlightning.deploy.export`.
"""

from kdlightning.deploy.export import *  # noqa: F403  (the module's public names)
from kdlightning.deploy.export import main

if __name__ == "__main__":
    raise SystemExit(main())
