"""The report as Markdown: the sweep report (report.md) and the per-role seed tables.

    from kdlightning.report import aggregate, best_setting, by_role, collect_jobs
    from kdlightning.report.render import by_role_markdown, report_markdown
    jobs = collect_jobs(DIR); rows = aggregate(jobs)
    print(report_markdown("sweep", jobs, rows, best_setting(rows)))
    print(by_role_markdown("sweep", by_role(jobs), jobs))

Text only: the files are written by kdlightning.report.write, the heatmap drawn by .heatmap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from kdlightning.deploy.compare import markdown_table
from kdlightning.report.aggregate import reference_accuracy, status_counts
from kdlightning.report.collect import Job


def pct(value: float | None, std: float | None = None, n: int = 1) -> str:
    """``0.9123`` -> ``91.23%``; with a std over ``n > 1`` seeds: ``91.23 ± 0.50%``."""
    if value is None or math.isnan(value):
        return "-"
    return (
        f"{100 * value:.2f} ± {100 * std:.2f}%"
        if std is not None and n > 1
        else f"{100 * value:.2f}%"
    )


def num(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def jobs_table(jobs: Sequence[Job]) -> str:
    """One row per job: its grid point, the distilled student's accuracies, its status."""
    headers = ["job", "T", "alpha", "seed", "val acc", "test acc", "agreement (test)", "status"]
    if any(j.setting for j in jobs):
        headers.insert(1, "setting")
    rows = []
    for j in jobs:
        row = [j.num if j.num >= 0 else j.dir, num(j.temperature), num(j.alpha), num(j.seed),
               pct(j.metric("distilled", "val/acc")), pct(j.metric("distilled", "test/acc")),
               pct(j.metric("distilled", "test/agreement")), j.status]  # fmt: skip
        if j.setting:
            row.insert(1, j.setting)
        rows.append(row)
    return markdown_table(headers, rows)


def aggregate_table(rows: Sequence[dict[str, Any]], best: dict[str, Any] | None) -> str:
    """Mean ± std over seeds per (setting, T, alpha); the best row marked."""
    headers = ["T", "alpha", "seeds", "val acc", "test acc", "agreement (test)"]
    show_setting = any(r["setting"] for r in rows)
    if show_setting:
        headers.insert(0, "setting")
    out = []
    for r in rows:
        n = r["n"]
        mark = " **(best)**" if r is best else ""
        row = [num(r["temperature"]), num(r["alpha"]), n,
               pct(r["val_acc_mean"], r["val_acc_std"], n) + mark,
               pct(r["test_acc_mean"], r["test_acc_std"], n),
               pct(r["test_agreement_mean"], r["test_agreement_std"], n)]  # fmt: skip
        if show_setting:
            row.insert(0, r["setting"])
        out.append(row)
    return markdown_table(headers, out)


def reference_line(jobs: Sequence[Job]) -> str:
    """``teacher 97.50 ± 0.71% · student alone 90.00 ± 0.00%`` (test accuracy), or ``""``."""
    parts = []
    for label, role in (("teacher", "teacher"), ("student alone", "baseline")):
        ref = reference_accuracy(jobs, role)
        if ref is not None:
            parts.append(f"{label} {pct(ref[0], ref[1], ref[2])}")
    return " · ".join(parts)


def problems_list(jobs: Sequence[Job]) -> list[str]:
    """A Markdown bullet per job that is not ``ok``: where it is, its overrides, why."""
    lines = []
    for j in jobs:
        if j.status != "ok":
            where = f"{j.dir}/" if j.dir else "(no folder)"
            lines.append(f"- job {j.num} {where} `{' '.join(j.overrides)}`: {j.status}"
                         + (f": {j.error}" if j.error else ""))  # fmt: skip
    return lines


def report_markdown(
    name: str,
    jobs: Sequence[Job],
    rows: Sequence[dict[str, Any]],
    best: dict[str, Any] | None,
    heatmap_name: str | None = None,
) -> str:
    """report.md: counts, references, the best setting, the aggregate and the job tables."""
    references = reference_line(jobs)
    counts = status_counts(jobs)
    lines = [f"# Sweep report: {name}", ""]
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
            + f": validation {pct(best['val_acc_mean'], best['val_acc_std'], n)}, "
            f"test {pct(best['test_acc_mean'], best['test_acc_std'], n)} over {n} seed(s)."
        )
    lines += ["", "## Mean ± std over seeds", "", aggregate_table(rows, best), ""]
    if heatmap_name is not None:
        lines += [f"![T × alpha heatmap]({heatmap_name})", ""]
    lines += ["## Jobs", "", jobs_table(jobs), ""]
    problems = problems_list(jobs)
    if problems:
        lines += ["## Failed or unfinished jobs", "", *problems, ""]
    return "\n".join(lines)


def _mean_std(stats: tuple[float, float, int], scale: float, digits: int) -> str:
    # ``scale``: 100 for accuracies (percent points); a single seed has no spread to show.
    mean, std, n = stats
    if n == 0:
        return "-"
    spread = f"{scale * std:.{digits}f}" if n > 1 else "-"
    return f"{scale * mean:.{digits}f} ± {spread}"


def _is_bpb(table: dict[str, Any]) -> bool:
    # language models (kdlightning.lm): their paired gain is in test bits per byte
    return (table["gain"] or {}).get("metric") == "test/bpb"


def _group_title(table: dict[str, Any]) -> str:
    parts = [table["setting"]] if table["setting"] else []
    if table["temperature"] is not None or table["alpha"] is not None:
        parts.append(f"T={num(table['temperature'])}, alpha={num(table['alpha'])}")
    return ", ".join(parts) or "all jobs"


def seed_table(table: dict[str, Any]) -> str:
    """One group of ``by_role``: seeds, the per-role table and the paired gain line."""
    seeds = ", ".join(num(s) for s in table["seeds"])
    lines = [f"seeds: [{seeds}] (n = {table['n']})", ""]
    gain = table["gain"]
    # accuracies in percent points, 2 decimals; bits per byte (language models) with 4
    bpb = _is_bpb(table)
    key, scale, digits, unit = ("bpb", 1.0, 4, "bpb") if bpb else ("acc", 100.0, 2, "acc (%)")
    rows = [[r["label"], _mean_std(r[f"test_{key}"], scale, digits),
             _mean_std(r[f"val_{key}"], scale, digits),
             ", ".join(f"{p:,}" for p in r["params"]) or "-"] for r in table["roles"]]  # fmt: skip
    lines.append(markdown_table(["model", f"test {unit}", f"val {unit}", "params"], rows))
    if gain is not None:
        spread = f"{gain['std']:.{digits}f}" if gain["n"] > 1 else "-"
        what = "alone − distilled, test bits per byte" if bpb else "distilled − alone, test acc"
        lines += ["", f"{what}: {gain['mean']:.{digits}f} ± {spread}{'' if bpb else ' points'} "
                      f"(distillation better in {gain['wins']} of {gain['n']} seeds)"]  # fmt: skip
    return "\n".join(lines)


def by_role_markdown(name: str, tables: Sequence[dict[str, Any]], jobs: Sequence[Job]) -> str:
    """report_by_role.md: one seed table per (setting, T, alpha), then the jobs left out."""
    lines = [
        f"# Seed tables: {name}",
        "",
        "Teacher, student alone and distilled student: mean ± sample std over seeds of each "
        "stage's best-validation checkpoint, "
        + (
            "in bits per byte (language models: lower is better)."
            if any(_is_bpb(t) for t in tables)
            else "in %."
        ),
        "",
    ]
    if not tables:
        lines += ["No finished job: no table.", ""]
    for table in tables:
        lines += [f"## {_group_title(table)}", "", seed_table(table), ""]
    problems = problems_list(jobs)
    if problems:
        lines += ["## Left out (not ok)", "", *problems, ""]
    return "\n".join(lines)
