"""Image (and 1-D signal) classification: the package's original task.

Teacher and baseline train as :class:`~kdlightning.distill.modules.ClassifierModule`; the
distilled student as a :class:`~kdlightning.distill.modules.DistillationModule` with the method
``kd`` names (teacher logits online or cached), or, for ``kd=dml``, a cohort of students in a
:class:`~kdlightning.distill.mutual.MutualLearningModule`. The table shows accuracy, size and
latency; the run gets PNG figures; the student can be exported.
"""

from __future__ import annotations

import functools
import logging
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from kdlightning.deploy.measure import benchmark_settings, measure_costs
from kdlightning.distill.functional import check_temperature
from kdlightning.distill.modules import ClassifierModule, DistillationModule
from kdlightning.distill.mutual import MutualLearningModule, check_num_students
from kdlightning.distill.teacher import (
    check_logit_rows,
    choose_teacher_logits,
    compute_teacher_logits,
)
from kdlightning.figures import write_figures
from kdlightning.job import progress, tracking
from kdlightning.job import results as results_io
from kdlightning.job.build import build_method, build_model, optimizer_factories
from kdlightning.job.cache import logits_key_inputs
from kdlightning.job.tasks.base import Distiller, Job, Task
from kdlightning.lm.losses import LM_METHODS

log = logging.getLogger(__name__)

# A model whose validation accuracy is below this multiple of chance (1 / classes) is useless.
NEAR_CHANCE_FACTOR = 1.5


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


def teacher_logits_mode(cfg: DictConfig, dm: Any, needs_features: bool = False) -> str:
    """``online`` or ``cached`` from ``kd.teacher_logits`` for this data module
    (:func:`kdlightning.distill.teacher.choose_teacher_logits`). ``auto`` in a run that sees a
    few batches only (``debug=fast``, ``fast_dev_run``, ``limit_train_batches``) is online: a
    pass over every sample would cost more than the whole run (33 s of 65k Fashion-MNIST
    images for 3 batches)."""
    # kd.mix: the teacher must see the mixed images, as it must see random augmented views.
    varies = bool(dm.augments) or cfg.kd.get("mix", "none") not in (None, "none")
    if cfg.kd.get("teacher_logits", "online") == "auto" and progress.limited(cfg.trainer):
        return choose_teacher_logits("online", needs_features, varies)
    return choose_teacher_logits(
        cfg.kd.get("teacher_logits", "online"), needs_features, varies,
        method=str(cfg.kd.get("method", "kd")), data=type(dm).__name__,
    )  # fmt: skip


def build_cohort(job: Job, num_students: int) -> list[nn.Module]:
    """``num_students`` students from the student config; student 0 seeded as the baseline.

    The peers come from seeds ``seed + 1, seed + 2, ...`` (different initial weights: identical
    peers would agree from the start and teach each other nothing). Student 0 is built last,
    right after ``seed_everything(seed)``, exactly as the baseline and the distilled student are
    built: same initial weights, and the same random state when training starts.
    """
    seed = int(job.cfg.seed)
    peers = []
    for i in range(1, num_students):
        L.seed_everything(seed + i, workers=True)
        peers.append(job.build("student"))
    L.seed_everything(seed, workers=True)
    return [job.build("student"), *peers]


class ImageTask(Task):
    """Classification of images or 1-D signals (``kdlightning.data``)."""

    def check(self, cfg: DictConfig, dm: Any) -> None:
        method = cfg.get("kd", {}).get("method", "kd")
        if cfg.get("task", "distill") == "distill" and method in LM_METHODS:
            raise ValueError(
                f"kd={method} is a token-level method for language models, but data="
                f"{type(dm).__name__} is not text; use data=pydocs or data=text_files (e.g. "
                "experiment=lm_pydocs), or an image method such as kd=kd"
            )

    def build(self, model_cfg: DictConfig, dm: Any, role: str) -> nn.Module:
        return build_model(model_cfg, dm, role)

    def supervised_module(self, model: nn.Module, job: Job) -> L.LightningModule:
        return ClassifierModule(
            model, num_classes=job.dm.num_classes, **optimizer_factories(job.cfg)
        )

    def set_train_mode(self, dm: Any, mode: str) -> None:
        dm.set_train_mode(mode)

    def after_teacher(self, metrics: dict[str, Any], trainer: L.Trainer, dm: Any) -> None:
        metrics["teacher/val_acc"] = float(metrics["val/acc"])
        for logger in trainer.loggers:
            logger.log_metrics({"teacher/val_acc": metrics["val/acc"]}, step=trainer.global_step)
            logger.save()
        log.info("Teacher validation accuracy: %.4f", metrics["val/acc"])
        warn_if_near_chance("teacher", metrics, dm.num_classes)

    def check_student(self, metrics: dict[str, Any], dm: Any) -> None:
        warn_if_near_chance("student", metrics, dm.num_classes)

    # --- distillation ---------------------------------------------------------------------------
    def distiller(self, job: Job) -> Distiller:
        cfg, dm = job.cfg, job.dm
        method_name = cfg.kd.get("method", "kd")
        if method_name == "dml":  # deep mutual learning: a cohort of students, no teacher
            return self._mutual(job)
        dm.setup("fit")
        L.seed_everything(cfg.seed, workers=True)
        student = job.build("student")
        # Built (and its layer paths probed) before anything else runs. fork_rng: initializing a
        # connector must not move the global random state, so the student's dropout masks stay
        # the baseline's. Feature methods read the teacher's layers: never cached logits then.
        with torch.random.fork_rng(devices=[]):
            method = build_method(cfg.kd, job.teacher, student, dm.input_shape,
                                  num_train=len(dm.indexed("train")))  # fmt: skip
        mode = teacher_logits_mode(cfg, dm, method.needs_features)
        logits, logits_info = (None, {"mode": "online"})
        if mode == "cached":
            logits, logits_info = self._cached_logits(job)
        log.info("Distilling the student (kd=%s, T=%g, %s teacher logits, mix=%s)", method_name,
                 method.temperature, mode, cfg.kd.get("mix", "none"))  # fmt: skip
        module = DistillationModule(
            job.teacher, student, num_classes=dm.num_classes, teacher_logits=logits,
            verify_cached=bool(cfg.kd.get("verify_cached_logits", False)), method=method,
            mix=str(cfg.kd.get("mix", "none")), mix_alpha=float(cfg.kd.get("mix_alpha", 1.0)),
            **optimizer_factories(cfg),
        )  # fmt: skip
        info = {"method": method_name, "teacher_logits": logits_info}
        if module.mix != "none":
            info["mix"] = {"mode": module.mix, "alpha": module.mix_alpha}
        return Distiller(student, module, info)

    def _cached_logits(self, job: Job) -> tuple[dict[str, Tensor], dict[str, Any]]:
        key = logits_key_inputs(job.cfg, job.teacher, job.cache.data_files)
        start = time.perf_counter()
        teacher, dm = job.teacher, job.dm
        shown = bool(job.cfg.trainer.get("enable_progress_bar", True))
        bar = functools.partial(progress.iterate, enabled=shown)

        def compute() -> dict[str, Tensor]:
            sizes = ", ".join(f"{len(dm.indexed(s))} {s}" for s in ("train", "val", "test"))
            log.info("Computing the teacher's logits once (%s samples)", sizes)
            return compute_teacher_logits(teacher, dm, progress=bar)

        logits, info = job.cache.tensors("logits", key, compute)
        sizes = {split: len(dm.indexed(split)) for split in logits}
        check_logit_rows(logits, sizes, info.get("entry", "the teacher-logits cache"))
        return logits, {"mode": "cached", "seconds": time.perf_counter() - start, "cache": info}

    def _mutual(self, job: Job) -> Distiller:
        """``kd.num_students`` students trained by deep mutual learning on the transfer set;
        student 0 is shipped (``method: dml``; the cohort's test accuracies under ``dml``).
        ``job.teacher`` is not used: the teacher stage still runs, for the comparison only."""
        cfg, dm = job.cfg, job.dm
        temperature = check_temperature(cfg.kd.temperature)
        k = check_num_students(cfg.kd.get("num_students", 2))
        log.info("Deep mutual learning: %d students (T=%g), no teacher", k, temperature)
        students = build_cohort(job, k)
        module = MutualLearningModule(
            students, temperature, num_classes=dm.num_classes, **optimizer_factories(cfg)
        )

        def cohort(metrics: Mapping[str, Any]) -> dict[str, Any]:
            accs = [metrics["test/acc"], *(metrics[f"test/acc_{i}"] for i in range(1, k))]
            return {"dml": {"num_students": k, "temperature": temperature, "test_acc": accs}}

        return Distiller(students[0], module, {"method": "dml"}, cohort)

    # --- what the job shows -----------------------------------------------------------------------
    def costs(self, cfg: DictConfig, model: nn.Module, dm: Any) -> dict[str, Any]:
        # every model timed in this one process, so the table's speed-ups compare like with like
        return measure_costs(model, dm.input_shape, **benchmark_settings(cfg.benchmark))

    def write(self, out: Path, results: dict[str, Any], weights: Mapping[str, nn.Module]) -> str:
        return results_io.write_job(out, results, weights)

    def log_comparison(self, results: Mapping[str, Any]) -> None:
        tracking.log_comparison(results)

    def figures(
        self,
        cfg: DictConfig,
        out: Path,
        results: Mapping[str, Any],
        models: Mapping[str, nn.Module],
        dm: Any,
    ) -> list[Path]:
        paths = write_figures(out, results, models["teacher"], dm)
        tracking.log_images(paths)
        return paths

    def can_export(self) -> bool:
        return True
