"""Accuracy of the distilled student with the top-k teacher (``kd.logits_topk=k``) against full
cached logits, over seeds, on the default job (digits transfer set, teacher=cnn, student=mlp).

    nice -n 15 env OMP_NUM_THREADS=1 python benchmarks/topk_accuracy.py          # k 1,3,5,full x 3
    python benchmarks/topk_accuracy.py --seeds 0 --topk 1 full --out /tmp/topk   # fewer runs
    python benchmarks/topk_accuracy.py --extra debug=fast                        # seconds (tests)

One Hydra multirun (``python -m kdlightning.train -m seed=... kd.logits_topk=...``) with
``kd.teacher_logits=cached``: per seed the teacher and the student alone train once (the stage
cache shares them across ``k``), then one distilled student per ``k``. The table gives the mean
and standard deviation over seeds of the distilled student's test accuracy, and its difference
from the full-logits student of the same seed (paired: same teacher, same initial weights).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_sweep(out: Path, seeds: list[int], topk: list[str], extra: list[str]) -> float:
    """The multirun into ``out``; its wall time in seconds."""
    ks = ",".join("null" if k == "full" else k for k in topk)
    cmd = [
        sys.executable, "-m", "kdlightning.train", "-m", f"seed={','.join(map(str, seeds))}",
        f"kd.logits_topk={ks}", "kd.teacher_logits=cached", "logger=none",
        "trainer.enable_progress_bar=false", f"paths.log_dir={out / 'logs'}",
        f"hydra.sweep.dir={out / 'sweep'}", *extra,
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True)
    return time.perf_counter() - start


def collect(sweep: Path) -> dict[tuple[str, int], dict[str, float]]:
    """``(k, seed) -> {"distilled": test acc, "alone": test acc}`` from each job's results."""
    out = {}
    for path in sorted(sweep.glob("*/results.json")):
        results = json.loads(path.read_text())
        info = results["distilled"]["teacher_logits"]
        k = "full" if info.get("topk") is None else str(info["topk"])
        out[(k, int(results["summary"]["seed"]))] = {
            "distilled": float(results["distilled"]["test/acc"]),
            "alone": float(results["baseline"]["test/acc"]),
            "bytes": float(info.get("bytes", 0)),
        }
    return out


def table(runs: dict[tuple[str, int], dict[str, float]], topk: list[str]) -> str:
    """A markdown table: test accuracy per k (mean +/- sd over seeds), paired gap to full."""
    seeds = sorted({s for _, s in runs})
    lines = [
        "| teacher logits | distilled test acc (mean +/- sd) | vs full (pp, paired) | stored |",
        "|---|---|---|---|",
    ]

    def mean_sd(xs: list[float]) -> str:
        sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
        return f"{100 * statistics.mean(xs):.2f} +/- {100 * sd:.2f}"

    for k in topk:
        accs = [runs[(k, s)]["distilled"] for s in seeds if (k, s) in runs]
        if not accs:
            continue
        gaps = [100 * (runs[(k, s)]["distilled"] - runs[("full", s)]["distilled"])
                for s in seeds if (k, s) in runs and ("full", s) in runs]  # fmt: skip
        gap = f"{statistics.mean(gaps):+.2f}" if gaps else "n/a"
        size = runs[(k, seeds[0])]["bytes"] if (k, seeds[0]) in runs else 0
        name = "full (float32)" if k == "full" else f"top-{k}"
        lines.append(f"| {name} | {mean_sd(accs)} | {gap} | {size / 1024:.0f} KiB |")
    alone = [runs[key]["alone"] for key in runs if key[0] == topk[0]]
    lines.append(f"| student alone | {mean_sd(alone)} | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--topk", nargs="+", default=["full", "1", "3", "5"])
    parser.add_argument("--out", type=Path, default=Path("logs/topk_accuracy"))
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for every job")
    args = parser.parse_args(argv)
    topk = ["full", *[k for k in args.topk if k != "full"]]  # full first: the reference
    wall = run_sweep(args.out.resolve(), args.seeds, topk, args.extra)
    print(table(collect(args.out.resolve() / "sweep"), topk))
    print(f"\n{len(args.seeds)} seeds x {len(topk)} settings, wall {wall:.0f} s")


if __name__ == "__main__":
    main()
