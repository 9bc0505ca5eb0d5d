"""The report of a temperature × alpha sweep: tables, the best setting and a heatmap.

    python -m kdlightning.train -m +sweep=temperature_alpha seed=0,1,2
    python -m kdlightning.report logs/multiruns/2026-11-27_19-30-00      # or: kdl-report DIR
    python -m kdlightning.report DIR --wandb on    # also log it to the sweep's W&B group

Reads every job folder of the multirun (``.hydra/config.yaml``, ``.hydra/overrides.yaml``,
``results.json``) and writes into the multirun folder:

- ``report.csv``: one row per job (temperature, alpha, seed, student val/test accuracy,
  test agreement with the teacher, status); failed, unfinished and never-started jobs included;
- ``report_aggregate.csv``: mean ± std over seeds for each (temperature, alpha);
- ``report_heatmap.png``: temperature × alpha -> mean student accuracy (validation and test),
  the teacher's and the student-alone baseline's test accuracy in the title;
- ``report.md``: all of the above as Markdown, with the best setting chosen on **validation**
  accuracy (the test accuracy is reported for it, never used to choose);
- ``report.json``: the best setting and the reference accuracies, for scripts.

``--wandb auto`` (the default) logs the heatmap and the tables to W&B when the jobs used
``logger=wandb``, into the same project and group as the jobs (``job_type=report``).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import statistics
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from kdlightning.compare import markdown_table

AXES = ("kd.temperature", "kd.alpha", "seed")
FILES = {
    "jobs": "report.csv",
    "aggregate": "report_aggregate.csv",
    "markdown": "report.md",
    "heatmap": "report_heatmap.png",
    "json": "report.json",
}


def mark_failed(output_dir: Path, err: BaseException) -> None:
    """Record why a job failed (``failed.json`` in its folder), for the report to list it."""
    output_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "error": f"{type(err).__name__}: {err}".strip(),
        "traceback": "".join(traceback.format_exception(err)),
    }
    (output_dir / "failed.json").write_text(json.dumps(payload, indent=2) + "\n")


@dataclass
class Job:
    """One job of a multirun as the report sees it."""

    num: int
    dir: str
    overrides: list[str]
    temperature: float | None = None
    alpha: float | None = None
    seed: int | None = None
    status: str = "unfinished"  # ok | failed | unfinished | not started
    val_acc: float | None = None
    test_acc: float | None = None
    test_agreement: float | None = None
    teacher_test_acc: float | None = None
    baseline_test_acc: float | None = None
    teacher_cached: bool | None = None
    error: str = ""
    # swept overrides other than T, alpha and seed ("student=cnn ..."): kept apart when grouping
    setting: str = ""
    config: DictConfig | None = field(default=None, repr=False)


def _select(cfg: DictConfig, key: str) -> Any:
    # Only plain values are read: paths hold ${hydra:...} resolvers that fail outside a job.
    try:
        return OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
    except Exception:
        return None


def _read_job(job_dir: Path) -> Job:
    hydra_dir = job_dir / ".hydra"
    overrides = [str(o) for o in OmegaConf.load(hydra_dir / "overrides.yaml")]
    cfg = OmegaConf.load(hydra_dir / "config.yaml")
    assert isinstance(cfg, DictConfig)
    num = int(job_dir.name) if job_dir.name.isdigit() else -1
    job = Job(num=num, dir=job_dir.name, overrides=overrides, config=cfg)
    t, a, s = (_select(cfg, k) for k in AXES)
    job.temperature = None if t is None else float(t)
    job.alpha = None if a is None else float(a)
    job.seed = None if s is None else int(s)
    results_path, failed_path = job_dir / "results.json", job_dir / "failed.json"
    if results_path.is_file():
        r = json.loads(results_path.read_text())
        distilled = r.get("distilled", {})
        job.status = "ok"
        job.val_acc = distilled.get("val/acc")
        job.test_acc = distilled.get("test/acc")
        job.test_agreement = distilled.get("test/agreement")
        job.teacher_test_acc = r.get("teacher", {}).get("test/acc")
        job.baseline_test_acc = r.get("baseline", {}).get("test/acc")
        job.teacher_cached = r.get("teacher", {}).get("cache", {}).get("hit")
    elif failed_path.is_file():
        job.status = "failed"
        job.error = json.loads(failed_path.read_text()).get("error", "")
    return job


def expected_overrides(sweep_dir: Path) -> list[list[str]] | None:
    """Every job's overrides as the basic sweeper expands them from ``multirun.yaml``."""
    # The basic sweeper's own expansion (a private module, hence the broad except below).
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return None
    try:
        hydra_cfg = OmegaConf.load(path).hydra
        params = hydra_cfg.sweeper.get("params") or {}
        args = [f"{k}={v}" for k, v in params.items()] + list(hydra_cfg.overrides.task)
        parsed = OverridesParser.create().parse_overrides(args)
        return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    except Exception:  # another sweeper plugin, or a grid we cannot expand: list what exists
        return None


def collect_jobs(sweep_dir: str | Path) -> list[Job]:
    """All jobs of the multirun in ``sweep_dir``, in job order, finished or not."""
    sweep_dir = Path(sweep_dir)
    job_dirs = sorted(
        (p.parent.parent for p in sweep_dir.glob("*/.hydra/config.yaml")),
        key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name),
    )
    jobs = [_read_job(d) for d in job_dirs]
    expected = expected_overrides(sweep_dir)
    if expected:
        seen = {tuple(sorted(j.overrides)) for j in jobs}
        for num, overrides in enumerate(expected):
            if tuple(sorted(overrides)) not in seen:
                jobs.append(Job(num=num, dir="", overrides=overrides, status="not started"))
        jobs.sort(key=lambda j: j.num)
    if not jobs:
        raise FileNotFoundError(
            f"no Hydra job folders (*/.hydra/config.yaml) in {str(sweep_dir)!r}; pass the "
            "folder of a multirun, e.g. logs/multiruns/<date>"
        )
    _fill_axes_and_settings(jobs)
    return jobs


def _fill_axes_and_settings(jobs: list[Job]) -> None:
    # Jobs that never started have no config: read T, alpha and seed off their overrides.
    for job in jobs:
        pairs = dict(o.lstrip("+~").split("=", 1) for o in job.overrides if "=" in o)
        if job.temperature is None and "kd.temperature" in pairs:
            job.temperature = float(pairs["kd.temperature"])
        if job.alpha is None and "kd.alpha" in pairs:
            job.alpha = float(pairs["kd.alpha"])
        if job.seed is None and "seed" in pairs:
            job.seed = int(pairs["seed"])
    # A third swept axis (say student=mlp,cnn) must not be averaged together with the seeds.
    per_job = [dict(o.split("=", 1) for o in j.overrides if "=" in o) for j in jobs]
    keys = {k for p in per_job for k in p} - {"kd.temperature", "kd.alpha", "seed"}
    varying = sorted(k for k in keys if len({p.get(k) for p in per_job}) > 1)
    for job, pairs in zip(jobs, per_job, strict=True):
        job.setting = " ".join(f"{k}={pairs.get(k, '')}" for k in varying)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) of ``values``."""
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(jobs: Iterable[Job]) -> list[dict[str, Any]]:
    """Mean and sample std over seeds of each setting's finished jobs, sorted by setting."""
    groups: dict[tuple[str, float, float], list[Job]] = {}
    for job in jobs:
        if job.status == "ok" and job.temperature is not None and job.alpha is not None:
            groups.setdefault((job.setting, job.temperature, job.alpha), []).append(job)
    rows = []
    for (setting, t, a), members in sorted(groups.items()):
        row: dict[str, Any] = {"setting": setting, "temperature": t, "alpha": a}
        row["n"] = len(members)
        row["seeds"] = sorted(j.seed for j in members if j.seed is not None)
        for name in ("val_acc", "test_acc", "test_agreement"):
            values = [getattr(j, name) for j in members if getattr(j, name) is not None]
            mean, std = mean_std(values) if values else (math.nan, math.nan)
            row[f"{name}_mean"], row[f"{name}_std"] = mean, std
        rows.append(row)
    return rows


def best_setting(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The aggregate row with the highest mean **validation** accuracy.

    Ties go to the smaller spread over seeds, then to the earlier row (lower temperature,
    then lower alpha). Test accuracy never takes part in the choice.
    """
    candidates = [r for r in rows if not math.isnan(r["val_acc_mean"])]
    if not candidates:
        return None
    # Rounded: means of the same accuracies summed in another order must still tie.
    return max(
        candidates,
        key=lambda r: (round(r["val_acc_mean"], 9), -round(r["val_acc_std"], 9), -rows.index(r)),
    )


def reference_accuracy(jobs: Iterable[Job], attr: str) -> tuple[float, float, int] | None:
    """Mean, std and count over seeds of the teacher's or baseline's test accuracy.

    Jobs of one seed share one cached teacher/baseline, so each seed counts once.
    """
    per_seed: dict[Any, float] = {}
    for job in jobs:
        value = getattr(job, attr)
        if job.status == "ok" and value is not None:
            per_seed.setdefault((job.setting, job.seed), value)
    if not per_seed:
        return None
    mean, std = mean_std(list(per_seed.values()))
    return mean, std, len(per_seed)


def _pct(value: float | None, std: float | None = None, n: int = 1) -> str:
    if value is None or math.isnan(value):
        return "-"
    return (
        f"{100 * value:.2f} ± {100 * std:.2f}%"
        if std is not None and n > 1
        else f"{100 * value:.2f}%"
    )


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def jobs_table(jobs: Sequence[Job]) -> str:
    headers = ["job", "T", "alpha", "seed", "val acc", "test acc", "agreement (test)", "status"]
    if any(j.setting for j in jobs):
        headers.insert(1, "setting")
    rows = []
    for j in jobs:
        row = [j.num if j.num >= 0 else j.dir, _num(j.temperature), _num(j.alpha),
               _num(j.seed), _pct(j.val_acc), _pct(j.test_acc), _pct(j.test_agreement),
               j.status]  # fmt: skip
        if j.setting:
            row.insert(1, j.setting)
        rows.append(row)
    return markdown_table(headers, rows)


def aggregate_table(rows: Sequence[dict[str, Any]], best: dict[str, Any] | None) -> str:
    headers = ["T", "alpha", "seeds", "val acc", "test acc", "agreement (test)"]
    show_setting = any(r["setting"] for r in rows)
    if show_setting:
        headers.insert(0, "setting")
    out = []
    for r in rows:
        n = r["n"]
        mark = " **(best)**" if r is best else ""
        row = [_num(r["temperature"]), _num(r["alpha"]), n,
               _pct(r["val_acc_mean"], r["val_acc_std"], n) + mark,
               _pct(r["test_acc_mean"], r["test_acc_std"], n),
               _pct(r["test_agreement_mean"], r["test_agreement_std"], n)]  # fmt: skip
        if show_setting:
            row.insert(0, r["setting"])
        out.append(row)
    return markdown_table(headers, out)


def _reference_line(jobs: Sequence[Job]) -> str:
    parts = []
    for label, attr in (("teacher", "teacher_test_acc"), ("student alone", "baseline_test_acc")):
        ref = reference_accuracy(jobs, attr)
        if ref is not None:
            parts.append(f"{label} {_pct(ref[0], ref[1], ref[2])}")
    return " · ".join(parts)


def plot_heatmap(
    rows: Sequence[dict[str, Any]], best: dict[str, Any] | None, title: str, path: Path
) -> Path | None:
    """Temperature × alpha heatmaps of mean validation and test accuracy; ``None`` (nothing
    drawn) when there is no finished job or more than one setting besides T and alpha."""
    if not rows or len({r["setting"] for r in rows}) > 1:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and in CI
    import matplotlib.pyplot as plt
    import numpy as np

    temps = sorted({r["temperature"] for r in rows})
    alphas = sorted({r["alpha"] for r in rows})
    width = max(9.0, 2 * (2.0 + 0.9 * len(alphas)))
    fig, axes = plt.subplots(1, 2, figsize=(width, max(3.8, 2.0 + 0.6 * len(temps))))
    for ax, split in zip(axes, ("val", "test"), strict=True):
        grid = np.full((len(temps), len(alphas)), np.nan)
        for r in rows:
            grid[temps.index(r["temperature"]), alphas.index(r["alpha"])] = r[f"{split}_acc_mean"]
        image = ax.imshow(100 * grid, cmap="viridis", aspect="auto")
        fig.colorbar(image, ax=ax)
        low, high = image.get_clim()
        for r in rows:
            i, j = temps.index(r["temperature"]), alphas.index(r["alpha"])
            mean, std = 100 * r[f"{split}_acc_mean"], 100 * r[f"{split}_acc_std"]
            text = f"{mean:.1f}" + (f"\n±{std:.1f}" if r["n"] > 1 else "")
            dark = mean < (low + high) / 2  # white on the dark end of viridis, black on yellow
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")  # fmt: skip
        if best is not None:  # chosen on validation; outlined in both panels
            i, j = temps.index(best["temperature"]), alphas.index(best["alpha"])
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="red", lw=2.5))
        ax.set_xticks(range(len(alphas)), [f"{a:g}" for a in alphas])
        ax.set_yticks(range(len(temps)), [f"{t:g}" for t in temps])
        ax.set_xlabel("alpha (weight of the KD term)")
        ax.set_ylabel("temperature T")
        ax.set_title(f"student {split} accuracy (%)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["empty"])
        writer.writeheader()
        writer.writerows(rows)


def write_report(sweep_dir: str | Path, jobs: Sequence[Job] | None = None) -> dict[str, Any]:
    """Write the report files into ``sweep_dir``; returns the summary stored in report.json."""
    sweep_dir = Path(sweep_dir)
    jobs = list(jobs) if jobs is not None else collect_jobs(sweep_dir)
    rows = aggregate(jobs)
    best = best_setting(rows)
    references = _reference_line(jobs)
    counts = {s: sum(j.status == s for j in jobs) for s in dict.fromkeys(j.status for j in jobs)}

    job_rows = []
    for j in jobs:
        d = asdict(j)
        d.pop("config")
        d["overrides"] = " ".join(j.overrides)
        job_rows.append(d)
    _write_csv(sweep_dir / FILES["jobs"], job_rows)
    _write_csv(
        sweep_dir / FILES["aggregate"],
        [{**r, "seeds": " ".join(map(str, r["seeds"]))} for r in rows],
    )

    title = f"{sweep_dir.name}: student accuracy, mean over seeds; red box: best on validation"
    if references:
        title += f"\n(test) {references}"
    heatmap = plot_heatmap(rows, best, title, sweep_dir / FILES["heatmap"])

    lines = [f"# Sweep report: {sweep_dir.name}", ""]
    lines.append(f"{len(jobs)} jobs: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + ".")
    if references:
        lines.append(f"Reference test accuracy (mean ± std over seeds): {references}.")
    lines += ["", "## Best setting (chosen on validation accuracy)", ""]
    if best is None:
        lines.append("No finished job: nothing to choose from.")
    else:
        n = best["n"]
        lines.append(
            f"T={best['temperature']:g}, alpha={best['alpha']:g}"
            + (f" ({best['setting']})" if best["setting"] else "")
            + f": validation {_pct(best['val_acc_mean'], best['val_acc_std'], n)}, "
            f"test {_pct(best['test_acc_mean'], best['test_acc_std'], n)} over {n} seed(s)."
        )
    lines += ["", "## Mean ± std over seeds", "", aggregate_table(rows, best), ""]
    if heatmap is not None:
        lines += [f"![T × alpha heatmap]({heatmap.name})", ""]
    lines += ["## Jobs", "", jobs_table(jobs), ""]
    problems = [j for j in jobs if j.status != "ok"]
    if problems:
        lines += ["## Failed or unfinished jobs", ""]
        for j in problems:
            where = f"{j.dir}/" if j.dir else "(no folder)"
            lines.append(f"- job {j.num} {where} `{' '.join(j.overrides)}`: {j.status}"
                         + (f": {j.error}" if j.error else ""))  # fmt: skip
        lines.append("")
    markdown = "\n".join(lines)
    (sweep_dir / FILES["markdown"]).write_text(markdown)

    summary = {
        "sweep_dir": str(sweep_dir),
        "counts": counts,
        "best": best,
        "references": references,
        "files": {k: str(sweep_dir / v) for k, v in FILES.items() if k != "heatmap" or heatmap},
        "heatmap": str(heatmap) if heatmap else None,
    }
    (sweep_dir / FILES["json"]).write_text(json.dumps(summary, indent=2) + "\n")
    return {**summary, "markdown": markdown, "aggregate": rows, "jobs": jobs}


def _uses_wandb(jobs: Sequence[Job]) -> bool:
    return any(j.config is not None and _select(j.config, "logger.wandb") for j in jobs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kdl-report", description=__doc__.split("\n")[0])
    parser.add_argument(
        "sweep_dir", type=Path, help="a multirun folder, e.g. logs/multiruns/<date>"
    )
    parser.add_argument(
        "--wandb",
        choices=("auto", "on", "off"),
        default="auto",
        help="log the heatmap and tables to W&B (auto: when the jobs used logger=wandb)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.sweep_dir.is_dir():
        parser.error(f"{str(args.sweep_dir)!r} is not a folder")
    report = write_report(args.sweep_dir)
    print(report["markdown"])
    print(f"\nwritten: {', '.join(report['files'].values())}")
    jobs = report["jobs"]
    if args.wandb == "on" or (args.wandb == "auto" and _uses_wandb(jobs)):
        from kdlightning.tracking import log_report

        log_report(args.sweep_dir, report, next((j.config for j in jobs if j.config), None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
