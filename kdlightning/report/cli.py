"""The ``kdl-report`` command (also ``python -m kdlightning.report``).

kdl-report logs/distill/multiruns/<date>_<time>_<id>            # report.{csv,md,json}, heatmap
kdl-report logs/distill/multiruns/<date>_<time>_<id> --wandb on # also log it to the W&B group
kdl-report DIR1 DIR2 --by-role                                  # seed tables per role
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdlightning.report.collect import SweepJob, collect_jobs
from kdlightning.report.write import BY_ROLE_FILE, write_by_role, write_report


def _wandb_settings(jobs: Sequence[SweepJob], choice: str) -> dict[str, Any] | None:
    """The W&B settings to log the report with, or None not to log it."""
    settings = next((j.wandb for j in jobs if j.wandb is not None), None)
    if choice == "on":
        return settings or {}
    return settings if choice == "auto" else None


def main(argv: Sequence[str] | None = None) -> int:
    """Write (and print) the report of each multirun folder given; 0 on success."""
    parser = argparse.ArgumentParser(
        prog="kdl-report", description="The report of a sweep: tables, best setting, heatmap."
    )
    parser.add_argument(
        "sweep_dirs",
        nargs="+",
        type=Path,
        help="multirun folder(s), e.g. logs/distill/multiruns/<date>_<time>_<id>",
    )
    parser.add_argument(
        "--wandb",
        choices=("auto", "on", "off"),
        default="auto",
        help="log the heatmap and tables to W&B (auto: when the jobs used logger=wandb)",
    )
    parser.add_argument(
        "--by-role",
        action="store_true",
        help=f"print the teacher / student alone / distilled seed tables instead (writes "
        f"{BY_ROLE_FILE}; no W&B)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for sweep_dir in args.sweep_dirs:
        if not sweep_dir.is_dir():
            parser.error(f"{str(sweep_dir)!r} is not a folder")
        try:
            jobs = collect_jobs(sweep_dir)
        except FileNotFoundError as err:
            parser.error(str(err))
        if args.by_role:
            print(write_by_role(sweep_dir, jobs))
            print(f"written: {sweep_dir / BY_ROLE_FILE}\n")
            continue
        report = write_report(sweep_dir, jobs)
        print(report["markdown"])
        print(f"\nwritten: {', '.join(report['files'].values())}")
        settings = _wandb_settings(jobs, args.wandb)
        if settings is not None:
            from kdlightning.job.tracking import log_report  # W&B only when it is wanted

            log_report(sweep_dir, report, settings)
    return 0
