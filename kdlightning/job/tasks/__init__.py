"""What differs between the kinds of job: a task object per kind of data, one pipeline for all.

    task = task_for(dm)          # ImageTask for classification data, TextTask for text
    task.check(cfg, dm)          # start-up checks that need the data module
    model = task.build(cfg.student.model, dm, "student")
    module = task.supervised_module(model, job)      # the teacher's / the baseline's module
    distiller = task.distiller(job)                  # student + distillation module
    results["distilled"].update(task.costs(cfg, model, dm))
    table = task.write(out, results, weights)

The stages (:mod:`kdlightning.job.stages`) and the job (:mod:`kdlightning.job.run`) only call
these methods; they never ask which kind of data they have.
"""

from __future__ import annotations

from typing import Any

from kdlightning.job.tasks.base import Distiller, Task
from kdlightning.job.tasks.image import ImageTask
from kdlightning.job.tasks.text import TextTask
from kdlightning.lm.data import TextDataModule

__all__ = ["Distiller", "ImageTask", "Task", "TextTask", "task_for"]


def task_for(dm: Any) -> Task:
    """The task for a data module: text data modules are language modelling, the rest image
    (or 1-D signal) classification."""
    return TextTask() if isinstance(dm, TextDataModule) else ImageTask()
