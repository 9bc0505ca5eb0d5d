"""The report of a sweep (a Hydra multirun): tables, the best setting, a heatmap, seed tables.

    python -m kdlightning.train -m +sweep=temperature_alpha seed=0,1,2
    python -m kdlightning.report logs/distill/multiruns/<date>_<time>_<id>   # or: kdl-report DIR
    python -m kdlightning.report DIR --wandb on    # also log it to the sweep's W&B group
    python -m kdlightning.report DIR --by-role     # teacher / alone / distilled per seed group

Reads every job folder of the multirun (``.hydra/config.yaml``, ``.hydra/overrides.yaml``,
``results.json`` or ``failed.json``) and writes into the multirun folder:

- ``report.csv``: one row per job (temperature, alpha, seed, student val/test accuracy,
  test agreement with the teacher, status, error); failed, unfinished, unreadable and
  never-started jobs included, with the reason;
- ``report_aggregate.csv``: mean ± std over seeds for each (setting, temperature, alpha);
- ``report_heatmap.png``: temperature × alpha -> mean student accuracy (validation and test),
  the teacher's and the student-alone baseline's test accuracy in the title; scattered
  settings (an Optuna search, ``hparams_search=kd_optuna``) as points coloured by accuracy;
- ``report.md``: all of the above as Markdown, with the best setting chosen on **validation**
  accuracy (the test accuracy is reported for it, never used to choose);
- ``report.json``: the best setting and the reference accuracies, for scripts (an Optuna
  search's folder: also ``optimization_results.yaml``'s best trial, under ``optuna``);
- with ``--by-role`` instead: ``report_by_role.md``, per (setting, T, alpha) the teacher,
  student alone and distilled student's test/val accuracy and params (mean ± std over seeds)
  and the distilled − alone test accuracy gain paired by seed.

Language-model jobs (``experiment=lm_pydocs``, ``data=text_files``: results.json holds
``val/bpb`` / ``test/bpb``, no accuracy) are reported in bits per byte, and their best setting
is the one with the **lowest** validation bits per byte; report.csv then also has ``kind`` and
``*_bpb`` columns. A sweep that mixes language models and image jobs says so, shows each kind
in its own columns and gives the best setting of each kind (report.json: ``best`` null,
``best_by_kind``), never one ranking of both.

``--wandb auto`` (the default) logs the heatmap and the tables to W&B when the jobs used
``logger=wandb``, into the same project and group as the jobs (``job_type=report``).

Modules: ``collect`` (job folders -> ``SweepJob`` records), ``aggregate`` (statistics),
``render`` (Markdown), ``heatmap`` (PNG), ``write`` (the files), ``cli`` (the command).
"""

from kdlightning.report.aggregate import (
    aggregate,
    best_by_kind,
    best_setting,
    by_role,
    mean_std,
    reference_accuracy,
    status_counts,
)
from kdlightning.report.cli import main
from kdlightning.report.collect import AXES, SweepJob, collect_jobs, expected_overrides, read_job
from kdlightning.report.write import BY_ROLE_FILE, FILES, job_rows, write_by_role, write_report

__all__ = [
    "AXES",
    "BY_ROLE_FILE",
    "FILES",
    "SweepJob",
    "aggregate",
    "best_by_kind",
    "best_setting",
    "by_role",
    "collect_jobs",
    "expected_overrides",
    "job_rows",
    "main",
    "mean_std",
    "read_job",
    "reference_accuracy",
    "status_counts",
    "write_by_role",
    "write_report",
]
