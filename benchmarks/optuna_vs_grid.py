"""The Optuna-vs-grid table of docs/sweeps_and_wandb.md, from the folders of optuna_vs_grid.sh.

    python benchmarks/optuna_vs_grid.py logs/optuna_vs_grid

Reads ``grid/`` and ``optuna_seed{0,1,2}/`` with kdl-report's reader (kdlightning.report). The
choice of each search is its first job, in job order, with the best **validation** accuracy:
Optuna's own rule (``optimization_results.yaml``: the earliest best trial), and on the grid,
whose jobs run T-major in ascending order, kdl-report's (ties to the lower T, then alpha). The
test accuracy of that choice is reported beside it, never used to choose; so is how many jobs
tie with it (the validation split has 270 images: 1 image is 0.37 points) and their test range.
"6 trials" is the first 6 trials of a 12-trial run: those a 6-trial run with the same sampler
seed makes (TPE proposes each trial from the earlier ones only).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from kdlightning.report import collect_jobs
from kdlightning.report.collect import SweepJob

SEEDS = (0, 1, 2)


def choice(jobs: list[SweepJob]) -> dict[str, float]:
    """The first finished job with the best validation accuracy, and the ties with it."""
    ok = sorted((j for j in jobs if j.status == "ok"), key=lambda j: j.num)
    if not ok:
        raise SystemExit(f"no finished job among {len(jobs)}")
    val = max(j.metric("distilled", "val/acc") for j in ok)
    tied = [j for j in ok if j.metric("distilled", "val/acc") == val]
    tests = [100 * j.metric("distilled", "test/acc") for j in tied]
    best = tied[0]
    return {"n": len(ok), "val": 100 * val, "test": tests[0], "T": best.temperature,
            "alpha": best.alpha, "ties": len(tied), "low": min(tests),
            "high": max(tests)}  # fmt: skip


def row(name: str, seed: str, found: dict[str, float]) -> None:
    spread = f"{found['low']:.2f}-{found['high']:.2f}" if found["ties"] > 1 else "-"
    print(f"| {name} | {seed} | {found['n']} | {found['val']:.2f} | {found['test']:.2f} | "
          f"{found['T']:.3g} | {found['alpha']:.3g} | {found['ties']} | {spread} |")  # fmt: skip


def main(logs: Path) -> None:
    print("| search | sweeper seed | distillations | best val acc (%) | its test acc (%) | T "
          "| alpha | jobs tied on val | their test acc (%) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    row("grid: T 1,2,4,8,12,16 x alpha 0.1,0.5,0.9", "-", choice(collect_jobs(logs / "grid")))
    means = {}
    for trials in (6, 12):
        found = []
        for seed in SEEDS:
            jobs = collect_jobs(logs / f"optuna_seed{seed}")
            found.append(choice([j for j in jobs if 0 <= j.num < trials]))
            row(f"Optuna TPE, {trials} trials", str(seed), found[-1])
        means[trials] = found
    for trials, found in means.items():
        vals, tests = [f["val"] for f in found], [f["test"] for f in found]
        print(
            f"| Optuna TPE, {trials} trials: mean ± std over the 3 sweeper seeds | | {trials} | "
            f"{statistics.fmean(vals):.2f} ± {statistics.stdev(vals):.2f} | "
            f"{statistics.fmean(tests):.2f} ± {statistics.stdev(tests):.2f} | | | | |"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "logs/optuna_vs_grid"))
