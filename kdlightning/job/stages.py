"""The job's three stages, one signature each: ``stage(job) -> (model, metrics)``.

    teacher_stage    train the teacher, or load it (teacher.checkpoint / teacher.pretrained)
    baseline_stage   the student alone on hard labels: what distillation has to beat
    distill_stage    the student learning from the frozen teacher (online or cached outputs)

The stages are the same for every kind of data: what differs between image classification and
language modelling (models, Lightning modules, checks, the table) comes from ``job.task``
(:mod:`kdlightning.job.tasks`). ``kdlightning.job.run`` runs them in that order through the
cache; notebooks and tests can run one alone. Every stage seeds the same way, so the baseline and
the distilled student start from the same initial weights and see the same data order.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig
from torch import nn

from kdlightning.job import tracking
from kdlightning.job.build import make_trainer
from kdlightning.job.cache import StageCache
from kdlightning.job.tasks import Task
from kdlightning.models.weights import load_weights

log = logging.getLogger(__name__)

StageResult = tuple[nn.Module, dict[str, Any]]


@dataclass
class Job:
    """What the stages of one job share: config, data, task, run folder, cache, and what they
    made."""

    cfg: DictConfig
    dm: Any
    out: Path
    cache: StageCache
    task: Task
    trainers: list[L.Trainer] = field(default_factory=list)  # DDP clean-up waits for these
    teacher: nn.Module | None = None
    resume: bool = False  # continue interrupted stages from their last.ckpt

    def last_checkpoint(self, stage: str) -> str | None:
        """``<stage>/checkpoints/last.ckpt`` when resuming and it exists, else ``None``."""
        last = self.out / stage / "checkpoints" / "last.ckpt"
        return str(last) if self.resume and last.is_file() else None

    def trainer(self, stage: str) -> L.Trainer:
        trainer = make_trainer(self.task.trainer_config(self.cfg), stage, self.out)
        self.trainers.append(trainer)
        return trainer

    def build(self, role: str) -> nn.Module:
        return self.task.build(self.cfg[role].model, self.dm, role)


# --- evaluation ---------------------------------------------------------------------------------
def fit_and_test(
    trainer: L.Trainer,
    module: L.LightningModule,
    dm: L.LightningDataModule,
    resume_from: str | None = None,
) -> dict:
    """Fit (continuing from ``resume_from``, a last.ckpt, if given), then validate and test the
    best checkpoint; ``split/name`` metrics and ``fit_seconds``.

    The best checkpoint is chosen on the validation metric by the checkpoint callback; the test
    set is touched once, after training, by that checkpoint only.
    """
    if resume_from:
        log.info("Resuming %s from %s", Path(trainer.default_root_dir).name, resume_from)
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=resume_from, weights_only=True)
    fit_seconds = time.perf_counter() - start
    best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
    metrics = evaluate(trainer, module, dm, ckpt_path=best)
    return {**metrics, "fit_seconds": fit_seconds, "checkpoint": best}


def evaluate(
    trainer: L.Trainer,
    module: L.LightningModule,
    dm: L.LightningDataModule,
    ckpt_path: str | None = None,
) -> dict[str, Any]:
    """Validate and test ``module`` (loading ``ckpt_path`` first, if given); ``split/name`` keys."""
    metrics: dict[str, Any] = {}
    for run in (trainer.validate, trainer.test):
        results = run(module, datamodule=dm, ckpt_path=ckpt_path, verbose=False, weights_only=True)
        for result in results:
            metrics.update({k: float(v) for k, v in result.items()})
    tracking.summarize(trainer.loggers, metrics)
    return metrics


# --- the stages ---------------------------------------------------------------------------------
def teacher_stage(job: Job) -> StageResult:
    """Load the teacher (``teacher.checkpoint`` / ``teacher.pretrained``) or train it on every
    training label; records ``teacher/val_<metric>`` and warns when it is no better than chance."""
    cfg, dm, task = job.cfg, job.dm, job.task
    L.seed_everything(cfg.seed, workers=True)
    teacher = job.build("teacher")
    module = task.supervised_module(teacher, job)
    trainer = job.trainer("teacher")
    task.set_train_mode(dm, "full")
    ckpt = cfg.teacher.get("checkpoint")
    if ckpt:
        log.info("Loading the teacher from %s", ckpt)
        load_weights(teacher, ckpt, role="teacher")
        metrics = {**evaluate(trainer, module, dm), "checkpoint": str(Path(ckpt).expanduser())}
    elif cfg.teacher.get("pretrained", False):
        # The model came with its weights (e.g. torchvision's, from the local cache): use as is.
        log.info("Using the pretrained teacher as built (teacher.pretrained=true), not training")
        metrics = evaluate(trainer, module, dm)
    else:
        log.info("Training the teacher%s", task.model_noun)
        metrics = fit_and_test(trainer, module, dm, job.last_checkpoint("teacher"))
    task.after_teacher(metrics, trainer, dm)
    return teacher.eval(), metrics


def baseline_stage(job: Job) -> StageResult:
    """Train the student alone on the hard labels it has (``data.num_labeled`` of them, or all)."""
    task = job.task
    log.info("Training the student%s alone on hard labels (baseline)", task.model_noun)
    L.seed_everything(job.cfg.seed, workers=True)  # same init and data order as the distilled run
    student = job.build("student")
    module = task.supervised_module(student, job)
    task.set_train_mode(job.dm, "labeled")
    metrics = fit_and_test(job.trainer("baseline"), module, job.dm, job.last_checkpoint("baseline"))
    task.check_student(metrics, job.dm)
    return student, metrics


def distill_stage(job: Job) -> StageResult:
    """Distill ``job.teacher`` into a fresh student with the method ``kd`` names: the task builds
    the student and the Lightning module (a frozen teacher and one method, or a cohort of
    students for mutual learning); the distillation term on every training sample,
    cross-entropy on the labeled ones."""
    if job.teacher is None:
        raise RuntimeError("distill_stage needs job.teacher: run teacher_stage first")
    task = job.task
    distiller = task.distiller(job)
    task.set_train_mode(job.dm, "transfer")
    metrics = fit_and_test(
        job.trainer("distilled"), distiller.module, job.dm, job.last_checkpoint("distilled")
    )
    task.check_student(metrics, job.dm)
    return distiller.student, {**metrics, **distiller.info(metrics)}
