"""``hydra/sweeper=optuna``: the sweeper's config, with the key names of Hydra's official Optuna
sweeper plugin (``sampler``, ``direction``, ``n_trials``, ``n_jobs``, ``study_name``,
``storage``, ``params``), registered in Hydra's ConfigStore when Hydra scans its plugins.

    python -m kdlightning.train -m hydra/sweeper=optuna hydra.sweeper.n_trials=20 \\
        hydra.sweeper.direction=maximize hydra.sweeper.sampler.seed=1 kd.alpha='interval(0, 1)'

``sampler`` is any Optuna sampler by ``_target_`` and its arguments
(``hydra.sweeper.sampler._target_=optuna.samplers.RandomSampler``).
"""

# No `from __future__ import annotations`: OmegaConf reads these annotations as types, and Hydra
# imports plugin modules in a way that string annotations cannot be resolved in.
from dataclasses import dataclass, field
from typing import Any, Dict, Optional  # noqa: UP035

from hydra.core.config_store import ConfigStore


def _tpe() -> Dict[str, Any]:  # noqa: UP006
    return {"_target_": "optuna.samplers.TPESampler", "seed": None}


@dataclass
class OptunaSweeperConf:
    """The keys under ``hydra.sweeper`` (see the module doc and docs/sweeps_and_wandb.md)."""

    _target_: str = "hydra_plugins.kdl_optuna_sweeper.sweeper.OptunaSweeper"
    # an Optuna sampler by _target_ and its arguments; seed: the same trials on every run
    sampler: Dict[str, Any] = field(default_factory=_tpe)  # noqa: UP006
    # what to do with the value each job returns: minimize or maximize
    direction: str = "minimize"
    # trials in this run, launched n_jobs at a time (n_jobs > 1 for a parallel launcher:
    # the sampler proposes each batch before it sees the batch's results)
    n_trials: int = 20
    n_jobs: int = 1
    # with storage (e.g. sqlite:///optuna.db) a study of this name is continued if it exists
    study_name: Optional[str] = None  # noqa: UP045
    storage: Optional[str] = None  # noqa: UP045
    # key -> search space: interval(1, 16), tag(log, interval(1, 16)), choice(a, b), range(...)
    params: Optional[Dict[str, Any]] = None  # noqa: UP006, UP045


ConfigStore.instance().store(
    group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="kdl_optuna_sweeper"
)
