"""The Optuna-vs-grid table of docs/sweeps_and_wandb.md, from the folders of optuna_vs_grid.sh.

    python benchmarks/optuna_vs_grid.py logs/optuna_vs_grid

Reads ``grid/`` and ``optuna_seed{0,1,2}/`` with kdl-report's reader (kdlightning.report) and
chooses in each the setting with the best **validation** accuracy by kdl-report's own rule (ties:
lower T, then lower alpha); the test accuracy of that choice is reported beside it, never used to
choose. "6 trials" is the best of an Optuna run's first 6 trials (job folders 0-5), which are the
trials a 6-trial run with the same sampler seed would have made.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from kdlightning.report import aggregate, best_setting, collect_jobs
from kdlightning.report.collect import SweepJob

SEEDS = (0, 1, 2)


def choice(jobs: list[SweepJob]) -> tuple[float, float, float, float]:
    """(T, alpha, val acc, test acc) of the finished jobs' best setting on validation."""
    ok = [j for j in jobs if j.status == "ok"]
    best = best_setting(aggregate(ok))
    if best is None:
        raise SystemExit(f"no finished job among {len(jobs)}")
    return best["temperature"], best["alpha"], best["val_acc_mean"], best["test_acc_mean"]


def row(name: str, seed: str, jobs: list[SweepJob]) -> tuple[float, float, str]:
    t, a, val, test = choice(jobs)
    ran = sum(j.status == "ok" for j in jobs)
    print(f"| {name} | {seed} | {ran} | {100 * val:.2f} | {100 * test:.2f} | {t:.3g} | {a:.3f} |")
    return val, test, name


def main(logs: Path) -> None:
    print("| search | sweeper seed | jobs | best val acc (%) | its test acc (%) | T | alpha |")
    print("|---|---|---|---|---|---|---|")
    row("grid 6 T x 3 alpha", "-", collect_jobs(logs / "grid"))
    means: dict[int, list[tuple[float, float]]] = {6: [], 12: []}
    for trials in (6, 12):
        for seed in SEEDS:
            jobs = [j for j in collect_jobs(logs / f"optuna_seed{seed}") if 0 <= j.num < trials]
            val, test, _ = row(f"Optuna TPE, {trials} trials", str(seed), jobs)
            means[trials].append((val, test))
    for trials, pairs in means.items():
        vals, tests = [100 * v for v, _ in pairs], [100 * t for _, t in pairs]
        print(
            f"| Optuna TPE, {trials} trials: mean ± std over the 3 seeds | | {trials} | "
            f"{statistics.fmean(vals):.2f} ± {statistics.stdev(vals):.2f} | "
            f"{statistics.fmean(tests):.2f} ± {statistics.stdev(tests):.2f} | | |"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "logs/optuna_vs_grid"))
