"""Main job: teacher -> student alone -> distilled student, then a side-by-side comparison.

    python -m kdlightning.train                                  # digits, CPU, ~1 minute
    python -m kdlightning.train kd.temperature=8 kd.alpha=0.5    # any value from the CLI
    python -m kdlightning.train teacher.checkpoint=PATH          # reuse a trained teacher
    python -m kdlightning.train cache.enabled=false              # retrain a cached teacher
    python -m kdlightning.train task=classify                    # train the teacher only
    python -m kdlightning.train -m kd.temperature=1,2,4,8        # a Hydra multirun sweep
    python -m kdlightning.train -m +sweep=temperature_alpha seed=0,1,2   # T x alpha x seeds
    python -m kdlightning.report logs/multiruns/<date>           # the sweep's report
    python -m kdlightning.train --cfg job                        # print the composed config

The teacher and the baseline come from ``kdlightning.cache`` when an earlier job with the same
configs stored them. Writes ``results.json`` (teacher / baseline / distilled: test/acc, params,
size_bytes, latency_ms, cache, ...), ``student.pt`` (the distilled student's state dict) and
one folder per stage (checkpoints, logs) into the Hydra run directory, or ``failed.json`` when
the job raises, and prints the comparison table. Returns the distilled student's validation
accuracy, the value a Hydra sweeper optimizes.
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

from kdlightning import tracking
from kdlightning.cache import cached_stage, clear_decisions
from kdlightning.compare import comparison_table, ratios
from kdlightning.data.base import ClassificationDataModule
from kdlightning.distributed import is_global_zero, job_scope, relaunch_safe
from kdlightning.losses import check_alpha, check_temperature
from kdlightning.measure import measure_model
from kdlightning.module import ClassifierModule, DistillationModule
from kdlightning.report import mark_failed
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
    if not is_global_zero():  # one measurement per job, not one per DDP rank
        return {}
    b = cfg.benchmark
    return measure_model(model, dm.input_shape, b.batch_size, b.warmup, b.repeats)


def get_teacher(
    cfg: DictConfig, dm: ClassificationDataModule, output_dir: Path
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Load the teacher from ``teacher.checkpoint`` or train it; returns it with its metrics.

    The single entry point for obtaining the teacher; the life cycle is in kdlightning.teacher.
    """
    return obtain_teacher(cfg, dm, output_dir, _optim(cfg))


def get_baseline(
    cfg: DictConfig, dm: ClassificationDataModule, output_dir: Path
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train the student alone on hard labels: the baseline distillation has to beat."""
    log.info("Training the student alone on hard labels (baseline)")
    L.seed_everything(cfg.seed, workers=True)  # same init and data order as the distilled run
    student = build_model(cfg.student.model, dm, "student")
    module = ClassifierModule(student, num_classes=dm.num_classes, **_optim(cfg))
    return student, fit_and_test(make_trainer(cfg, "baseline", output_dir), module, dm)


def run(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Run the whole job for a composed config and return the results written to disk."""
    if check_task(cfg.get("task", "distill")) == "classify":
        return run_classify(cfg, output_dir, get_teacher)
    temperature, alpha = check_temperature(cfg.kd.temperature), check_alpha(cfg.kd.alpha)
    output_dir.mkdir(parents=True, exist_ok=True)
    dm: ClassificationDataModule = instantiate(cfg.data)

    # Trained once per sweep: jobs with the same teacher/student, data and training settings
    # share the stored result (kdlightning.cache; cache.enabled=false always retrains).
    teacher, teacher_metrics = cached_stage(
        cfg, "teacher", lambda: get_teacher(cfg, dm, output_dir), output_dir
    )
    results: dict[str, Any] = {"teacher": {**teacher_metrics, **_measure(cfg, teacher, dm)}}

    if cfg.get("baseline", True):
        student, metrics = cached_stage(
            cfg, "baseline", lambda: get_baseline(cfg, dm, output_dir), output_dir
        )
        results["baseline"] = {**metrics, **_measure(cfg, student, dm)}

    log.info("Distilling the student (T=%g, alpha=%g)", temperature, alpha)
    L.seed_everything(cfg.seed, workers=True)
    student = build_model(cfg.student.model, dm, "student")
    module = DistillationModule(
        teacher, student, temperature, alpha, num_classes=dm.num_classes, **_optim(cfg)
    )
    metrics = fit_and_test(make_trainer(cfg, "distilled", output_dir), module, dm)
    results["distilled"] = {**metrics, **_measure(cfg, student, dm)}

    if not is_global_zero():  # the other ranks trained with rank 0; it alone writes the files
        return results
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
    tracking.log_comparison(results)
    print(f"\n{table}\n\nresults: {output_dir / 'results.json'}")
    return results


@relaunch_safe  # a DDP child that Lightning starts runs its parent's job, not a new sweep
@hydra.main(version_base="1.3", config_path=_config_dir(), config_name="train")
def main(cfg: DictConfig) -> float:
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    with job_scope():  # DDP children of this job: environment in, clean-up out
        try:
            results = run(cfg, output_dir)
        except BaseException as err:
            # Leave a trace the sweep report lists (Hydra's basic launcher goes on with the other
            # jobs of the batch and raises the first failure once they are done).
            mark_failed(output_dir, err)
            tracking.finish(exit_code=1)
            raise
        finally:
            tracking.finish()  # the next job of a multirun must not log into this job's last run
            if is_global_zero():
                clear_decisions(output_dir)  # every rank has read them by now
    # task=classify has no distilled student: its sweeps optimize the trained model.
    return float(results.get("distilled", results["teacher"])["val/acc"])


if __name__ == "__main__":
    main()
