"""The task interface: what differs between image classification and language modelling
(:mod:`kdlightning.job.tasks` picks one per data module)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig
from torch import nn

# ``job`` below is a kdlightning.job.stages.Job (not imported: the stages import this module).
Job = Any


def _no_info(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {}


@dataclass
class Distiller:
    """What the distill stage trains: the ``student`` to ship, the Lightning ``module`` that
    trains it, and what to record beside its metrics (``fixed`` now, ``after(metrics)`` once
    it is tested)."""

    student: nn.Module
    module: L.LightningModule
    fixed: dict[str, Any] = field(default_factory=dict)
    after: Callable[[Mapping[str, Any]], dict[str, Any]] = _no_info

    def info(self, metrics: Mapping[str, Any]) -> dict[str, Any]:
        return {**self.fixed, **self.after(metrics)}


class Task:
    """The interface; :class:`~kdlightning.job.tasks.image.ImageTask` and
    :class:`~kdlightning.job.tasks.text.TextTask` implement it."""

    #: inserted in log lines: "Training the teacher{model_noun}"
    model_noun = ""
    #: the validation metric a sweeper optimizes, and whether higher is better
    objective_key = "val/acc"
    higher_is_better = True

    def check(self, cfg: DictConfig, dm: Any) -> None:
        """Start-up checks that need the data module (before anything trains)."""

    def prepare(self, job: Job) -> None:
        """Work before the first stage (set the data up, compare vocabularies, ...)."""

    def build(self, model_cfg: DictConfig, dm: Any, role: str) -> nn.Module:
        raise NotImplementedError

    def trainer_config(self, cfg: DictConfig) -> DictConfig:
        """The config the stage trainers are made from (callbacks may monitor another key)."""
        return cfg

    def supervised_module(self, model: nn.Module, job: Job) -> L.LightningModule:
        """The module that trains ``model`` alone (the teacher, or the student baseline)."""
        raise NotImplementedError

    def set_train_mode(self, dm: Any, mode: str) -> None:
        """Which training samples a stage sees: ``full``, ``labeled`` or ``transfer``."""

    def after_teacher(self, metrics: dict[str, Any], trainer: L.Trainer, dm: Any) -> None:
        """Record the teacher's validation figure (and warn when it is useless)."""

    def check_student(self, metrics: dict[str, Any], dm: Any) -> None:
        """Warn when a trained student is useless."""

    def distiller(self, job: Job) -> Distiller:
        raise NotImplementedError

    def costs(self, cfg: DictConfig, model: nn.Module, dm: Any) -> dict[str, Any]:
        """Size and speed of ``model``, measured in this process."""
        raise NotImplementedError

    def write(self, out: Path, results: dict[str, Any], weights: Mapping[str, nn.Module]) -> str:
        """Write results.json, comparison.md and the weights; returns the comparison."""
        raise NotImplementedError

    def log_comparison(self, results: Mapping[str, Any]) -> None:
        """The comparison into the open W&B run, if any."""

    def figures(
        self,
        cfg: DictConfig,
        out: Path,
        results: Mapping[str, Any],
        models: Mapping[str, nn.Module],
        dm: Any,
    ) -> list[Path]:
        """PNG figures of the run (none by default)."""
        return []

    def can_export(self) -> bool:
        return False
