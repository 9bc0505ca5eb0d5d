"""Learning curves over seeds: validation accuracy per epoch of the student alone and the
distilled student, mean over the seeds of one setting of a multirun, as a table and a figure.

    python benchmarks/seed_curves.py logs/results/fashion_full/mlp16/kd_long \
        --setting "kd.temperature=2 kd.alpha=0.6" --out docs/figures/fashion_full_curves.png

Each job's stages log ``val/acc`` per epoch in ``logs/<stage>/metrics.csv`` (``logger=csv``);
a stage served by the stage cache is read in the run folder that trained it
(``kdlightning.figures.curves.stage_csv``). Several multirun folders draw one panel each. The
table prints the mean per epoch (in %), so the curves can be read without the figure: a flat
tail says the schedule was long enough.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from kdlightning.figures.curves import read_curve, stage_csv
from kdlightning.report import collect_jobs

STAGES = (("baseline", "student alone", "tab:gray"), ("distilled", "distilled", "tab:orange"))


def mean_curves(sweep_dir: Path, setting: str = "") -> dict[str, list[float]]:
    """``{stage: mean val/acc (%) per epoch}`` over the finished jobs whose overrides hold every
    word of ``setting`` (all jobs when empty)."""
    wanted = set(setting.split())
    per_stage: dict[str, list[list[float]]] = {stage: [] for stage, _, _ in STAGES}
    for job in collect_jobs(sweep_dir):
        if job.status != "ok" or not wanted <= set(job.overrides):
            continue
        for stage, _, _ in STAGES:
            csv = stage_csv(sweep_dir / job.dir, stage)
            if csv is not None:
                per_stage[stage].append([100 * v for v in read_curve(csv)[1]])
    if not per_stage["distilled"]:
        raise SystemExit(f"no finished job in {sweep_dir} with {setting!r}")
    return {
        stage: [statistics.mean(epoch) for epoch in zip(*curves, strict=True)]
        for stage, curves in per_stage.items()
        if curves
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dirs", nargs="+", type=Path)
    parser.add_argument(
        "--setting", action="append", default=[],
        help="overrides a job must hold (one per folder, or one for all)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, help="PNG to write (default: none)")
    args = parser.parse_args(argv)
    settings = args.setting or [""]
    if len(settings) == 1:
        settings = settings * len(args.sweep_dirs)
    panels = []
    for sweep_dir, setting in zip(args.sweep_dirs, settings, strict=True):
        curves = mean_curves(sweep_dir, setting)
        panels.append((f"{sweep_dir.parent.name}/{sweep_dir.name} {setting}".strip(), curves))
        print(f"{sweep_dir} {setting}: val % after epoch (mean over seeds)")
        for stage, values in curves.items():
            print(f"  {stage:9s} " + " ".join(f"{v:.1f}" for v in values))
    if args.out:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(5 * len(panels), 3.6), layout="constrained")
        for ax, (title, curves) in zip(
            fig.subplots(1, len(panels), squeeze=False)[0], panels, strict=True
        ):
            for stage, label, color in STAGES:
                if stage in curves:
                    epochs = range(1, len(curves[stage]) + 1)
                    ax.plot(epochs, curves[stage], label=label, color=color)
            ax.set(title=title, xlabel="epoch", ylabel="val accuracy (%)")
            ax.grid(alpha=0.3)
            ax.legend()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.out, dpi=110)
        print(args.out)


if __name__ == "__main__":
    main()
