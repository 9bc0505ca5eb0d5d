"""Builders: turn parts of the composed Hydra config into objects (models, methods, optimizers,
trainers).

    from kdlightning.job.build import build_method, build_model, make_trainer, optimizer_factories
    student = build_model(cfg.student.model, dm, "student")
    module = ClassifierModule(student, num_classes=dm.num_classes, **optimizer_factories(cfg))
    method = build_method(cfg.kd, teacher, student, dm.input_shape, num_train=len(dm.train_set))
    trainer = make_trainer(cfg, "baseline", output_dir)

Nothing here trains; ``kdlightning.job.stages`` composes these into the job's stages. Loggers and
callbacks are instantiated generically from ``cfg.logger`` / ``cfg.callbacks`` (any Lightning
logger or callback works); the only per-class policy, W&B's, lives in ``kdlightning.job.tracking``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.strategies import StrategyRegistry
from omegaconf import DictConfig, OmegaConf
from torch import nn

from kdlightning.data.base import ClassificationDataModule
from kdlightning.distill.methods import ArgumentError, Method
from kdlightning.job import tracking
from kdlightning.job.keys import KD_JOB_KEYS
from kdlightning.models.utils import check_model_output


def build_model(model_cfg: DictConfig, dm: ClassificationDataModule, role: str) -> nn.Module:
    """Instantiate ``model_cfg`` for the data module's classes and input shape, and check it.
    (Language models: :func:`kdlightning.job.tasks.text.build_lm`.)"""
    if "_target_" not in model_cfg:
        raise ValueError(f"the {role} config has no model._target_; see conf/model/ for examples")
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


#: kd.* keys the job reads itself: what the method is called (reports, cache keys, results) and
#: where the teacher's outputs come from. The builder sets them aside.
JOB_KEYS = KD_JOB_KEYS
#: What the job supplies to a method whose constructor declares it (never from the config).
FROM_JOB = ("teacher", "student", "input_shape", "num_train")


def method_class(kd_cfg: Mapping[str, Any]) -> type:
    """The class ``kd._target_`` names; ``ValueError`` when absent or not importable."""
    name = kd_cfg.get("method", "kd")
    target = kd_cfg.get("_target_")
    if not target:
        raise ValueError(
            f"kd.method={name} has no kd._target_ (the method's class); pick a method with "
            "kd=<name> (conf/kd/<name>.yaml names its class)"
        )
    try:
        return get_class(str(target))
    except Exception as err:
        raise ValueError(f"kd._target_={target!r} is not an importable class: {err}") from None


def method_needs(kd_cfg: Mapping[str, Any]) -> tuple[str, ...]:
    """What the method's constructor takes from the job (:data:`FROM_JOB`), e.g. the models."""
    params = inspect.signature(method_class(kd_cfg)).parameters
    return tuple(k for k in FROM_JOB if k in params)


def build_method(
    kd_cfg: Mapping[str, Any],
    teacher: nn.Module | None = None,
    student: nn.Module | None = None,
    input_shape: Sequence[int] | None = None,
    num_train: int | None = None,
) -> Method:
    """The method ``kd._target_`` names, built with the other ``kd.*`` keys (but
    :data:`JOB_KEYS`) as its keyword arguments; its constructor checks them.

    ``teacher``, ``student``, ``input_shape`` (feature methods: their layers are probed with one
    dummy forward, so a wrong path fails here) and ``num_train`` (the training split's size, for
    a method keyed by sample index) are passed to the classes whose constructor declares them.
    A bad value raises ``ValueError`` naming its key: ``kd.alpha=2: alpha must lie in [0, 1]``.
    """
    cls = method_class(kd_cfg)
    name = kd_cfg.get("method", "kd")
    params = inspect.signature(cls).parameters
    given = {"teacher": teacher, "student": student, "input_shape": input_shape,
             "num_train": num_train}  # fmt: skip
    extra = {k: v for k, v in given.items() if k in params}
    if any(extra.get(k, 0) is None for k in ("teacher", "student", "input_shape")):
        raise ValueError(f"kd.method={name} reads features: build it with the teacher, the "
                         "student and the data's input_shape")  # fmt: skip
    if extra.get("num_train", 0) is None:
        raise ValueError(f"kd.method={name} keys its state by sample index: build it with "
                         "num_train (the training split's size)")  # fmt: skip
    keys = [str(k) for k in kd_cfg if k not in JOB_KEYS and k != "_target_"]
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    valid = [k for k in params if k not in FROM_JOB]
    unknown = [k for k in keys if k not in params or k in FROM_JOB]
    if unknown and not takes_any:
        raise ValueError(
            f"kd.{unknown[0]} is not a setting of kd={name} ({cls.__name__} takes: "
            f"{', '.join(valid)}); fix the name or remove it"
        )
    for key, p in params.items():
        required = p.default is inspect.Parameter.empty and p.kind in (
            inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)  # fmt: skip
        if required and key not in keys and key not in extra:
            raise ValueError(f"kd.method={name} needs kd.{key}; set kd.{key}=...")
    try:
        # _partial_: the models go to the constructor as they are (no config copy of them)
        factory = instantiate({k: kd_cfg[k] for k in ("_target_", *keys)}, _partial_=True,
                              _convert_="all")  # fmt: skip
        return factory(**extra)
    except ArgumentError as err:
        raise ValueError(err.named(f"kd.{err.key}")) from None


def optimizer_factories(cfg: DictConfig) -> dict[str, Any]:
    """``optimizer`` / ``scheduler`` factories (``_partial_: true``) from ``cfg.optim``."""
    optim = cfg.get("optim") or {}
    return {
        "optimizer": instantiate(optim["optimizer"]) if optim.get("optimizer") else None,
        "scheduler": instantiate(optim["scheduler"]) if optim.get("scheduler") else None,
    }


def _entries(cfg: DictConfig, group: str) -> list[tuple[str, DictConfig]]:
    """The enabled entries of a dict-of-configs group (``callbacks.x=null`` switches one off)."""
    out = []
    for name, entry in (cfg.get(group) or {}).items():
        if entry is None:
            continue
        if "_target_" not in entry:
            raise ValueError(f"{group}.{name} has no _target_")
        out.append((str(name), entry))
    return out


def make_callbacks(cfg: DictConfig, stage_dir: Path) -> list[L.Callback]:
    """Instantiate ``cfg.callbacks``; callbacks with a ``dirpath`` write under the stage's dir.

    A progress bar entry (``callbacks.progress_bar``) is left out when
    ``trainer.enable_progress_bar=false``: Lightning refuses a bar callback with the bar off."""
    callbacks = [
        instantiate(cb, **({"dirpath": str(stage_dir / "checkpoints")} if "dirpath" in cb else {}))
        for _, cb in _entries(cfg, "callbacks")
    ]
    if cfg.trainer.get("enable_progress_bar", True):
        return callbacks
    return [cb for cb in callbacks if not isinstance(cb, ProgressBar)]


def make_loggers(cfg: DictConfig, stage: str) -> list[Any]:
    """Instantiate ``cfg.logger``, each stage its own run/version of every logger.

    Loggers that take a ``version`` (CSV, TensorBoard) write to ``<save_dir>/<name>/<stage>``;
    ``kdlightning.job.tracking.stage_kwargs`` adds W&B's per-stage run settings.
    """
    loggers = []
    for _, lg in _entries(cfg, "logger"):
        cls = get_class(str(lg._target_))
        extra = tracking.stage_kwargs(cls, lg, cfg, stage)
        if extra is None and "version" in inspect.signature(cls).parameters:
            extra = {"version": stage}
        # _partial_: W&B's extra arguments include "config", a name instantiate() keeps for itself
        loggers.append(tracking.drop_anonymous(instantiate(lg, _partial_=True)(**(extra or {}))))
    return loggers


def distributed_strategy(cfg: DictConfig) -> Any:
    """``trainer.strategy`` with the process-group timeout ``distributed.timeout_s`` when it
    names a strategy that takes one (ddp, fsdp, ...); ``None`` to leave it as configured.

    Lightning's default timeout is 30 minutes: a rank whose peer died or hangs would wait that
    long in a collective, deaf to SIGTERM. A strategy given as an object is left as it is."""
    strategy = cfg.trainer.get("strategy", "auto")
    timeout_s = OmegaConf.select(cfg, "distributed.timeout_s", default=None)
    if not isinstance(strategy, str) or timeout_s is None or strategy not in StrategyRegistry:
        return None
    entry = StrategyRegistry[strategy]
    if "timeout" not in inspect.signature(entry["strategy"]).parameters:
        return None
    params = {**entry["init_params"], "timeout": timedelta(seconds=float(timeout_s))}
    return entry["strategy"](**params)


def _quiet_sigterm_notifier(trainer: L.Trainer) -> None:
    # Lightning's SIGTERM handler runs dist.broadcast inside the signal handler, on whatever
    # rank got the signal, while the other ranks may be in another collective: a deadlock
    # (issue 19). Keep what it does that helps - pass the signal to the children it started -
    # and leave the rest to kdlightning.job.signals (Interrupted, exit 128 + signum).
    connector = trainer._signal_connector

    def notify(signum: int, frame: Any) -> None:
        launcher = trainer.strategy.launcher
        if not connector.received_sigterm and launcher is not None:
            launcher.kill(signum)
        connector.received_sigterm = True

    connector._sigterm_notifier_fn = notify


def make_trainer(cfg: DictConfig, stage: str, output_dir: Path, **overrides: Any) -> L.Trainer:
    """A Trainer from ``cfg.trainer`` with this stage's callbacks, loggers and directory."""
    stage_dir = output_dir / stage
    loggers = make_loggers(cfg, stage)
    strategy = distributed_strategy(cfg)
    if strategy is not None:
        overrides = {"strategy": strategy, **overrides}
    trainer = instantiate(
        cfg.trainer,
        callbacks=make_callbacks(cfg, stage_dir),
        logger=loggers or False,
        default_root_dir=str(stage_dir),
        **overrides,
    )
    _quiet_sigterm_notifier(trainer)
    return trainer
