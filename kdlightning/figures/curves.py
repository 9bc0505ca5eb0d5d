"""Learning curves from a run's logs: validation accuracy per epoch of each student.

    from kdlightning.figures import learning_curves, read_curve
    fig = learning_curves("RUN_DIR")            # student alone vs distilled student
    epochs, values = read_curve("RUN_DIR/logs/distilled/metrics.csv", "val/acc")

The CSV logger (``logger=csv``, the default) writes ``RUN_DIR/logs/<stage>/metrics.csv``; with
``logger=tensorboard`` alone, TensorBoard's event files (``RUN_DIR/tensorboard/<stage>/``) are
read instead (when the ``tensorboard`` package is installed). A run with neither (``logger=none``,
``logger=wandb``) gets no curves, and the figure is skipped with a line saying so. A
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


def stage_events(run_dir: str | Path, stage: str) -> Path | None:
    """The folder of ``stage``'s TensorBoard event files (``<name>/<stage>/``), in ``run_dir``
    or the run folder it was trained in when it came from the cache; ``None`` if none."""
    run_dir = Path(run_dir)
    trained_in = ((_results(run_dir).get(stage) or {}).get("cache") or {}).get("trained_in")
    for folder in [run_dir] + ([Path(trained_in)] if trained_in else []):
        found = sorted(folder.glob(f"*/{stage}/events.out.tfevents.*"))
        if found:
            return found[0].parent
    return None


def read_tensorboard_curve(folder: str | Path, key: str = "val/acc") -> tuple[list, list]:
    """``(epochs, values)`` of ``key`` per training epoch in a stage's TensorBoard event files
    (``([], [])`` without the ``tensorboard`` package). Lightning logs ``epoch`` at every step
    it logs a metric: that maps each value to its epoch."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return [], []
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags().get("scalars", []))
    if key not in tags or "epoch" not in tags:
        return [], []
    epoch_at = {e.step: int(e.value) for e in events.Scalars("epoch")}
    trained = {
        epoch_at.get(e.step) for tag in tags if tag.startswith("train/")
        for e in events.Scalars(tag)
    }  # fmt: skip
    per_epoch: dict[int, float] = {}
    for e in events.Scalars(key):
        epoch = epoch_at.get(e.step)
        if epoch is not None and epoch in trained:
            per_epoch[epoch] = float(e.value)
    epochs = sorted(per_epoch)
    return epochs, [per_epoch[e] for e in epochs]


def stage_curve(run_dir: str | Path, stage: str, key: str = "val/acc") -> tuple[list, list]:
    """``key`` per epoch of ``stage``: from its metrics.csv, else its TensorBoard events."""
    path = stage_csv(run_dir, stage)
    if path is not None:
        curve = read_curve(path, key)
        if curve[0]:
            return curve
    events = stage_events(run_dir, stage)
    return read_tensorboard_curve(events, key) if events is not None else ([], [])


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
        epochs, values = stage_curve(run_dir, stage, key)
        if epochs:
            curves.append((label, color, epochs, values))
    teacher = stage_curve(run_dir, "teacher", key)
    if not curves and teacher[0]:  # task=classify: the teacher is the model that trained
        curves.append(("teacher", "tab:blue", *teacher))
    if not curves:
        raise FileNotFoundError(_why_no_curves(run_dir, key))
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


def _why_no_curves(run_dir: Path, key: str) -> str:
    """Why a run has no learning curves, and how the next run gets them."""
    try:
        from omegaconf import OmegaConf

        loggers = sorted(OmegaConf.load(run_dir / "config.yaml").get("logger") or {})
    except Exception:  # no config.yaml (an older run), or one that does not parse
        loggers = None
    fix = "add logger=csv (the default), e.g. 'logger=[csv,wandb]'"
    if loggers is not None and not {"csv", "tensorboard"} & set(loggers):
        named = f"logger=[{','.join(loggers)}]" if loggers else "logger=none"
        return (
            f"learning curves are read from the CSV logger's metrics.csv (or TensorBoard's "
            f"event files) and this run had {named}: no {key} per epoch was written; {fix}"
        )
    return (
        f"no {key} per epoch in {run_dir}/logs/<stage>/metrics.csv or TensorBoard events under "
        f"{run_dir}: the stages did not train here (read back, or from a cache entry whose "
        f"run folder is gone), or the run had no CSV logger; {fix}"
    )


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
