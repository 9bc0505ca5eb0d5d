"""Mean ± std over the seeds of a Hydra multirun: teacher, student alone, distilled student.

    python -m kdlightning.train -m experiment=mnist1d seed=0,1,2
    python benchmarks/seed_table.py logs/multiruns/<time stamp>

Reads every ``<multirun dir>/<job>/results.json`` and prints a Markdown table of test and
validation accuracy (mean ± sample standard deviation, in %) and parameter count per model,
plus the distilled-minus-alone test accuracy difference paired by seed. The test accuracies
are those of each stage's best-validation checkpoint (the job selects on validation only).
A multirun over several (temperature, alpha) values gets one table per pair:

    python -m kdlightning.train -m experiment=mnist1d kd.temperature=1,2,4,8 seed=0,1,2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from kdlightning import report
from kdlightning.compare import ROLES


def load_jobs(multirun_dir: Path) -> list[dict[str, Any]]:
    """The ``results.json`` of every job under ``multirun_dir`` (sorted by seed)."""
    jobs = [json.loads(p.read_text()) for p in sorted(multirun_dir.glob("*/results.json"))]
    if not jobs:
        raise SystemExit(f"no */results.json under {multirun_dir}: is it a finished multirun?")
    return sorted(jobs, key=lambda r: r.get("summary", {}).get("seed", 0))


def mean_std(values: list[float]) -> str:
    """``mean ± std`` in percent (sample std; ``± -`` for a single value)."""
    mean, std = report.mean_std([100.0 * v for v in values])
    return f"{mean:.2f} ± {std:.2f}" if len(values) > 1 else f"{mean:.2f} ± -"


def seed_table(jobs: list[dict[str, Any]]) -> str:
    """The Markdown table for one multirun."""
    seeds = [j.get("summary", {}).get("seed") for j in jobs]
    lines = [
        f"seeds: {seeds} (n = {len(jobs)})",
        "",
        "| model | test acc (%) | val acc (%) | params |",
        "|---|---|---|---|",
    ]
    for key, label in ROLES:
        present = [j[key] for j in jobs if key in j]
        if not present:
            continue
        test = mean_std([r["test/acc"] for r in present])
        val = mean_std([r["val/acc"] for r in present])
        params = sorted({int(r["params"]) for r in present})
        lines.append(f"| {label} | {test} | {val} | {', '.join(f'{p:,}' for p in params)} |")
    paired = [j["distilled"]["test/acc"] - j["baseline"]["test/acc"] for j in jobs
              if "distilled" in j and "baseline" in j]  # fmt: skip
    if paired:
        wins = sum(d > 0 for d in paired)
        lines += ["", f"distilled − alone, test acc: {mean_std(paired)} points "
                      f"(distillation better in {wins} of {len(paired)} seeds)"]  # fmt: skip
    return "\n".join(lines)


def by_kd_setting(jobs: list[dict[str, Any]]) -> dict[tuple[Any, Any], list[dict[str, Any]]]:
    """Jobs grouped by their (temperature, alpha), in sorted order."""
    groups: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    for job in jobs:
        summary = job.get("summary", {})
        groups.setdefault((summary.get("temperature"), summary.get("alpha")), []).append(job)
    return dict(sorted(groups.items(), key=lambda kv: tuple(str(v) for v in kv[0])))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("multirun_dirs", nargs="+", type=Path, help="Hydra multirun folder(s)")
    args = parser.parse_args(argv)
    for folder in args.multirun_dirs:
        groups = by_kd_setting(load_jobs(folder))
        for (temperature, alpha), jobs in groups.items():
            setting = f" (T = {temperature}, alpha = {alpha})" if len(groups) > 1 else ""
            print(f"### {folder}{setting}\n\n{seed_table(jobs)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
