"""``python -m kdlightning.train`` / ``kdl-train``: the main job (kdlightning.job.run).

    python -m kdlightning.train                       # digits: teacher -> alone -> distilled
    python -m kdlightning.train -m kd.temperature=2,4 # a sweep

The command's name stays; the command line is :mod:`kdlightning.job.cli` (it checks the config
before torch and Lightning load), the job :mod:`kdlightning.job.run`.
"""

from typing import Any

from kdlightning.job.cli import main

__all__ = ["main"]  # and, loaded on first use: TASKS, check_task, run


def __getattr__(name: str) -> Any:
    # run, TASKS and check_task load torch and Lightning: only when asked for
    if name in ("TASKS", "check_task", "run"):
        from kdlightning.job import run as job_run

        return getattr(job_run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    main()
