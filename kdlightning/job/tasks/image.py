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
from kdlightning.distill.logit_store import LAYOUT_VERSION, LogitTable, check_topk, to_layout
from kdlightning.distill.logit_store import tables as logit_tables
from kdlightning.distill.modules import ClassifierModule, DistillationModule
from kdlightning.distill.teacher import (
    check_logit_rows,
    choose_teacher_logits,
    compute_teacher_logits,
)
from kdlightning.figures import write_figures
from kdlightning.job import progress, tracking
from kdlightning.job import results as results_io
from kdlightning.job.build import build_method, build_model, method_class, optimizer_factories
from kdlightning.job.cache import TENSOR_FILES, logits_key_inputs
from kdlightning.job.distributed import is_global_zero
from kdlightning.job.tasks.base import Distiller, Job, Task

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
    images for 3 batches). ``kd.logits_topk`` makes ``auto`` cached: only stored logits are
    truncated to the top k (and refused, with the reason, where cached logits cannot serve)."""
    # kd.mix: the teacher must see the mixed images, as it must see random augmented views.
    varies = bool(dm.augments) or cfg.kd.get("mix", "none") not in (None, "none")
    mode = cfg.kd.get("teacher_logits", "online")
    if mode == "auto" and cfg.kd.get("logits_topk") is not None:
        mode = "cached"
    elif mode == "auto" and progress.limited(cfg.trainer):
        return choose_teacher_logits("online", needs_features, varies)
    return choose_teacher_logits(
        mode, needs_features, varies,
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
        token_level = getattr(method_class(cfg.kd), "token_level", False) if "kd" in cfg else False
        if cfg.get("task", "distill") == "distill" and token_level:
            raise ValueError(
                f"kd={method} is a token-level method for language models, but data="
                f"{type(dm).__name__} is not text; use data=pydocs or data=text_files (e.g. "
                "experiment=lm_pydocs), or an image method such as kd=kd"
            )
        if cfg.get("task", "distill") == "distill":  # k <= the classes: said before the teacher
            check_topk(cfg.kd.get("logits_topk"), dm.num_classes)

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
        if getattr(method_class(cfg.kd), "cohort", False):  # kd=dml: students, no teacher
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
        logits: dict[str, LogitTable] | None = None
        logits_info: dict[str, Any] = {"mode": "online"}
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

    def _cached_logits(self, job: Job) -> tuple[dict[str, LogitTable], dict[str, Any]]:
        """The teacher's logits in the stored layout ``kd.logits_dtype`` / ``kd.logits_topk``
        (``kdlightning.distill.logit_store``), from the cache (memory-mapped) or computed."""
        kd, teacher, dm = job.cfg.kd, job.teacher, job.dm
        topk = check_topk(kd.get("logits_topk"), dm.num_classes)
        dtype = str(kd.get("logits_dtype", "float32"))
        layout = {"layout": LAYOUT_VERSION, "dtype": dtype, "topk": topk}
        key = {**logits_key_inputs(job.cfg, teacher, job.cache.data_files), "store": layout}
        start = time.perf_counter()
        shown = bool(job.cfg.trainer.get("enable_progress_bar", True))
        bar = functools.partial(progress.iterate, enabled=shown)

        def compute() -> dict[str, Tensor]:
            sizes = ", ".join(f"{len(dm.indexed(s))} {s}" for s in ("train", "val", "test"))
            log.info("Computing the teacher's logits once (%s samples)", sizes)
            return to_layout(compute_teacher_logits(teacher, dm, progress=bar), dtype, topk)

        logits, info = job.cache.tensors("logits", key, compute, mmap=True)
        sizes = {split: len(dm.indexed(split)) for split in ("train", "val", "test")}
        check_logit_rows(logits, sizes, info.get("entry", "the teacher-logits cache"))
        # mapped from the entry (a hit, or rank 0 after storing): a ddp_spawn child maps it too
        mapped = "entry" in info and (info["hit"] or is_global_zero())
        path = str(Path(info["entry"]) / TENSOR_FILES["safetensors"]) if mapped else None
        stored = logit_tables(logits, dm.num_classes, path)
        nbytes = sum(t.nbytes for t in stored.values())
        return stored, {"mode": "cached", "seconds": time.perf_counter() - start, "cache": info,
                        **layout, "bytes": nbytes}  # fmt: skip

    def _mutual(self, job: Job) -> Distiller:
        """A cohort of students trained together (``kd=dml``: the method says how many and
        builds their module); student 0 is shipped (its ``method``; the cohort's test accuracies
        under it). ``job.teacher`` is not used: the teacher stage still runs, for the comparison
        only."""
        cfg, dm = job.cfg, job.dm
        method = build_method(cfg.kd)
        k = method.num_students
        log.info("%s: %d students (T=%g), no teacher", type(method).__name__, k,
                 method.temperature)  # fmt: skip
        students = build_cohort(job, k)
        module = method.module(students, num_classes=dm.num_classes, **optimizer_factories(cfg))

        def cohort(metrics: Mapping[str, Any]) -> dict[str, Any]:
            accs = [metrics["test/acc"], *(metrics[f"test/acc_{i}"] for i in range(1, k))]
            return {method.name: {"num_students": k, "temperature": method.temperature,
                                  "test_acc": accs}}  # fmt: skip

        return Distiller(students[0], module, {"method": method.name}, cohort)

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
