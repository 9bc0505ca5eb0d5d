"""Write the report files into the multirun folder: CSV, Markdown, the heatmap and JSON.

from kdlightning.report import write_report, write_by_role
summary = write_report("logs/distill/multiruns/<date>_<time>_<id>")  # report.{csv,md,json}, ...
print(write_by_role("logs/distill/multiruns/<date>_<time>_<id>"))    # report_by_role.md, as text
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdlightning.report.aggregate import (
    aggregate,
    best_setting,
    by_role,
    status_counts,
    sweep_kinds,
)
from kdlightning.report.collect import SweepJob, collect_jobs, kind_of, optuna_results
from kdlightning.report.heatmap import is_grid, plot_heatmap, why_no_heatmap
from kdlightning.report.render import by_role_markdown, reference_line, report_markdown

FILES = {
    "jobs": "report.csv",
    "aggregate": "report_aggregate.csv",
    "markdown": "report.md",
    "heatmap": "report_heatmap.png",
    "json": "report.json",
}
BY_ROLE_FILE = "report_by_role.md"


# report.csv / report_aggregate.csv columns only written when the sweep holds a language model
LM_JOB_COLUMNS = ("kind", "val_bpb", "test_bpb", "teacher_test_bpb", "baseline_test_bpb")
LM_AGGREGATE_COLUMNS = ("kind", "val_bpb_mean", "val_bpb_std", "test_bpb_mean", "test_bpb_std")


def job_rows(jobs: Sequence[SweepJob]) -> list[dict[str, Any]]:
    """One flat dict per job, the columns of report.csv (and of the W&B ``jobs`` table).

    When a job is a language model, also :data:`LM_JOB_COLUMNS`: its kind (``image`` or
    ``lm``) and the bits per byte of the distilled student (val, test), teacher and baseline
    (test); an image sweep's columns stay as they have always been.
    """
    lm = "lm" in sweep_kinds(jobs)
    return [
        {
            "num": j.num,
            "dir": j.dir,
            "overrides": " ".join(j.overrides),
            "temperature": j.temperature,
            "alpha": j.alpha,
            "seed": j.seed,
            "status": j.status,
            "val_acc": j.metric("distilled", "val/acc"),
            "test_acc": j.metric("distilled", "test/acc"),
            "test_agreement": j.metric("distilled", "test/agreement"),
            "teacher_test_acc": j.metric("teacher", "test/acc"),
            "baseline_test_acc": j.metric("baseline", "test/acc"),
            "teacher_cached": j.teacher_cached,
            "error": j.error,
            "setting": j.setting,
            **(
                {
                    "kind": kind_of(j),
                    "val_bpb": j.metric("distilled", "val/bpb"),
                    "test_bpb": j.metric("distilled", "test/bpb"),
                    "teacher_test_bpb": j.metric("teacher", "test/bpb"),
                    "baseline_test_bpb": j.metric("baseline", "test/bpb"),
                }
                if lm
                else {}
            ),
        }
        for j in jobs
    ]


def _json_row(row: dict[str, Any] | None, drop: Sequence[str] = ()) -> dict[str, Any] | None:
    # NaN (a metric the kind has none of: accuracy for a language model) as null: valid JSON
    if row is None:
        return None
    return {
        k: None if isinstance(v, float) and math.isnan(v) else v
        for k, v in row.items()
        if k not in drop
    }


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["empty"])
        writer.writeheader()
        writer.writerows(rows)


def write_report(sweep_dir: str | Path, jobs: Sequence[SweepJob] | None = None) -> dict[str, Any]:
    """Write the report files into ``sweep_dir``.

    Language models are reported in bits per byte, their best setting the lowest validation
    bits per byte; a sweep mixing them with image jobs gets ``best`` None in report.json and
    ``best_by_kind`` (``{"image": row, "lm": row}``) instead: the two are never ranked as one.

    Returns the summary stored in report.json plus, as plain values, ``markdown`` (report.md),
    ``aggregate`` (its rows) and ``jobs`` (``job_rows``: one dict per job).
    """
    sweep_dir = Path(sweep_dir)
    jobs = list(jobs) if jobs is not None else collect_jobs(sweep_dir)
    rows = aggregate(jobs)
    kinds = sweep_kinds(jobs) or sweep_kinds(rows) or ["image"]
    # a sweep of language models and image jobs has no single best: one per kind
    mixed = len(kinds) > 1
    best_of_kind = {kind: best_setting(rows, kind) for kind in kinds}
    best = None if mixed else best_of_kind[kinds[0]]
    references = reference_line(jobs)

    per_job = job_rows(jobs)
    write_csv(sweep_dir / FILES["jobs"], per_job)
    drop = () if "lm" in kinds else LM_AGGREGATE_COLUMNS  # an image sweep: columns as always
    write_csv(
        sweep_dir / FILES["aggregate"],
        [
            {
                **{k: v for k, v in r.items() if k not in drop},
                "seeds": " ".join(map(str, r["seeds"])),
            }
            for r in rows
        ],
    )
    what = "bits per byte (lower is better)" if kinds == ["lm"] else "accuracy"
    marker = "red box" if is_grid(rows) else "red ring"  # scattered settings: an Optuna search
    title = f"{sweep_dir.name}: student {what}, mean over seeds; {marker}: best on validation"
    if references:
        title += f"\n(test) {references}"
    optuna = optuna_results(sweep_dir)  # an Optuna search: its own best trial
    heatmap = plot_heatmap(rows, best, title, sweep_dir / FILES["heatmap"])
    no_heatmap = None if heatmap else why_no_heatmap(rows)
    if heatmap is None:  # an earlier report's heatmap would no longer match the tables
        (sweep_dir / FILES["heatmap"]).unlink(missing_ok=True)
    markdown = report_markdown(
        sweep_dir.name, jobs, rows, best_of_kind if mixed else best,
        heatmap.name if heatmap else None, no_heatmap, optuna,
    )  # fmt: skip
    (sweep_dir / FILES["markdown"]).write_text(markdown)

    summary = {
        "sweep_dir": str(sweep_dir),
        "counts": status_counts(jobs),
        "best": _json_row(best, drop),
        "references": references,
        "files": {k: str(sweep_dir / v) for k, v in FILES.items() if k != "heatmap" or heatmap},
        "heatmap": str(heatmap) if heatmap else None,
    }
    if no_heatmap:
        summary["no_heatmap"] = no_heatmap
    if optuna:
        summary["optuna"] = optuna
    if kinds != ["image"]:  # language models: "best" is chosen on bits per byte
        summary["kinds"] = kinds
    if mixed:
        summary["best_by_kind"] = {k: _json_row(r) for k, r in best_of_kind.items()}
    (sweep_dir / FILES["json"]).write_text(json.dumps(summary, indent=2) + "\n")
    return {**summary, "markdown": markdown, "aggregate": rows, "jobs": per_job}


def write_by_role(sweep_dir: str | Path, jobs: Sequence[SweepJob] | None = None) -> str:
    """Write report_by_role.md (the seed tables) into ``sweep_dir`` and return its text."""
    sweep_dir = Path(sweep_dir)
    jobs = list(jobs) if jobs is not None else collect_jobs(sweep_dir)
    markdown = by_role_markdown(sweep_dir.name, by_role(jobs), jobs)
    (sweep_dir / BY_ROLE_FILE).write_text(markdown)
    return markdown
