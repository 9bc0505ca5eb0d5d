"""``python -m kdlightning.train`` / ``kdl-train``: the main job (kdlightning.job.run).

    python -m kdlightning.train                       # digits: teacher -> alone -> distilled
    python -m kdlightning.train -m kd.temperature=2,4 # a sweep

The command's name stays; the code lives in :mod:`kdlightning.job.run`.
"""

from kdlightning.job.run import TASKS, check_task, main, run

__all__ = ["TASKS", "check_task", "main", "run"]

if __name__ == "__main__":
    main()
