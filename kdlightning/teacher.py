"""The teacher's life cycle: train it or load it, check it on validation, or train it alone.

    python -m kdlightning.train task=classify experiment=fashion_mnist   # train a teacher only
    python -m kdlightning.train experiment=fashion_mnist teacher.checkpoint=PATH  # distill from it

``task=classify`` trains the configured ``teacher.model`` on hard labels and writes its best
checkpoint (``teacher/checkpoints/best.ckpt``), ``teacher.pt`` (a plain state dict) and
``results.json``; both files are accepted by ``teacher.checkpoint``. A teacher is loaded from a
kdlightning/Lightning checkpoint, a plain state-dict file or, through
``teacher=torchvision teacher.model.weights=... teacher.pretrained=true``, torchvision weights in
the local cache (``pretrained=true``: evaluate the teacher as built instead of training it).

Before distilling, the teacher is evaluated on the validation split: its accuracy is logged as
``teacher/val_acc`` (to the stage's loggers and into results.json), and a teacher no better than
chance raises a loud warning, because distilling from it only teaches noise.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from kdlightning.checkpoints import load_weights
from kdlightning.compare import comparison_table
from kdlightning.data.base import ClassificationDataModule
from kdlightning.distributed import is_global_zero
from kdlightning.measure import measure_model
from kdlightning.module import ClassifierModule
from kdlightning.stages import build_model, evaluate, fit_and_test, make_trainer

log = logging.getLogger(__name__)

TASKS = ("distill", "classify")

# A teacher whose validation accuracy is below this multiple of chance (1 / classes) is useless.
NEAR_CHANCE_FACTOR = 1.5


def check_task(task: str) -> str:
    """Return ``task`` if it is one of :data:`TASKS`, else raise a ``ValueError`` naming them."""
    if task not in TASKS:
        raise ValueError(
            f"unknown task {task!r}; use task=distill (teacher -> student, the default) or "
            "task=classify (train teacher.model alone on hard labels)"
        )
    return task


def teacher_is_near_chance(val_acc: float, num_classes: int) -> bool:
    """True when ``val_acc`` is at most :data:`NEAR_CHANCE_FACTOR` times chance accuracy."""
    return val_acc <= NEAR_CHANCE_FACTOR / num_classes


def report_teacher(trainer: L.Trainer, metrics: dict[str, Any], num_classes: int) -> None:
    """Add ``teacher/val_acc`` to ``metrics`` and the trainer's loggers; warn if near chance."""
    val_acc = float(metrics["val/acc"])
    metrics["teacher/val_acc"] = val_acc
    metrics["teacher/near_chance"] = teacher_is_near_chance(val_acc, num_classes)
    for logger in trainer.loggers:
        logger.log_metrics({"teacher/val_acc": val_acc}, step=trainer.global_step)
        logger.save()
    log.info("Teacher validation accuracy: %.4f (chance %.4f)", val_acc, 1.0 / num_classes)
    if metrics["teacher/near_chance"]:
        message = (
            f"THE TEACHER IS NO BETTER THAN CHANCE: validation accuracy {val_acc:.3f} with "
            f"{num_classes} classes (chance {1.0 / num_classes:.3f}). Distilling from it will "
            "not help the student. Check teacher.checkpoint (trained on this data set?) or "
            "train the teacher longer (trainer.max_epochs)."
        )
        banner = "!" * 80
        log.warning("\n%s\n%s\n%s", banner, message, banner)
        warnings.warn(message, UserWarning, stacklevel=2)


def obtain_teacher(
    cfg: DictConfig,
    dm: ClassificationDataModule,
    output_dir: Path,
    optim: dict[str, Any],
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Load the teacher from ``teacher.checkpoint`` or train it; returns it (eval mode) with its
    metrics (``val/acc``, ``test/acc``, ``teacher/val_acc``, ``checkpoint``, ...)."""
    L.seed_everything(cfg.seed, workers=True)
    teacher = build_model(cfg.teacher.model, dm, "teacher")
    module = ClassifierModule(teacher, num_classes=dm.num_classes, **optim)
    trainer = make_trainer(cfg, "teacher", output_dir)
    ckpt = cfg.teacher.get("checkpoint")
    if ckpt:
        log.info("Loading the teacher from %s", ckpt)
        load_weights(teacher, ckpt, role="teacher")
        metrics = evaluate(trainer, module, dm)
        metrics["checkpoint"] = str(Path(ckpt).expanduser().resolve())
    elif cfg.teacher.get("pretrained", False):
        # The model came with its weights (e.g. torchvision's, from the local cache): use as is.
        log.info("Using the pretrained teacher as built (teacher.pretrained=true), not training")
        metrics = evaluate(trainer, module, dm)
    else:
        log.info("Training the teacher")
        metrics = fit_and_test(trainer, module, dm)
    report_teacher(trainer, metrics, dm.num_classes)
    return teacher.eval(), metrics


TeacherGetter = Callable[
    [DictConfig, ClassificationDataModule, Path], tuple[torch.nn.Module, dict[str, Any]]
]


def run_classify(cfg: DictConfig, output_dir: Path, get_teacher: TeacherGetter) -> dict[str, Any]:
    """``task=classify``: train (or evaluate) ``teacher.model`` alone and write its results.

    ``get_teacher`` is ``kdlightning.train.get_teacher``, the one way the job obtains a teacher.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    dm: ClassificationDataModule = instantiate(cfg.data)
    model, metrics = get_teacher(cfg, dm, output_dir)
    if not is_global_zero():  # DDP: the other ranks trained with rank 0; it alone writes
        return {"teacher": metrics}
    b = cfg.benchmark
    cost = measure_model(model, dm.input_shape, b.batch_size, b.warmup, b.repeats)
    weights = output_dir / "teacher.pt"
    torch.save(model.state_dict(), weights)
    results: dict[str, Any] = {
        "teacher": {**metrics, **cost},
        "summary": {"task": "classify", "seed": int(cfg.seed), "state_dict": str(weights)},
    }
    (output_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = comparison_table(results)
    (output_dir / "comparison.md").write_text(table + "\n")
    best = metrics.get("checkpoint") or weights
    print(
        f"\n{table}\n\nresults: {output_dir / 'results.json'}\n"
        f"distill from it with: python -m kdlightning.train teacher.checkpoint={best} "
        "(and the same data/teacher config)"
    )
    return results
