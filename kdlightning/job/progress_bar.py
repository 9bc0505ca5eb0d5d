"""The progress bar's ``v_num`` shows the whole stage name: ``v_num: teacher``, not ``cher``.

Lightning's bars show the logger's version as ``v_num`` and keep only the last 4 characters of a
text version (``lightning.pytorch.callbacks.progress.progress_bar.get_standard_metrics``): the
job names each stage's CSV/TensorBoard version after the stage, so the bar read ``cher``,
``line`` and ``lled``. :class:`StageInProgressBar` is a callback (``conf/callbacks/default.yaml``;
``callbacks.stage_in_progress_bar=null`` turns it off) that gives whichever bar Lightning chose
(Rich or tqdm) the stage's whole name instead.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer


def _metrics_with_stage(
    get_metrics: Any, bar: Any, stage: str, trainer: Trainer, module: LightningModule
) -> dict[str, Any]:
    items = get_metrics(bar, trainer, module)
    if "v_num" in items:
        items["v_num"] = stage
    return items


class StageInProgressBar(Callback):
    """``v_num`` = the stage: the folder name of the Trainer's ``default_root_dir``
    (``<run dir>/<stage>``, kdlightning.job.build.make_trainer), for every logger (W&B's version
    is a random run id). Does nothing when the Trainer has no progress bar."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        bar = trainer.progress_bar_callback
        if bar is None or isinstance(bar.__dict__.get("get_metrics"), functools.partial):
            return
        name = Path(str(trainer.default_root_dir)).name
        # a partial of module-level functions stays picklable (ddp_spawn pickles the callbacks)
        bar.get_metrics = functools.partial(_metrics_with_stage, type(bar).get_metrics, bar, name)
