"""Main job: teacher -> student alone -> distilled student, then a side-by-side comparison.

    python -m kdlightning.train                                  # digits, CPU, ~1 minute
    python -m kdlightning.train kd.temperature=8 kd.alpha=0.5    # any value from the CLI
    python -m kdlightning.train teacher.checkpoint=PATH          # reuse a trained teacher
    python -m kdlightning.train task=classify                    # train the teacher only
    python -m kdlightning.train -m kd.temperature=1,2,4,8        # a Hydra multirun sweep
    python -m kdlightning.train --cfg job                        # print the composed config

Writes ``results.json`` (teacher / baseline / distilled: test/acc, params, size_bytes,
latency_ms, ...), ``student.pt`` (the distilled student's state dict) and one folder per stage
(checkpoints, logs) into the Hydra run directory, and prints the comparison table. Returns the
distilled student's validation accuracy, the value a Hydra sweeper optimizes.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

from kdlightning.compare import comparison_table, ratios
from kdlightning.data.base import ClassificationDataModule
from kdlightning.losses import check_alpha, check_temperature
from kdlightning.measure import measure_model
from kdlightning.module import ClassifierModule, DistillationModule
from kdlightning.stages import build_model, fit_and_test, make_trainer
from kdlightning.teacher import check_task, obtain_teacher, run_classify

log = logging.getLogger(__name__)

# The frozen teacher is in eval mode on purpose; Lightning's generic warning about it is noise.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training")


def _config_dir() -> str:
    # Inside a wheel the tree is packaged as kdlightning/conf; in a checkout it is ../conf.
    here = Path(__file__).resolve().parent
    packaged = here / "conf"
    return str(packaged if packaged.is_dir() else here.parent / "conf")


def _optim(cfg: DictConfig) -> dict[str, Any]:
    optim = cfg.get("optim") or {}
    return {
        "optimizer": instantiate(optim["optimizer"]) if optim.get("optimizer") else None,
        "scheduler": instantiate(optim["scheduler"]) if optim.get("scheduler") else None,
    }


def _measure(cfg: DictConfig, model: torch.nn.Module, dm: ClassificationDataModule) -> dict:
    b = cfg.benchmark
    return measure_model(model, dm.input_shape, b.batch_size, b.warmup, b.repeats)


def get_teacher(
    cfg: DictConfig, dm: ClassificationDataModule, output_dir: Path
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Load the teacher from ``teacher.checkpoint`` or train it; returns it with its metrics.

    The single entry point for obtaining the teacher; the life cycle is in kdlightning.teacher.
    """
    return obtain_teacher(cfg, dm, output_dir, _optim(cfg))


def run(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Run the whole job for a composed config and return the results written to disk."""
    if check_task(cfg.get("task", "distill")) == "classify":
        return run_classify(cfg, output_dir, get_teacher)
    temperature, alpha = check_temperature(cfg.kd.temperature), check_alpha(cfg.kd.alpha)
    output_dir.mkdir(parents=True, exist_ok=True)
    dm: ClassificationDataModule = instantiate(cfg.data)

    teacher, teacher_metrics = get_teacher(cfg, dm, output_dir)
    results: dict[str, Any] = {"teacher": {**teacher_metrics, **_measure(cfg, teacher, dm)}}

    if cfg.get("baseline", True):
        log.info("Training the student alone on hard labels (baseline)")
        L.seed_everything(cfg.seed, workers=True)  # same init and data order as the distilled run
        student = build_model(cfg.student.model, dm, "student")
        module = ClassifierModule(student, num_classes=dm.num_classes, **_optim(cfg))
        metrics = fit_and_test(make_trainer(cfg, "baseline", output_dir), module, dm)
        results["baseline"] = {**metrics, **_measure(cfg, student, dm)}

    log.info("Distilling the student (T=%g, alpha=%g)", temperature, alpha)
    L.seed_everything(cfg.seed, workers=True)
    student = build_model(cfg.student.model, dm, "student")
    module = DistillationModule(
        teacher, student, temperature, alpha, num_classes=dm.num_classes, **_optim(cfg)
    )
    metrics = fit_and_test(make_trainer(cfg, "distilled", output_dir), module, dm)
    results["distilled"] = {**metrics, **_measure(cfg, student, dm)}

    compression, speedup = ratios(results, "distilled")
    results["summary"] = {
        "temperature": temperature,
        "alpha": alpha,
        "seed": int(cfg.seed),
        "compression": compression,
        "speedup": speedup,
    }
    torch.save(student.state_dict(), output_dir / "student.pt")
    (output_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = comparison_table(results)
    (output_dir / "comparison.md").write_text(table + "\n")
    print(f"\n{table}\n\nresults: {output_dir / 'results.json'}")
    return results


@hydra.main(version_base="1.3", config_path=_config_dir(), config_name="train")
def main(cfg: DictConfig) -> float:
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    results = run(cfg, output_dir)
    # task=classify has no distilled student: its sweeps optimize the trained model.
    return float(results.get("distilled", results["teacher"])["val/acc"])


if __name__ == "__main__":
    main()
