"""Learning curves from a run's CSV logs: validation accuracy per epoch of each student.

    from kdlightning.figures import learning_curves, read_curve
    fig = learning_curves("RUN_DIR")            # student alone vs distilled student
    epochs, values = read_curve("RUN_DIR/logs/distilled/metrics.csv", "val/acc")

The CSV logger (``logger=csv``, the default) writes ``RUN_DIR/logs/<stage>/metrics.csv``. A
stage that came from the cache (``kdlightning.job.cache``) trained in another run's folder, named in
results.json (``<stage>.cache.trained_in``): its curve is read there while that folder exists.
A stage's CSV also holds the validation of the best checkpoint after training, logged at the
epoch after the last: only epochs that trained count, the last value of each.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from matplotlib.figure import Figure

STAGES = (
    ("baseline", "student alone", "tab:gray"),
    ("distilled", "distilled student", "tab:orange"),
)


def stage_csv(run_dir: str | Path, stage: str) -> Path | None:
    """``metrics.csv`` of ``stage`` in ``run_dir``, else in the run folder it was trained in
    when it came from the cache; ``None`` when there is none."""
    run_dir = Path(run_dir)
    trained_in = ((_results(run_dir).get(stage) or {}).get("cache") or {}).get("trained_in")
    for folder in [run_dir] + ([Path(trained_in)] if trained_in else []):
        default = folder / "logs" / stage / "metrics.csv"
        if default.is_file():
            return default
        # Another logger name (logger.csv.name=...): the same <name>/<stage>/metrics.csv layout.
        found = sorted(folder.glob(f"*/{stage}/metrics.csv"))
        if found:
            return found[0]
    return None


def read_curve(path: str | Path, key: str = "val/acc") -> tuple[list[int], list[float]]:
    """``(epochs, values)`` of ``key`` per training epoch in a Lightning ``metrics.csv``."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    trained = {
        row["epoch"] for row in rows if any(row.get(k) for k in row if k.startswith("train/"))
    }
    per_epoch: dict[int, float] = {}
    for row in rows:
        if row.get(key) and row.get("epoch") in trained:
            per_epoch[int(row["epoch"])] = float(row[key])  # a resumed epoch: its last value
    epochs = sorted(per_epoch)
    return epochs, [per_epoch[e] for e in epochs]


def learning_curves(run_dir: str | Path, key: str = "val/acc") -> Figure:
    """``key`` per epoch (in %) for the student alone and the distilled student of the run in
    ``run_dir`` (the teacher's for a teacher-only run), with the teacher's final value dashed.

    Raises ``FileNotFoundError`` when the run has no CSV logs holding ``key``.
    """
    run_dir = Path(run_dir)
    curves = []
    for stage, label, color in STAGES:
        path = stage_csv(run_dir, stage)
        epochs, values = read_curve(path, key) if path is not None else ([], [])
        if epochs:
            curves.append((label, color, epochs, values))
    teacher_csv = stage_csv(run_dir, "teacher")
    teacher = read_curve(teacher_csv, key) if teacher_csv else ([], [])
    if not curves and teacher[0]:  # task=classify: the teacher is the model that trained
        curves.append(("teacher", "tab:blue", *teacher))
    if not curves:
        raise FileNotFoundError(
            f"no {key} per epoch in {run_dir}/logs/<stage>/metrics.csv: the run had no CSV "
            "logger (logger=csv writes them) or its stages did not train"
        )
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    for label, color, epochs, values in curves:
        ax.plot([e + 1 for e in epochs], [100 * v for v in values], color=color, label=label,
                marker="o" if len(epochs) < 30 else None, markersize=3)  # fmt: skip
    final = _teacher_value(run_dir, key)
    if final is not None and curves[0][0] != "teacher":
        ax.axhline(100 * final, color="tab:blue", linestyle="--", label="teacher (its best)")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{key} (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    fig.suptitle(f"Learning curves: {key} per epoch")
    return fig


def _results(run_dir: Path) -> dict:
    """The run's results.json, ``{}`` when it has none (yet) or it cannot be read."""
    try:
        results = json.loads((run_dir / "results.json").read_text())
    except (OSError, ValueError):
        return {}
    return results if isinstance(results, dict) else {}


def _teacher_value(run_dir: Path, key: str) -> float | None:
    value = (_results(run_dir).get("teacher") or {}).get(key)
    return float(value) if isinstance(value, int | float) else None
