"""The half of the DDP re-launch fix (:mod:`kdlightning.job.distributed`) that runs before Hydra
reads the command line: a process that Lightning started for a job runs exactly its parent's job.

It imports nothing heavy, so that the command-line entry (:mod:`kdlightning.job.cli`) can wrap
its ``@hydra.main`` function with :func:`relaunch_safe` before torch and Lightning are loaded.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

# Set by kdlightning.job.distributed.job_scope around each job: its overrides and directory.
JOB_ENV = "KDL_HYDRA_JOB"


# Command-line flags that choose the config itself; a child keeps them from its parent's argv.
_CONFIG_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")


def _config_flags(argv: list[str]) -> list[str]:
    kept, take_next = [], False
    for arg in argv:
        if take_next or arg.split("=", 1)[0] in _CONFIG_FLAGS:
            kept.append(arg)
            take_next = arg in _CONFIG_FLAGS  # "--config-name x" rather than "--config-name=x"
        else:
            take_next = False
    return kept


def _adopt_parent_job() -> None:
    """In a process Lightning started for a job: run exactly that job (see the module doc)."""
    raw = os.environ.get(JOB_ENV)
    if not raw or os.environ.get("LOCAL_RANK", "0") == "0":
        return
    job = json.loads(raw)
    name = f"{job['job_name']}_rank{os.environ['LOCAL_RANK']}"
    sys.argv[1:] = [
        *_config_flags(sys.argv[1:]),
        *job["overrides"],
        # Quoted: the directory may contain characters Hydra's override grammar reserves.
        f"hydra.run.dir={json.dumps(job['run_dir'])}",
        "hydra.output_subdir=null",  # rank 0 already saved .hydra/ for this job
        f"hydra.job.name={name}",  # its own log file: <job dir>/<name>.log
    ]


def relaunch_safe(entry: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a ``@hydra.main`` function so that a DDP child re-runs its parent's job only."""

    @functools.wraps(entry)
    def main(cfg: DictConfig | None = None) -> Any:
        if cfg is None:  # from the command line: python -m, the console script, a DDP child
            _adopt_parent_job()
        return entry(cfg)

    return main
