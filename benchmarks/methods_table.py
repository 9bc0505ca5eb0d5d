"""The methods table: each method's setting chosen on validation, its test accuracy over seeds.

    python benchmarks/methods_table.py logs/results/methods    # after run_results.sh methods

Reads the multirun folders under the given folder (one per method, as ``run_results.sh methods``
writes them). For each method, the jobs are grouped by setting (every swept override but the
seed); the setting with the best mean *validation* accuracy of the distilled student is chosen,
and only then its test accuracy is read: mean ± std over seeds, and the gain over the student
alone paired per seed (same seed: same initial weights, same data order). The cost column is
the distilled stage's mean training time relative to vanilla KD's, from the same runs (one
process per job, one thread; the epochs are the same for every method); without kd's jobs (a
partial run, e.g. ``METHODS=crd``) the teacher and the student alone come from the first method's
jobs and the cost column is left empty.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from kdlightning.deploy.compare import markdown_table
from kdlightning.report import collect_jobs


def mean_std(values: Sequence[float], sign: str = "") -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):{sign}.2f} ± {std:.2f}"


def method_rows(sweep_dir: Path) -> dict[str, dict]:
    """``{setting: {seed: results.json}}`` of the finished jobs of one method's multirun."""
    groups: dict[str, dict[int, dict]] = defaultdict(dict)
    jobs = collect_jobs(sweep_dir)
    # the setting: the overrides that differ between the jobs of this multirun, seed aside
    values = defaultdict(set)
    for job in jobs:
        for o in job.overrides:
            values[o.split("=", 1)[0]].add(o)
    swept = {k for k, v in values.items() if len(v) > 1 and k != "seed"}
    for job in jobs:
        if job.status != "ok":
            print(f"skipped {job.dir}: {job.status} {job.error}", file=sys.stderr)
            continue
        setting = " ".join(o for o in job.overrides if o.split("=", 1)[0] in swept)
        results = json.loads((sweep_dir / job.dir / "results.json").read_text())
        groups[setting][int(job.seed)] = results
    return groups


def choose(groups: dict[str, dict[int, dict]]) -> tuple[str, dict[int, dict], float]:
    """The setting with the best mean validation accuracy of the distilled student."""

    def val(setting: str) -> float:
        return statistics.mean(r["distilled"]["val/acc"] for r in groups[setting].values())

    best = max(groups, key=val)
    return best, groups[best], val(best)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path, help="folder holding one multirun folder per method")
    args = parser.parse_args(argv)
    chosen = {}
    for sweep_dir in sorted(p for p in args.root.iterdir() if (p / "multirun.yaml").is_file()):
        groups = method_rows(sweep_dir)
        if groups:
            chosen[sweep_dir.name] = (*choose(groups), len(groups))
    if not chosen:
        parser.error(f"no finished jobs under {args.root} (run benchmarks/run_results.sh methods)")
    ref_runs = (chosen.get("kd") or next(iter(chosen.values())))[1]
    kd_fit = (statistics.mean(r["distilled"]["fit_seconds"] for r in chosen["kd"][1].values())
              if "kd" in chosen else None)  # fmt: skip
    seeds = sorted(ref_runs)
    teacher = [100 * ref_runs[s]["teacher"]["test/acc"] for s in seeds]
    alone = [100 * ref_runs[s]["baseline"]["test/acc"] for s in seeds]
    rows = [
        ["teacher", "", "-", mean_std(teacher), "", ""],
        ["student alone", "", "-", mean_std(alone), "", ""],
    ]
    order = ["kd", "dkd", "dist", "ls_kd", "fitnet", "at", "rkd", "pkt", "crd", "dml"]
    for method in sorted(chosen, key=lambda m: (order.index(m) if m in order else len(order), m)):
        setting, runs, val, n_settings = chosen[method]
        if sorted(runs) != seeds:
            print(f"{method}: seeds {sorted(runs)} differ from {seeds}", file=sys.stderr)
            continue
        test = [100 * runs[s]["distilled"]["test/acc"] for s in seeds]
        gain = [t - 100 * runs[s]["baseline"]["test/acc"] for t, s in zip(test, seeds, strict=True)]
        fit = statistics.mean(r["distilled"]["fit_seconds"] for r in runs.values())
        better = sum(g > 0 for g in gain)
        rows.append(
            [
                method,
                f"{setting or '(defaults)'} [1 of {n_settings}]",
                f"{100 * val:.2f}",
                mean_std(test),
                f"{mean_std(gain, sign='+')} ({better}/{len(gain)})",
                f"{fit / kd_fit:.2f}x" if kd_fit else "",
            ]
        )
    headers = ["model", "chosen on val", "val acc %", "test acc % (mean ± std)",
               "gain vs alone (paired; seeds better)", "fit time vs kd"]  # fmt: skip
    print(f"seeds {', '.join(map(str, seeds))}\n")
    print(markdown_table(headers, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
