"""``python -m kdlightning.figures RUN_DIR [...]``: re-draw a finished run's figures.

    python -m kdlightning.figures logs/distill/runs/<date>_<time>_<id>
    python -m kdlightning.figures RUN_DIR --temperatures 1 2 8

Reads results.json, rebuilds the data module from the run's config (``config.yaml``, else
Hydra's ``.hydra/config.yaml``: ``kdlightning.job.rundir``) and the teacher from its saved stage
(``teacher/result``, tensors only), then writes ``RUN_DIR/figures/*.png`` as the job does. A
figure whose inputs are gone is skipped with a log line; a folder that is not a finished run
is refused.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from kdlightning.figures.write import TEMPERATURES, write_figures
from kdlightning.job.rundir import load_config, load_data, load_teacher

log = logging.getLogger(__name__)


def load_run(run_dir: str | Path) -> tuple[dict[str, Any], nn.Module | None, Any]:
    """``(results, teacher, data module)`` of a finished run; the teacher and the data module
    are ``None`` (with a warning) when they cannot be rebuilt."""
    run_dir = Path(run_dir)
    results_file = run_dir / "results.json"
    if not results_file.is_file():
        raise FileNotFoundError(
            f"{run_dir} holds no results.json: give the folder of a finished run "
            "(python -m kdlightning.train prints it at the end)"
        )
    results = json.loads(results_file.read_text())
    teacher, dm = None, None
    try:
        cfg = load_config(run_dir)
        dm = load_data(cfg)
        teacher = load_teacher(run_dir, cfg, dm)
        if teacher is None:
            log.warning("No saved teacher in %s/teacher/result: no softmax figure", run_dir)
    except Exception as err:  # the other figures need neither
        log.warning(
            "Cannot rebuild the teacher and data of %s (%s): no softmax figure", run_dir, err
        )
    return results, teacher, dm


def main(argv: Sequence[str] | None = None) -> int:
    """Re-draw the figures of each run folder given; 0 when every folder was a finished run."""
    parser = argparse.ArgumentParser(
        prog="python -m kdlightning.figures", description="Re-draw a finished run's figures."
    )
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run folder(s) with results.json")
    parser.add_argument(
        "--temperatures", nargs="+", type=float, default=list(TEMPERATURES),
        help="temperatures of the softmax figure (default: 1 4 10)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    status = 0
    for run_dir in args.run_dirs:
        try:
            results, teacher, dm = load_run(run_dir)
        except (FileNotFoundError, ValueError) as err:
            print(f"error: {err}")
            status = 1
            continue
        for path in write_figures(run_dir, results, teacher, dm, args.temperatures):
            print(path)
    return status
