"""Main job: teacher -> student alone -> distilled student, then a side-by-side comparison.

    python -m kdlightning.train                                  # digits, CPU, ~1 minute
    python -m kdlightning.train kd.temperature=8 kd.alpha=0.5    # any value from the CLI
    python -m kdlightning.train teacher.checkpoint=PATH          # reuse a trained teacher
    python -m kdlightning.train data.num_labeled=100             # distill on unlabeled data
    python -m kdlightning.train cache.enabled=false              # retrain a cached teacher
    python -m kdlightning.train task=classify                    # train the teacher only
    python -m kdlightning.train task=eval eval.run_dir=DIR       # a finished run scored again
    python -m kdlightning.train resume=true hydra.run.dir=DIR    # continue a killed job
    python -m kdlightning.train -m kd.temperature=1,2,4,8        # a Hydra multirun sweep
    python -m kdlightning.train -m +sweep=temperature_alpha seed=0,1,2   # T x alpha x seeds
    python -m kdlightning.report logs/distill/multiruns/<date>   # the sweep's report
    python -m kdlightning.figures RUN_DIR                        # re-draw a run's figures
    python -m kdlightning.train --cfg job                        # print the composed config

Text data (``experiment=lm_pydocs``, ``data=text_files``) runs the same stages with the
language-model task (:mod:`kdlightning.job.tasks`): same cache, results and sweeps.

The stages are in ``kdlightning.job.stages``; the teacher and the baseline come from
``kdlightning.job.cache`` when an earlier job with the same configs stored them; everything the job
writes is written by ``kdlightning.job.results``. Returns the distilled student's validation
accuracy (the teacher's for ``task=classify``), the value a Hydra sweeper optimizes; for language
models the validation bits per byte (lower is better: have the sweeper minimize it).
"""

from __future__ import annotations

import functools
import logging
import signal
import time
import warnings
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from kdlightning.job import claim, tracking
from kdlightning.job import results as results_io
from kdlightning.job.cache import StageCache
from kdlightning.job.config import check_config
from kdlightning.job.distributed import is_global_zero, job_scope, kill_children
from kdlightning.job.nvml import skip_nvml_probe_without_driver
from kdlightning.job.precheck import TASKS, check_task  # noqa: F401  (TASKS: kdlightning.train)
from kdlightning.job.resolvers import register_resolvers
from kdlightning.job.signals import Interrupted, on_signals, signal_of
from kdlightning.job.stages import Job, baseline_stage, distill_stage, teacher_stage
from kdlightning.job.tasks import task_for

log = logging.getLogger(__name__)

# The frozen teacher is in eval mode on purpose; Lightning's generic warning about it is noise.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training")

register_resolvers()  # conf/hydra/default.yaml names run dirs with ${kdl.run_id:}


def run(cfg: DictConfig, output_dir: Path, trainers: list | None = None) -> dict[str, Any]:
    """Run the whole job for a composed config; returns the results written to disk.

    ``trainers`` collects every Trainer the job makes (the DDP clean-up waits for their
    children); pass the list ``job_scope`` yields, or nothing outside a Hydra job.
    """
    task_name = check_task(cfg.get("task", "distill"))
    skip_nvml_probe_without_driver()  # Lightning is imported by now: it sets the variable
    if task_name == "eval":  # nothing trains: a finished run's model scored again
        return evaluate_job(cfg, output_dir)
    check_config(cfg)
    resume = bool(cfg.get("resume", False))
    if is_global_zero():
        # one job per folder (two at once are refused), and never over a finished run's files
        claim.claim_run_dir(output_dir, resume)
    try:
        return _run_claimed(cfg, output_dir, task_name, resume, trainers)
    finally:
        claim.release_run_dir(output_dir)


def _run_claimed(
    cfg: DictConfig, output_dir: Path, task_name: str, resume: bool, trainers: list | None
) -> dict[str, Any]:
    output_dir.mkdir(parents=True, exist_ok=True)
    if is_global_zero():
        if resume:  # a resumed run keeps its settings, or its results would mix two configs
            claim.check_resume_config(output_dir, cfg)
        if not resume or not (output_dir / "config.yaml").is_file():
            results_io.write_config(output_dir, cfg)  # what kdl-export rebuilds the student from
    with StageCache(cfg, output_dir) as cache:
        dm = instantiate(cfg.data)
        task = task_for(dm)  # image classification or language modelling: what differs
        # the cache keys cover what the data files hold, not only their paths
        start = time.perf_counter()
        cache.data_files = dm.fingerprint() if cache.enabled else {}
        if cache.data_files:
            log.info("Data files: %d, %.1f MB, fingerprint %s (%.2f s)",
                     cache.data_files["files"], cache.data_files["bytes"] / 1e6,
                     cache.data_files["blake2b"], time.perf_counter() - start)  # fmt: skip
        task.check(cfg, dm)
        job = Job(cfg, dm, output_dir, cache, task, [] if trainers is None else trainers,
                  resume=resume)  # fmt: skip
        task.prepare(job)
        stages = {"teacher": teacher_stage}
        if task_name == "distill":
            if cfg.get("baseline", True):
                stages["baseline"] = baseline_stage
            stages["distilled"] = distill_stage
        models, results = {}, {}
        for name, stage in stages.items():
            role = "teacher" if name == "teacher" else "student"
            build = functools.partial(job.build, role)
            done = results_io.load_stage(output_dir, name, build) if resume else None
            if done is not None:
                log.info(
                    "Resuming: the %s stage had finished; read back from %s/result", name, name
                )
            model, metrics = done or cache.stage(name, functools.partial(stage, job), build)
            if is_global_zero():
                results_io.save_stage(output_dir, name, model, metrics)
            if name == "teacher":
                job.teacher = model
            models[name] = model
            results[name] = metrics

    if not is_global_zero():  # the other ranks trained with rank 0; it alone measures and writes
        return results
    for name, model in models.items():
        results[name].update(task.costs(cfg, model, dm))
    if task_name == "distill" and cfg.get("export"):  # export=onnx|all: checked files, ORT latency
        from kdlightning.deploy.export import export_job

        results["distilled"].update(export_job(cfg, models["distilled"], job.dm, output_dir))
    extra: dict[str, Any] = {"task": task_name, "seed": int(cfg.seed)}
    if task_name == "distill":
        extra["temperature"] = float(cfg.kd.temperature)
        if cfg.kd.get("alpha") is not None:  # kd=dml has no alpha (conf/kd/dml.yaml says why)
            extra["alpha"] = float(cfg.kd.alpha)
    if cfg.data.get("num_labeled") is not None:
        extra["num_labeled"] = int(cfg.data.num_labeled)
    results["summary"] = results_io.summary(results, **extra)
    weights = {"student.pt": models["distilled"]} if task_name == "distill" else {}
    if task_name == "classify":
        weights["teacher.pt"] = models["teacher"]
        results["summary"]["state_dict"] = str(output_dir / "teacher.pt")
    table = task.write(output_dir, results, weights)
    task.log_comparison(results)
    print(f"\n{table}\n\nresults: {output_dir / results_io.RESULTS}")
    if task_name == "classify":
        best = results["teacher"].get("checkpoint") or output_dir / "teacher.pt"
        print(f"distill from it with: python -m kdlightning.train teacher.checkpoint={best} "
              "(and the same data/teacher config)")  # fmt: skip
    # After results.json: a figure that fails is skipped with a log line, never loses results.
    # figures=false saves their ~1.5 s (matplotlib rendering) in a job that needs none.
    if cfg.get("figures", True):
        task.figures(cfg, output_dir, results, models, dm)
    return results


def evaluate_job(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """``task=eval``: :func:`kdlightning.deploy.evaluate.evaluate_run` on ``eval.run_dir``,
    with the command line's ``data=NAME`` / ``data.KEY=VALUE``; prints the row and writes
    ``eval.json`` into this job's own folder. Returns ``{"evaluation": figures}``."""
    from kdlightning.deploy.evaluate import EvalError, eval_table, evaluate_run

    settings = cfg.get("eval") or {}
    if not settings.get("run_dir"):
        raise EvalError(
            "task=eval needs the run to evaluate: eval.run_dir=logs/distill/runs/<dir> (or "
            "kdl-eval logs/distill/runs/<dir>)"
        )
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    data_args = [o for o in overrides if o.startswith(("data=", "data."))]
    report = evaluate_run(settings.run_dir, str(settings.get("model", "student")), data_args,
                          bool(settings.get("onnx", False)))  # fmt: skip
    output_dir.mkdir(parents=True, exist_ok=True)
    results_io.write_json(output_dir / "eval.json", report)
    print(f"\n{eval_table(report)}\n\nfigures: {output_dir / 'eval.json'}")
    return {"evaluation": report}


def job(cfg: DictConfig) -> float:
    """One Hydra job: :func:`run` inside the job's scope (DDP children, signals, failed.json).
    The command line (``@hydra.main`` in :mod:`kdlightning.job.cli`) checks the config first."""
    output_dir = Path(HydraConfig.get().runtime.output_dir)

    # job_scope: DDP children of this job (environment in, clean-up out); on_signals: SIGTERM
    # and SIGINT end the job with a non-zero status instead of Lightning's silent exit 0.
    def stuck(signum: int) -> None:
        # the main thread is blocked (a collective whose peer is gone): record why we stop
        if is_global_zero():
            results_io.mark_failed(output_dir, Interrupted(signum), signal.Signals(signum).name)
        kill_children(trainers)

    grace_s = float(OmegaConf.select(cfg, "distributed.signal_grace_s", default=20.0))
    with job_scope() as trainers, on_signals(on_stuck=stuck, grace_s=grace_s):
        try:
            results = run(cfg, output_dir, trainers)
        except BaseException as err:
            # Leave a trace the sweep report lists (Hydra's basic launcher goes on with the other
            # jobs of the batch and raises the first failure once they are done).
            signal_name = signal_of(err)
            # a refused job wrote nothing there: the folder keeps its own results and failure
            if is_global_zero() and not isinstance(err, claim.RunRefused):
                results_io.mark_failed(output_dir, err, signal_name)
            tracking.finish(exit_code=1)
            if signal_name and not isinstance(err, Interrupted):
                raise Interrupted(getattr(signal, signal_name)) from err
            raise
        finally:
            tracking.finish()  # the next job of a multirun must not log into this job's last run
    # what a sweeper optimizes: validation accuracy (higher is better), or for language models
    # validation bits per byte (lower is better: minimize it)
    best = results.get("distilled") or results.get("teacher") or results["evaluation"]
    return float(best["val/bpb"] if "val/bpb" in best else best["val/acc"])
