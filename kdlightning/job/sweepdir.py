"""A multirun folder as Hydra writes it: the jobs its sweeper expands from ``multirun.yaml``.

Read by ``kdl-report`` (:mod:`kdlightning.report.collect`); here because it is the one place
outside a running job that needs Hydra itself (its override parser and basic sweeper). Light on
purpose: no torch, no Lightning.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import OmegaConf

log = logging.getLogger(__name__)


def expected_overrides(sweep_dir: Path) -> list[list[str]] | None:
    """Every job's overrides as Hydra's basic sweeper expands them from ``multirun.yaml``.

    The one place that uses Hydra's private ``BasicSweeper`` (tests/unit/report/test_report.py
    pins it on a real multirun). None when the folder has no multirun.yaml, another sweeper made
    it or the expansion fails: the report then lists the job folders that exist, without a grid.
    """
    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return None
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        hydra_cfg = OmegaConf.load(path).hydra
        target = hydra_cfg.sweeper.get("_target_") or "BasicSweeper"
        if not str(target).endswith("BasicSweeper"):  # e.g. Optuna: no fixed grid to expand
            return None
        params = hydra_cfg.sweeper.get("params") or {}
        args = [f"{k}={v}" for k, v in params.items()] + list(hydra_cfg.overrides.task)
        parsed = OverridesParser.create().parse_overrides(args)
        return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    except Exception as err:  # a Hydra upgrade, a grid it cannot expand, a garbled file
        log.warning(
            "report: cannot expand the sweep grid of %s (%r); listing job folders", path, err
        )
        return None
