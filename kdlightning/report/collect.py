"""Find the job folders of a Hydra multirun and read each into a plain ``SweepJob`` record.

    from kdlightning.report import collect_jobs
    for job in collect_jobs("logs/distill/multiruns/<date>_<time>_<id>"):
        print(job.num, job.kind, job.temperature, job.alpha, job.seed, job.status, job.error)

A job is read from ``.hydra/overrides.yaml``, ``.hydra/config.yaml`` and ``results.json`` or
``failed.json``, through :mod:`kdlightning.job.runfiles` (the one reader of a run directory);
an Optuna search's folder also holds ``optimization_results.yaml`` (:func:`optuna_results`), its
jobs are read like a grid's. Nothing a job leaves behind makes this raise: a garbled, missing or
unreadable file, a non-numeric ``kd.temperature`` or a NaN accuracy turns into a status
(``failed``, ``unfinished``, ``unreadable``) and a reason in ``SweepJob.error``, for the report
to list.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from kdlightning.job import runfiles
from kdlightning.job.sweepdir import expected_overrides

log = logging.getLogger(__name__)

# The axes the report averages over (seed) or lays out (temperature x alpha).
AXES = ("kd.temperature", "kd.alpha", "seed")
# What the report reads of each role in results.json.
METRICS = ("test/acc", "val/acc", "test/agreement", "params", "test/bpb", "val/bpb")  # bpb: LMs
ROLE_KEYS = ("teacher", "baseline", "distilled")
# What a job trains: image classification (accuracy, higher is better) or a language model
# (kdlightning.lm: bits per byte, lower is better). The report never ranks the two together.
KINDS = ("image", "lm")


@dataclass
class SweepJob:
    """One job of a multirun as the report sees it: plain values only."""

    num: int
    dir: str
    overrides: list[str]
    temperature: float | None = None
    alpha: float | None = None
    seed: int | None = None
    status: str = "unfinished"  # ok | failed | unfinished | unreadable | not started
    # per role (teacher / baseline / distilled): the METRICS found in results.json
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    teacher_cached: bool | None = None
    error: str = ""
    # swept overrides other than T, alpha and seed ("student=cnn ..."): kept apart when grouping
    setting: str = ""
    # the job's logger.wandb project / entity / group; None when it did not log to W&B
    wandb: dict[str, Any] | None = None
    # "image" or "lm" (one of KINDS): from results.json's metrics (bits per byte: a language
    # model), else from the config's data module; None when neither tells (e.g. not started)
    kind: str | None = None

    def metric(self, role: str, key: str) -> float | None:
        """``results.json[role][key]`` of this job, or None."""
        return self.metrics.get(role, {}).get(key)


class Unreadable(Exception):
    """A file of a job folder that is missing, cannot be read or holds something unexpected."""


def _load_json(path: Path) -> Any:
    try:
        return runfiles.read_json(path)
    except runfiles.RunFileError as err:
        raise Unreadable(str(err)) from err


def _load_yaml(path: Path) -> DictConfig | ListConfig:
    try:
        return runfiles.read_yaml(path)
    except runfiles.RunFileError as err:
        raise Unreadable(str(err)) from err


def _select(cfg: DictConfig, key: str) -> Any:
    # Only plain values are read: paths hold ${hydra:...} resolvers that fail outside a job.
    try:
        return OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
    except Exception:
        return None


def _axis_value(key: str, raw: Any) -> float | int | None:
    """``raw`` (from a config or an override string) as the axis' number; ValueError if not."""
    if raw is None:
        return None
    try:
        if isinstance(raw, bool):
            raise ValueError
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{key}={raw!r} is not a number") from None
    if not math.isfinite(value) or (key == "seed" and not value.is_integer()):
        raise ValueError(f"{key}={raw!r} is not a valid {key}")
    return int(value) if key == "seed" else value


def override_pairs(overrides: Sequence[str]) -> dict[str, str]:
    """``["+a.b=1", "c=x"]`` -> ``{"a.b": "1", "c": "x"}`` (``+``/``++``/``~`` prefixes dropped)."""
    return dict(o.lstrip("+~").split("=", 1) for o in overrides if "=" in o)


def _set_axes(job: SweepJob, *sources: Mapping[str, Any]) -> list[str]:
    """Set T, alpha and seed from the first source that has each; returns the problems."""
    problems, values = [], []
    for key in AXES:
        raw = next((s[key] for s in sources if s.get(key) is not None), None)
        try:
            values.append(_axis_value(key, raw))
        except ValueError as err:
            values.append(None)
            problems.append(str(err))
    job.temperature, job.alpha, job.seed = values
    return problems


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _read_results(job: SweepJob, path: Path) -> None:
    """Fill ``job.metrics`` from results.json; Unreadable when a value is not a finite number."""
    results = _load_json(path)
    if not isinstance(results, dict):
        raise Unreadable(f"results.json holds a {type(results).__name__}, not an object")
    for role in ROLE_KEYS:
        entry = results.get(role)
        if entry is None:
            continue
        if not isinstance(entry, dict):
            raise Unreadable(f"results.json: {role!r} is not an object")
        found = {k: entry[k] for k in METRICS if k in entry}
        bad = [f"{role} {k}={json.dumps(v, default=str)}" for k, v in found.items()
               if not _is_number(v)]  # fmt: skip
        # NaN or infinity (kdlightning.job.results writes them as null), text where a number belongs
        if bad:
            raise Unreadable("results.json: not a finite number: " + ", ".join(bad))
        job.metrics[role] = found
    cache = results.get("teacher", {}).get("cache")
    if isinstance(cache, dict) and isinstance(cache.get("hit"), bool):
        job.teacher_cached = cache["hit"]


def _failure(path: Path) -> str:
    """The reason a failed job left in failed.json (``error``, and ``signal`` when killed)."""
    try:
        payload = _load_json(path)
    except Unreadable as err:
        return f"(reason unknown: {err})"
    if not isinstance(payload, dict):
        return f"(reason unknown: failed.json holds a {type(payload).__name__})"
    error = str(payload.get("error") or "").strip() or "(no error recorded)"
    if payload.get("signal") is not None:
        error += f" [signal {payload['signal']}]"
    return error


def _kind_of_metrics(metrics: Mapping[str, Mapping[str, float]]) -> str | None:
    if any("test/bpb" in m or "val/bpb" in m for m in metrics.values()):
        return "lm"
    return "image" if any(metrics.values()) else None


def kind_of(job: SweepJob) -> str | None:
    """``image`` or ``lm``: the job's ``kind``, else what its metrics are (a ``SweepJob`` built by
    hand), else ``image`` for a finished job and None for one that tells nothing."""
    kind = job.kind or _kind_of_metrics(job.metrics)
    return kind or ("image" if job.status == "ok" else None)


def _kind_of_config(cfg: DictConfig) -> str | None:
    target = _select(cfg, "data._target_")
    if not isinstance(target, str):
        return None
    return "lm" if target.startswith("kdlightning.lm.") else "image"


def _wandb_settings(cfg: DictConfig) -> dict[str, Any] | None:
    if not _select(cfg, "logger.wandb"):
        return None
    # Key by key: save_dir holds ${hydra:...}, unresolvable outside a job.
    return {k: _select(cfg, f"logger.wandb.{k}") for k in ("project", "entity", "group")}


def read_job(job_dir: Path) -> SweepJob:
    """One job folder as a ``SweepJob``; problems become its status and ``error``, never raise."""
    num = int(job_dir.name) if job_dir.name.isdigit() else -1
    job = SweepJob(num=num, dir=job_dir.name, overrides=[])
    problems: list[str] = []
    try:
        job.overrides = runfiles.read_overrides(job_dir)
    except runfiles.RunFileError as err:
        problems.append(str(err))
    config: dict[str, Any] = {}
    try:
        # Hydra's copy, unresolved: a job that failed at start-up has no config.yaml, and only
        # plain values are read (_select), so an unresolvable path never hides the job.
        cfg = _load_yaml(job_dir / runfiles.HYDRA_DIR / "config.yaml")
        if not isinstance(cfg, DictConfig):
            raise Unreadable(".hydra/config.yaml is not a mapping")
        config = {key: _select(cfg, key) for key in AXES}
        job.wandb = _wandb_settings(cfg)
        job.kind = _kind_of_config(cfg)
    except Unreadable as err:
        problems.append(str(err))
    problems += _set_axes(job, config, override_pairs(job.overrides))

    results_path = runfiles.run_file(job_dir, "results")
    failed_path = runfiles.run_file(job_dir, "failed")
    if results_path.exists():
        try:
            _read_results(job, results_path)
            job.status = "ok"
        except Unreadable as err:
            job.metrics, job.teacher_cached = {}, None
            job.status = "unreadable"
            problems.insert(0, str(err))
    if job.status == "ok":  # what it measured says what it is; a results.json of nothing: image
        job.kind = _kind_of_metrics(job.metrics) or job.kind or "image"
    if job.status != "ok" and failed_path.exists():
        job.status = "failed"
        problems.insert(0, _failure(failed_path))
    if job.status == "ok" and problems:  # numbers we cannot place on the grid are not averaged
        job.status = "unreadable"
    job.error = "; ".join(problems)
    return job


def _safe_read_job(job_dir: Path) -> SweepJob:
    try:
        return read_job(job_dir)
    except Exception as err:  # a case read_job does not foresee: list the job, go on
        log.warning("report: could not read %s: %r", job_dir, err)
        num = int(job_dir.name) if job_dir.name.isdigit() else -1
        return SweepJob(
            num, job_dir.name, [], status="unreadable", error=f"{type(err).__name__}: {err}"
        )


def _is_job_dir(path: Path) -> bool:
    # A job folder has Hydra's .hydra/; one that lost it still counts when it holds a result.
    try:
        return path.is_dir() and any(
            (path / n).exists() for n in (".hydra", "results.json", "failed.json")
        )
    except OSError:  # a folder we may not look into: listed (as unreadable), not skipped
        return True


def _fill_settings(jobs: list[SweepJob]) -> None:
    # A third swept axis (say student=mlp,cnn or kd=dkd,dist) is not averaged with the seeds.
    per_job = [dict(o.split("=", 1) for o in j.overrides if "=" in o) for j in jobs]
    read = [p for p in per_job if p]  # a job with unreadable overrides varies nothing
    keys = {k for p in read for k in p} - set(AXES)
    varying = sorted(k for k in keys if len({p.get(k) for p in read}) > 1)
    for job, pairs in zip(jobs, per_job, strict=True):
        job.setting = " ".join(f"{k}={pairs.get(k, '')}" for k in varying)


def optuna_results(sweep_dir: str | Path) -> dict[str, Any] | None:
    """The Optuna sweeper's ``optimization_results.yaml`` (``best_params``, ``best_value``,
    ``best_trial``, ...) as plain values; None when the folder has none or it is unreadable."""
    path = Path(sweep_dir) / "optimization_results.yaml"
    if not path.is_file():
        return None
    try:
        found = OmegaConf.to_container(_load_yaml(path))
    except Unreadable as err:
        log.warning("report: %s is unreadable (%s); the jobs are reported without it", path, err)
        return None
    return found if isinstance(found, dict) and "best_params" in found else None


def collect_jobs(sweep_dir: str | Path) -> list[SweepJob]:
    """All jobs of the multirun in ``sweep_dir``, in job order: finished, failed, unfinished,
    unreadable, and those of the grid in ``multirun.yaml`` that never started."""
    sweep_dir = Path(sweep_dir)
    job_dirs = sorted(
        (p for p in sweep_dir.iterdir() if _is_job_dir(p)) if sweep_dir.is_dir() else [],
        key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name),
    )
    jobs = [_safe_read_job(d) for d in job_dirs]
    expected = expected_overrides(sweep_dir)
    if expected:
        seen = {tuple(sorted(j.overrides)) for j in jobs}
        # A started job whose overrides.yaml is unreadable still holds its grid point.
        blind = {j.num for j in jobs if not j.overrides}
        for num, overrides in enumerate(expected):
            if tuple(sorted(overrides)) not in seen and num not in blind:
                job = SweepJob(num=num, dir="", overrides=overrides, status="not started")
                job.error = "; ".join(_set_axes(job, override_pairs(overrides)))
                jobs.append(job)
        jobs.sort(key=lambda j: j.num)
    if not jobs:
        raise FileNotFoundError(
            f"no Hydra job folders (*/.hydra/config.yaml) in {str(sweep_dir)!r}; pass the "
            "folder of a multirun, e.g. logs/distill/multiruns/<date>_<time>_<id>"
        )
    _fill_settings(jobs)
    return jobs
