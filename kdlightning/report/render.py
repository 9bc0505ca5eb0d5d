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
from kdlightning.report.aggregate import reference_accuracy, status_counts, sweep_kinds
from kdlightning.report.collect import SweepJob, kind_of
from kdlightning.report.heatmap import is_grid

# per kind: the results.json key of the teacher's and the student alone's reference metric
REFERENCE_KEYS = {"image": "test/acc", "lm": "test/bpb"}
KIND_NAMES = {"image": "image-classification jobs", "lm": "language-model jobs"}


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


def bpb(value: float | None, std: float | None = None, n: int = 1) -> str:
    """Bits per byte: ``6.2481``; with a std over ``n > 1`` seeds: ``6.2481 ± 0.0100``."""
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.4f} ± {std:.4f}" if std is not None and n > 1 else f"{value:.4f}"


def _fmt(kind: str, value: float | None, std: float | None = None, n: int = 1) -> str:
    return bpb(value, std, n) if kind == "lm" else pct(value, std, n)


def jobs_table(jobs: Sequence[SweepJob]) -> str:
    """One row per job: its grid point, the distilled student's accuracies (image jobs) or
    bits per byte (language models), its status."""
    kinds = sweep_kinds(jobs) or ["image"]  # one set of columns per kind in the sweep
    metrics = {"image": [("val acc", "val/acc"), ("test acc", "test/acc"),
                         ("agreement (test)", "test/agreement")],
               "lm": [("val bpb", "val/bpb"), ("test bpb", "test/bpb")]}  # fmt: skip
    columns = [(kind, header, key) for kind in kinds for header, key in metrics[kind]]
    headers = ["job", "T", "alpha", "seed", *(h for _, h, _ in columns), "status"]
    if any(j.setting for j in jobs):
        headers.insert(1, "setting")
    rows = []
    for j in jobs:
        row = [j.num if j.num >= 0 else j.dir, num(j.temperature), num(j.alpha), num(j.seed),
               *(_fmt(kind, j.metric("distilled", key)) for kind, _, key in columns),
               j.status]  # fmt: skip
        if j.setting:
            row.insert(1, j.setting)
        rows.append(row)
    return markdown_table(headers, rows)


def aggregate_table(rows: Sequence[dict[str, Any]], best: Any) -> str:
    """Mean ± std over seeds per (setting, T, alpha); the best row (or each kind's best row,
    ``best`` a list of rows) marked. Accuracy columns for image jobs, bits per byte for
    language models, both for a sweep that holds both."""
    bests = best if isinstance(best, list | tuple) else [best]
    kinds = sweep_kinds(rows) or ["image"]
    names = {"image": ["val_acc", "test_acc", "test_agreement"], "lm": ["val_bpb", "test_bpb"]}
    titles = {"val_acc": "val acc", "test_acc": "test acc", "test_agreement": "agreement (test)",
              "val_bpb": "val bpb", "test_bpb": "test bpb"}  # fmt: skip
    columns = [(kind, name) for kind in kinds for name in names[kind]]
    headers = ["T", "alpha", "seeds", *(titles[name] for _, name in columns)]
    show_setting = any(r["setting"] for r in rows)
    if show_setting:
        headers.insert(0, "setting")
    out = []
    for r in rows:
        n = r["n"]
        mark = " **(best)**" if any(r is b for b in bests) else ""
        cells = []
        for kind, name in columns:
            cell = _fmt(kind, r[f"{name}_mean"], r[f"{name}_std"], n)
            # marked in the column it was chosen on
            chosen = name == ("val_bpb" if r.get("kind") == "lm" else "val_acc")
            cells.append(cell + (mark if chosen else ""))
        row = [num(r["temperature"]), num(r["alpha"]), n, *cells]
        if show_setting:
            row.insert(0, r["setting"])
        out.append(row)
    return markdown_table(headers, out)


def reference_line(jobs: Sequence[SweepJob], kind: str | None = None) -> str:
    """``teacher 97.50 ± 0.71% · student alone 90.00 ± 0.00%`` (test accuracy), or for
    language models ``teacher 6.2481 bpb · student alone 7.2721 bpb`` (test bits per byte);
    ``""`` when there is none. ``kind``: that kind's jobs only; by default every kind, each
    named when the sweep mixes them."""
    kinds = [kind] if kind is not None else sweep_kinds(jobs) or ["image"]
    lines = []
    for k in kinds:
        members = [j for j in jobs if kind_of(j) == k]
        parts = []
        for label, role in (("teacher", "teacher"), ("student alone", "baseline")):
            ref = reference_accuracy(members, role, REFERENCE_KEYS[k])
            if ref is not None:
                unit = " bpb" if k == "lm" else ""
                parts.append(f"{label} {_fmt(k, ref[0], ref[1], ref[2])}{unit}")
        if parts:
            prefix = f"{KIND_NAMES[k]}: " if len(kinds) > 1 else ""
            lines.append(prefix + " · ".join(parts))
    return "; ".join(lines)


def problems_list(jobs: Sequence[SweepJob]) -> list[str]:
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
    jobs: Sequence[SweepJob],
    rows: Sequence[dict[str, Any]],
    best: dict[str, Any] | None,
    heatmap_name: str | None = None,
    no_heatmap: str | None = None,
    optuna: dict[str, Any] | None = None,
) -> str:
    """report.md: counts, references, the best setting, the aggregate and the job tables, and
    the heatmap (or ``no_heatmap``: why there is none); for an Optuna search (``optuna``: its
    optimization_results.yaml) also the best trial Optuna itself reports.

    A sweep of language models is reported in bits per byte and its best setting is the one
    with the lowest validation bits per byte; a sweep that mixes language models and image
    jobs says so and gives the best of each kind (``best`` is then a ``{kind: row}`` mapping,
    :func:`kdlightning.report.aggregate.best_by_kind`), never one ranking of both.
    """
    counts = status_counts(jobs)
    kinds = sweep_kinds(jobs) or sweep_kinds(rows) or ["image"]
    # best: {kind: row} (maybe empty), or one row (or None), of the sweep's own kind
    by_kind = isinstance(best, dict) and set(best) <= set(KIND_NAMES)
    bests = best if by_kind else {kinds[0]: best}
    lines = [f"# Sweep report: {name}", ""]
    lines.append(f"{len(jobs)} jobs: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + ".")
    for kind in kinds:
        references = reference_line(jobs, kind if len(kinds) > 1 else None)
        if references:
            what = "accuracy" if kind == "image" else "bits per byte"
            whose = f" of the {KIND_NAMES[kind]}" if len(kinds) > 1 else ""
            note = "mean ± std over seeds" if kind == "image" else "lower is better; mean ± std"
            lines.append(f"Reference test {what}{whose} ({note}): {references}.")
    if len(kinds) > 1:
        lines += [
            "",
            "## Best setting of each kind (chosen on validation)",
            "",
            "**This sweep mixes language-model jobs (bits per byte, lower is better) and "
            "image-classification jobs (accuracy, higher is better): they are not ranked "
            "together.** The best of each kind:",
            "",
        ]
        for kind in kinds:
            what = "accuracy" if kind == "image" else "bits per byte"
            lines.append(f"- {KIND_NAMES[kind]} ({what}): " + _best_sentence(bests.get(kind), kind))
    else:
        kind = kinds[0]
        on = "accuracy" if kind == "image" else "bits per byte, lower is better"
        lines += ["", f"## Best setting (chosen on validation {on})", ""]
        lines.append(_best_sentence(bests.get(kind), kind))
    if optuna:
        lines += ["", _optuna_sentence(optuna)]
    marked = [b for b in bests.values() if b is not None]
    lines += ["", "## Mean ± std over seeds", "", aggregate_table(rows, marked), ""]
    if heatmap_name is not None:
        scatter = not is_grid(rows)  # scattered settings (Optuna): points, not grid cells
        lines += [
            f"![T × alpha {'scatter' if scatter else 'heatmap'}]({heatmap_name})",
            "",
            "(Validation and test panels share one colour scale"
            + ("; each point is one setting, ringed red: the best on validation.)" if scatter
               else ".)"),
            "",
        ]  # fmt: skip
    elif no_heatmap:
        lines += [f"No T × alpha heatmap: {no_heatmap}.", ""]
    lines += ["## Jobs", "", jobs_table(jobs), ""]
    problems = problems_list(jobs)
    if problems:
        lines += ["## Failed or unfinished jobs", "", *problems, ""]
    return "\n".join(lines)


def _optuna_sentence(optuna: dict[str, Any]) -> str:
    """The best trial of optimization_results.yaml in words (Optuna breaks ties by the
    earlier trial, the table above by lower T and alpha: the two may name different ties)."""
    params = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in (optuna.get("best_params") or {}).items()
    )
    value, trial = optuna.get("best_value"), optuna.get("best_trial")
    shown = f"{value:.4g}" if isinstance(value, float) else str(value)
    where = f"trial {trial} of {optuna.get('n_trials', '?')}" if trial is not None else "best"
    return (
        f"Optuna search (optimization_results.yaml): {where}, {params}: value {shown}, "
        f"{optuna.get('direction', 'optimize')}d (the jobs' validation figure)."
    )


def _best_sentence(best: dict[str, Any] | None, kind: str) -> str:
    if best is None:
        return "No finished job: nothing to choose from."
    n = best["n"]
    key = "bpb" if kind == "lm" else "acc"
    unit = " bpb" if kind == "lm" else ""
    val = _fmt(kind, best[f"val_{key}_mean"], best[f"val_{key}_std"], n)
    test = _fmt(kind, best[f"test_{key}_mean"], best[f"test_{key}_std"], n)
    return (
        f"T={best['temperature']:g}, alpha={best['alpha']:g}"
        + (f" ({best['setting']})" if best["setting"] else "")
        + f": validation {val}{unit}, test {test}{unit} over {n} seed(s)."
    )


def _mean_std(stats: tuple[float, float, int], scale: float, digits: int) -> str:
    # ``scale``: 100 for accuracies (percent points); a single seed has no spread to show.
    mean, std, n = stats
    if n == 0:
        return "-"
    spread = f"{scale * std:.{digits}f}" if n > 1 else "-"
    return f"{scale * mean:.{digits}f} ± {spread}"


def _is_bpb(table: dict[str, Any]) -> bool:
    # language models (kdlightning.lm): bits per byte, their paired gain too
    return table.get("kind") == "lm" or (table["gain"] or {}).get("metric") == "test/bpb"


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


def _units(tables: Sequence[dict[str, Any]]) -> str:
    lm = [_is_bpb(t) for t in tables]
    if any(lm) and not all(lm):
        return (
            "in % for the image-classification groups and in bits per byte for the "
            "language-model groups (lower is better): this sweep mixes the two, each group is "
            "one kind."
        )
    return "in bits per byte (language models: lower is better)." if any(lm) else "in %."


def by_role_markdown(name: str, tables: Sequence[dict[str, Any]], jobs: Sequence[SweepJob]) -> str:
    """report_by_role.md: one seed table per (setting, T, alpha), then the jobs left out."""
    lines = [
        f"# Seed tables: {name}",
        "",
        "Teacher, student alone and distilled student: mean ± sample std over seeds of each "
        "stage's best-validation checkpoint, " + _units(tables),
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
