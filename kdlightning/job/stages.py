"""The job's three stages, one signature each: ``stage(job) -> (model, metrics)``.

    teacher_stage    train the teacher, or load it (teacher.checkpoint / teacher.pretrained)
    baseline_stage   the student alone on hard labels: what distillation has to beat
    distill_stage    the student learning from the frozen teacher (online or cached logits)

``kdlightning.job.run`` runs them in that order through the cache; notebooks and tests can run
one alone. Every stage seeds the same way, so the baseline and the distilled student start
from the same initial weights and see the same data order.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from kdlightning.data.base import ClassificationDataModule
from kdlightning.distill.methods import build_method
from kdlightning.distill.modules import ClassifierModule, DistillationModule
from kdlightning.job import tracking
from kdlightning.job.build import build_model, make_trainer, optimizer_factories
from kdlightning.job.cache import StageCache, logits_key_inputs
from kdlightning.models.weights import load_weights

log = logging.getLogger(__name__)

StageResult = tuple[nn.Module, dict[str, Any]]
TEACHER_LOGITS = ("auto", "online", "cached")

# A model whose validation accuracy is below this multiple of chance (1 / classes) is useless.
NEAR_CHANCE_FACTOR = 1.5


@dataclass
class Job:
    """What the stages of one job share: config, data, run folder, cache, and what they made."""

    cfg: DictConfig
    dm: ClassificationDataModule
    out: Path
    cache: StageCache
    trainers: list[L.Trainer] = field(default_factory=list)  # DDP clean-up waits for these
    teacher: nn.Module | None = None
    resume: bool = False  # continue interrupted stages from their last.ckpt

    def last_checkpoint(self, stage: str) -> str | None:
        """``<stage>/checkpoints/last.ckpt`` when resuming and it exists, else ``None``."""
        last = self.out / stage / "checkpoints" / "last.ckpt"
        return str(last) if self.resume and last.is_file() else None

    def trainer(self, stage: str) -> L.Trainer:
        trainer = make_trainer(self.cfg, stage, self.out)
        self.trainers.append(trainer)
        return trainer

    def build(self, role: str) -> nn.Module:
        return build_model(self.cfg[role].model, self.dm, role)


# --- evaluation ---------------------------------------------------------------------------------
def fit_and_test(
    trainer: L.Trainer,
    module: L.LightningModule,
    dm: L.LightningDataModule,
    resume_from: str | None = None,
) -> dict:
    """Fit (continuing from ``resume_from``, a last.ckpt, if given), then validate and test the
    best checkpoint; ``split/name`` metrics and ``fit_seconds``.

    The best checkpoint is chosen on validation accuracy by the checkpoint callback; the test
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


def is_near_chance(val_acc: float, num_classes: int) -> bool:
    """True when ``val_acc`` is at most :data:`NEAR_CHANCE_FACTOR` times chance accuracy."""
    return val_acc <= NEAR_CHANCE_FACTOR / num_classes


def warn_if_near_chance(role: str, metrics: dict[str, Any], num_classes: int) -> None:
    """Set ``<role>/near_chance`` in ``metrics``; a loud warning when it is true."""
    val_acc = float(metrics["val/acc"])
    metrics[f"{role}/near_chance"] = near = is_near_chance(val_acc, num_classes)
    if not near:
        return
    message = (
        f"THE {role.upper()} IS NO BETTER THAN CHANCE: validation accuracy {val_acc:.3f} with "
        f"{num_classes} classes (chance {1.0 / num_classes:.3f}). "
        + (
            "Distilling from it will not help the student. Check teacher.checkpoint (trained on "
            "this data set?) or train the teacher longer (trainer.max_epochs)."
            if role == "teacher"
            else "Its results are not worth reporting: train longer or check optim.optimizer.lr."
        )
    )
    banner = "!" * 80
    log.warning("\n%s\n%s\n%s", banner, message, banner)
    warnings.warn(message, UserWarning, stacklevel=2)


# --- the stages ---------------------------------------------------------------------------------
def teacher_stage(job: Job) -> StageResult:
    """Load the teacher (``teacher.checkpoint`` / ``teacher.pretrained``) or train it on every
    training label; logs ``teacher/val_acc`` and warns when it is no better than chance."""
    cfg, dm = job.cfg, job.dm
    L.seed_everything(cfg.seed, workers=True)
    teacher = job.build("teacher")
    module = ClassifierModule(teacher, num_classes=dm.num_classes, **optimizer_factories(cfg))
    trainer = job.trainer("teacher")
    dm.set_train_mode("full")
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
        log.info("Training the teacher")
        metrics = fit_and_test(trainer, module, dm, job.last_checkpoint("teacher"))
    metrics["teacher/val_acc"] = float(metrics["val/acc"])
    for logger in trainer.loggers:
        logger.log_metrics({"teacher/val_acc": metrics["val/acc"]}, step=trainer.global_step)
        logger.save()
    log.info("Teacher validation accuracy: %.4f", metrics["val/acc"])
    warn_if_near_chance("teacher", metrics, dm.num_classes)
    return teacher.eval(), metrics


def baseline_stage(job: Job) -> StageResult:
    """Train the student alone on the hard labels it has (``data.num_labeled`` of them, or all)."""
    log.info("Training the student alone on hard labels (baseline)")
    L.seed_everything(job.cfg.seed, workers=True)  # same init and data order as the distilled run
    student = job.build("student")
    module = ClassifierModule(
        student, num_classes=job.dm.num_classes, **optimizer_factories(job.cfg)
    )
    job.dm.set_train_mode("labeled")
    metrics = fit_and_test(job.trainer("baseline"), module, job.dm, job.last_checkpoint("baseline"))
    warn_if_near_chance("student", metrics, job.dm.num_classes)
    return student, metrics


def check_teacher_logits(mode: object) -> str:
    """Return ``mode`` if it is one of :data:`TEACHER_LOGITS`, else a ``ValueError`` naming them."""
    if mode not in TEACHER_LOGITS:
        raise ValueError(
            f"kd.teacher_logits={mode!r} is not one of {', '.join(TEACHER_LOGITS)}; cached runs "
            "the teacher once before training, online on every batch"
        )
    return str(mode)


def cached_feature_message(method: str) -> str:
    """Why ``kd.teacher_logits=cached`` cannot serve a feature method, and the fix."""
    return (
        f"kd.teacher_logits=cached with kd={method}: {method} reads the teacher's intermediate "
        "layers on every batch, which stored logits do not hold. Use kd.teacher_logits=online "
        "(or auto, which picks online for feature methods)."
    )


def teacher_logits_mode(
    cfg: DictConfig, dm: ClassificationDataModule, needs_features: bool = False
) -> str:
    """``online`` or ``cached`` from ``kd.teacher_logits``; refuses cached logits when the
    method reads the teacher's intermediate layers (``needs_features``), which stored logits do
    not hold, or when the training inputs are random (augmentation), since stored outputs would
    not match them."""
    mode = check_teacher_logits(cfg.kd.get("teacher_logits", "online"))
    if mode == "auto":
        return "online" if needs_features or dm.augments else "cached"
    if mode == "cached" and needs_features:
        raise ValueError(cached_feature_message(cfg.kd.get("method", "kd")))
    if mode == "cached" and dm.augments:
        raise ValueError(
            f"kd.teacher_logits=cached with {type(dm).__name__}, whose training inputs are "
            "randomly augmented: logits stored once would belong to other crops and flips than "
            "the student sees. Use kd.teacher_logits=online (or auto), or switch augmentation "
            "off (data.augment=false where the data set has it)."
        )
    return mode


@torch.no_grad()
def compute_teacher_logits(teacher: nn.Module, dm: ClassificationDataModule) -> dict[str, Tensor]:
    """The teacher's logits on every sample of every split, in sample order (eval mode)."""
    use_cuda = torch.cuda.is_available()
    device = torch.device("cuda" if use_cuda else "cpu")
    model = teacher.to(device).eval()
    out = {}
    for split in ("train", "val", "test"):
        rows = []
        for batch in dm.loader(dm.indexed(split), train=False, shard=False):
            rows.append(model(batch[0].to(device)).float().cpu())
        out[split] = torch.cat(rows)
    teacher.to("cpu")
    return out


def _cached_logits(job: Job) -> tuple[dict[str, Tensor], dict[str, Any]]:
    assert job.teacher is not None
    key = logits_key_inputs(job.cfg, job.teacher)
    start = time.perf_counter()
    teacher = job.teacher
    logits, info = job.cache.tensors("logits", key, lambda: compute_teacher_logits(teacher, job.dm))
    return logits, {"mode": "cached", "seconds": time.perf_counter() - start, "cache": info}


def distill_stage(job: Job) -> StageResult:
    """Distill ``job.teacher`` into a fresh student with the method ``kd.method`` names
    (``kdlightning.distill.methods``; ``dml``: ``kdlightning.distill.mutual``): the
    distillation term on every training sample, cross-entropy on the labeled ones."""
    cfg, dm = job.cfg, job.dm
    method_name = cfg.kd.get("method", "kd")
    if method_name == "dml":  # deep mutual learning: a cohort of students, no teacher
        from kdlightning.distill.mutual import (
            mutual_stage,  # lazy: kdlightning.distill.mutual imports this module
        )

        return mutual_stage(job)
    if job.teacher is None:
        raise RuntimeError("distill_stage needs job.teacher: run teacher_stage first")
    dm.setup("fit")
    L.seed_everything(cfg.seed, workers=True)
    student = job.build("student")
    # Built (and its layer paths probed) before anything else runs. fork_rng: initializing a
    # connector must not move the global random state, so the student's dropout masks stay the
    # baseline's. Feature methods read the teacher's layers: its logits are never cached then.
    with torch.random.fork_rng(devices=[]):
        method = build_method(cfg.kd, job.teacher, student, dm.input_shape)
    mode = teacher_logits_mode(cfg, dm, method.needs_features)
    logits, logits_info = (None, {"mode": "online"})
    if mode == "cached":
        logits, logits_info = _cached_logits(job)
    log.info("Distilling the student (kd=%s, T=%g, %s teacher logits)", method_name,
             method.temperature, mode)  # fmt: skip
    module = DistillationModule(
        job.teacher, student, num_classes=dm.num_classes, teacher_logits=logits,
        verify_cached=bool(cfg.kd.get("verify_cached_logits", False)), method=method,
        **optimizer_factories(cfg),
    )  # fmt: skip
    dm.set_train_mode("transfer")
    metrics = fit_and_test(job.trainer("distilled"), module, dm, job.last_checkpoint("distilled"))
    warn_if_near_chance("student", metrics, dm.num_classes)
    return student, {**metrics, "method": method_name, "teacher_logits": logits_info}
