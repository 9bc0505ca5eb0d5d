"""Figures of a run, as PNG files next to its results (and in W&B when it is on).

    python -m kdlightning.figures RUN_DIR                    # re-draw a finished run's figures

    from kdlightning.figures import learning_curves, process_diagram, softmax_figure
    softmax_figure(teacher, dm, temperatures=(1, 4, 10)).savefig("softmax.png")
    paths = write_figures(run_dir, results, teacher, dm)    # RUN_DIR/figures/*.png

Modules, one figure each: ``softmax`` (a teacher's outputs for one test image at several T),
``diagram`` (the distillation process, boxes and arrows), ``tradeoff`` (accuracy against
parameters and latency), ``curves`` (validation accuracy per epoch from the CSV logs);
``write`` (all of them for a run, each skipped with a log line when its inputs are missing) and
``cli`` (the command). Figures use matplotlib's object-oriented API: no pyplot, no GUI backend.
"""

from kdlightning.figures.curves import learning_curves, read_curve, stage_csv
from kdlightning.figures.diagram import process_diagram
from kdlightning.figures.softmax import (
    pick_test_image,
    plot_softmax_temperatures,
    softmax_at,
    softmax_figure,
)
from kdlightning.figures.tradeoff import tradeoff_figure
from kdlightning.figures.write import FILES, FOLDER, save_figure, write_figures

__all__ = [
    "FILES",
    "FOLDER",
    "learning_curves",
    "pick_test_image",
    "plot_softmax_temperatures",
    "process_diagram",
    "read_curve",
    "save_figure",
    "softmax_at",
    "softmax_figure",
    "stage_csv",
    "tradeoff_figure",
    "write_figures",
]
