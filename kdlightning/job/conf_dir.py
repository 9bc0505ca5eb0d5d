"""Where the config tree is: ``conf/`` of a checkout, or ``kdlightning/conf`` inside a wheel.

from kdlightning.job.conf_dir import config_dir
config_dir()   # the folder @hydra.main composes from (kdlightning.job.cli), and kdl-eval's
               # data=NAME reads conf/data/NAME.yaml from
"""

from __future__ import annotations

from pathlib import Path


def config_dir() -> str:
    """The config tree's folder (a light module: the train CLI and kdl-eval both need it)."""
    package = Path(__file__).resolve().parents[1]
    packaged = package / "conf"
    return str(packaged if packaged.is_dir() else package.parent / "conf")
