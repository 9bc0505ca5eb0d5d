"""Write the report files into the multirun folder: CSV, Markdown, the heatmap and JSON.

from kdlightning.report import write_report, write_by_role
summary = write_report("logs/multiruns/<date>")    # report.{csv,md,json}, heatmap, ...
print(write_by_role("logs/multiruns/<date>"))      # report_by_role.md, returned as text
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdlightning.report.aggregate import aggregate, best_setting, by_role, status_counts
from kdlightning.report.collect import Job, collect_jobs
from kdlightning.report.heatmap import plot_heatmap
from kdlightning.report.render import by_role_markdown, reference_line, report_markdown

FILES = {
    "jobs": "report.csv",
    "aggregate": "report_aggregate.csv",
    "markdown": "report.md",
    "heatmap": "report_heatmap.png",
    "json": "report.json",
}
BY_ROLE_FILE = "report_by_role.md"


def job_rows(jobs: Sequence[Job]) -> list[dict[str, Any]]:
    """One flat dict per job, the columns of report.csv (and of the W&B ``jobs`` table)."""
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
        }
        for j in jobs
    ]


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["empty"])
        writer.writeheader()
        writer.writerows(rows)


def write_report(sweep_dir: str | Path, jobs: Sequence[Job] | None = None) -> dict[str, Any]:
    """Write the report files into ``sweep_dir``.

    Returns the summary stored in report.json plus, as plain values, ``markdown`` (report.md),
    ``aggregate`` (its rows) and ``jobs`` (``job_rows``: one dict per job).
    """
    sweep_dir = Path(sweep_dir)
    jobs = list(jobs) if jobs is not None else collect_jobs(sweep_dir)
    rows = aggregate(jobs)
    best = best_setting(rows)
    references = reference_line(jobs)

    per_job = job_rows(jobs)
    write_csv(sweep_dir / FILES["jobs"], per_job)
    write_csv(
        sweep_dir / FILES["aggregate"],
        [{**r, "seeds": " ".join(map(str, r["seeds"]))} for r in rows],
    )
    title = f"{sweep_dir.name}: student accuracy, mean over seeds; red box: best on validation"
    if references:
        title += f"\n(test) {references}"
    heatmap = plot_heatmap(rows, best, title, sweep_dir / FILES["heatmap"])
    markdown = report_markdown(sweep_dir.name, jobs, rows, best, heatmap.name if heatmap else None)
    (sweep_dir / FILES["markdown"]).write_text(markdown)

    summary = {
        "sweep_dir": str(sweep_dir),
        "counts": status_counts(jobs),
        "best": best,
        "references": references,
        "files": {k: str(sweep_dir / v) for k, v in FILES.items() if k != "heatmap" or heatmap},
        "heatmap": str(heatmap) if heatmap else None,
    }
    (sweep_dir / FILES["json"]).write_text(json.dumps(summary, indent=2) + "\n")
    return {**summary, "markdown": markdown, "aggregate": rows, "jobs": per_job}


def write_by_role(sweep_dir: str | Path, jobs: Sequence[Job] | None = None) -> str:
    """Write report_by_role.md (the seed tables) into ``sweep_dir`` and return its text."""
    sweep_dir = Path(sweep_dir)
    jobs = list(jobs) if jobs is not None else collect_jobs(sweep_dir)
    markdown = by_role_markdown(sweep_dir.name, by_role(jobs), jobs)
    (sweep_dir / BY_ROLE_FILE).write_text(markdown)
    return markdown
