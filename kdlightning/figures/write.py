"""Every figure of a run, written to ``RUN_DIR/figures/*.png``; what cannot be drawn is skipped.

    from kdlightning.figures import write_figures
    paths = write_figures(run_dir, results, teacher, dm)   # after results.json is written

The main job calls this last, after results.json: a figure that fails (no baseline with
``baseline=false``, a teacher-only run, no CSV logs, a data set without images) is skipped with
a log line naming why, and never fails the job or loses its results.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from torch import nn

from kdlightning.data.base import ClassificationDataModule
from kdlightning.figures.curves import learning_curves
from kdlightning.figures.diagram import DPI, process_diagram
from kdlightning.figures.softmax import softmax_figure
from kdlightning.figures.tradeoff import tradeoff_figure
from kdlightning.files import atomic_path

log = logging.getLogger(__name__)

FOLDER = "figures"
FILES = {
    "softmax": "softmax_temperatures.png",
    "process": "process.png",
    "tradeoff": "tradeoff.png",
    "curves": "learning_curves.png",
}
TEMPERATURES = (1, 4, 10)


def save_figure(fig: Figure, path: Path, dpi: int = DPI) -> Path:
    """Write ``fig`` as a PNG through a temporary name: a killed job leaves no half a picture."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    return path


def _process(results: Mapping[str, Any]) -> Figure:
    s = results.get("summary") or {}
    if s.get("task", "distill") != "distill" or "distilled" not in results:
        raise ValueError("a teacher-only run (task=classify) distills nothing")
    if s.get("method", "kd") != "kd":
        raise ValueError(f"the diagram shows vanilla KD, this run used kd.method={s['method']}")
    return process_diagram(s.get("temperature"), s.get("alpha"))


def _softmax(teacher: nn.Module | None, dm: Any, temperatures: Sequence[float]) -> Figure:
    if teacher is None or not isinstance(dm, ClassificationDataModule):
        raise ValueError("needs the teacher and an image-classification data module")
    return softmax_figure(teacher, dm, temperatures)


def write_figures(
    run_dir: str | Path,
    results: Mapping[str, Any],
    teacher: nn.Module | None = None,
    dm: ClassificationDataModule | None = None,
    temperatures: Sequence[float] = TEMPERATURES,
) -> list[Path]:
    """Draw the run's figures into ``run_dir/figures``; returns the files written.

    softmax_temperatures.png (needs ``teacher`` and ``dm``), process.png (distillation runs),
    tradeoff.png (two models or more), learning_curves.png (CSV logs). Each one that cannot be
    drawn is skipped with a warning; none raises.
    """
    out = Path(run_dir) / FOLDER
    makers: dict[str, Callable[[], Figure]] = {
        "softmax": lambda: _softmax(teacher, dm, temperatures),
        "process": lambda: _process(results),
        "tradeoff": lambda: tradeoff_figure(results),
        "curves": lambda: learning_curves(run_dir),
    }
    written = []
    for name, make in makers.items():
        try:
            written.append(save_figure(make(), out / FILES[name]))
        except Exception as err:  # a figure is never worth the job: say why and go on
            log.warning("Figure %s skipped: %s", FILES[name], err)
    if written:
        log.info("Figures: %s", ", ".join(str(p) for p in written))
    return written
