"""Building blocks of the main job, each driven by the composed Hydra config.

``build_model`` -> ``make_trainer`` -> ``fit_and_test``: kept apart from ``train.py`` so that
notebooks and tests can run one stage (say, only the teacher) without the whole job.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from kdlightning import tracking
from kdlightning.data.base import ClassificationDataModule
from kdlightning.distributed import track
from kdlightning.models.utils import check_model_output

log = logging.getLogger(__name__)


def build_model(model_cfg: DictConfig, dm: ClassificationDataModule, role: str) -> nn.Module:
    """Instantiate ``model_cfg`` for the data module's classes and input shape, and check it."""
    if "_target_" not in model_cfg:
        raise ValueError(f"the {role} config has no model._target_; see conf/{role}/ for examples")
    try:
        model = instantiate(
            model_cfg, num_classes=dm.num_classes, input_shape=list(dm.input_shape), _convert_="all"
        )
    except InstantiationException as err:
        # Hydra wraps the builder's own error; a bad value (e.g. a 1-D model for images) should
        # read as one, naming the role and the data, not as a Hydra internals traceback.
        cause = err.__cause__ or err
        raise ValueError(
            f"cannot build the {role} model {model_cfg._target_} for data with "
            f"{dm.num_classes} classes and input shape {tuple(dm.input_shape)}: {cause}"
        ) from err
    check_model_output(model, dm.num_classes, dm.input_shape, role)
    return model


def make_callbacks(cfg: DictConfig, stage_dir: Path) -> list[L.Callback]:
    """Instantiate ``cfg.callbacks``; callbacks with a ``dirpath`` write under the stage's dir."""
    callbacks = []
    for name, cb_cfg in (cfg.get("callbacks") or {}).items():
        if cb_cfg is None:  # a callback switched off from the command line: callbacks.x=null
            continue
        if "_target_" not in cb_cfg:
            raise ValueError(f"callbacks.{name} has no _target_")
        extra = {"dirpath": str(stage_dir / "checkpoints")} if "dirpath" in cb_cfg else {}
        callbacks.append(instantiate(cb_cfg, **extra))
    return callbacks


def make_loggers(cfg: DictConfig, stage: str) -> list[Any]:
    """Instantiate ``cfg.logger``: one logger per entry, each stage under its own version."""
    loggers = []
    for name, lg_cfg in (cfg.get("logger") or {}).items():
        if lg_cfg is None:
            continue
        if "_target_" not in lg_cfg:
            raise ValueError(f"logger.{name} has no _target_")
        target = str(lg_cfg._target_)
        # CSV and TensorBoard take the stage as the version sub-folder: <save_dir>/<name>/<stage>.
        extra = {"version": stage} if target.endswith(("CSVLogger", "TensorBoardLogger")) else {}
        if target.endswith("WandbLogger"):  # one W&B run per stage, grouped per sweep
            loggers.append(tracking.wandb_logger(cfg, lg_cfg, stage))
            continue
        loggers.append(instantiate(lg_cfg, **extra))
    return loggers


def make_trainer(cfg: DictConfig, stage: str, output_dir: Path, **overrides: Any) -> L.Trainer:
    """A Trainer from ``cfg.trainer`` with this stage's callbacks, loggers and directory."""
    stage_dir = output_dir / stage
    loggers = make_loggers(cfg, stage)
    trainer = instantiate(
        cfg.trainer,
        callbacks=make_callbacks(cfg, stage_dir),
        logger=loggers or False,
        default_root_dir=str(stage_dir),
        **overrides,
    )
    return track(trainer)  # the job's end waits for the DDP processes it may start


def fit_and_test(
    trainer: L.Trainer, module: L.LightningModule, dm: ClassificationDataModule
) -> dict[str, Any]:
    """Fit, then validate and test the best checkpoint; returns ``split/name`` metrics.

    The best checkpoint is chosen on validation accuracy by the checkpoint callback; the test
    set is touched once, after training, by that checkpoint only.
    """
    trainer.fit(module, datamodule=dm)
    best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
    return {**evaluate(trainer, module, dm, ckpt_path=best), "checkpoint": best}


def evaluate(
    trainer: L.Trainer,
    module: L.LightningModule,
    dm: ClassificationDataModule,
    ckpt_path: str | None = None,
) -> dict[str, Any]:
    """Validate and test ``module`` (loading ``ckpt_path`` first, if given); ``split/name`` keys."""
    metrics: dict[str, Any] = {}
    for run in (trainer.validate, trainer.test):
        for result in run(module, datamodule=dm, ckpt_path=ckpt_path, verbose=False):
            metrics.update({k: float(v) for k, v in result.items()})
    tracking.summarize(trainer.loggers, metrics)
    return metrics


def resolved(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain, fully resolved Python containers (for results and loggers)."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
