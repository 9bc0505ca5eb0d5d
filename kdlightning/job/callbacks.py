"""Lightning callbacks the job adds through ``conf/callbacks/``.

``LastCheckpoint`` writes ``<stage>/checkpoints/last.ckpt`` at the end of every training epoch,
atomically. Lightning's own ``ModelCheckpoint(save_last=True)`` refreshes last.ckpt only when it
also saves a top-k checkpoint, i.e. when the monitored metric improves: a run killed at epoch
257 of 400 whose best epoch was 16 resumed from epoch 16 (issue 19). ``resume=true`` reads this
file; a kill loses at most the epoch in progress.
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L


class LastCheckpoint(L.Callback):
    """Save ``dirpath/filename`` after every training epoch (after its validation), through a
    temporary file renamed into place: a kill during the write leaves the previous one whole."""

    def __init__(self, dirpath: str | Path | None = None, filename: str = "last.ckpt") -> None:
        if dirpath is None:
            raise ValueError("LastCheckpoint needs a dirpath (the job sets <stage>/checkpoints)")
        self.path = Path(dirpath) / filename

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run:
            return
        tmp = self.path.with_name(f".{self.path.stem}.tmp{self.path.suffix}")
        # every rank calls it (it synchronizes); rank 0 writes. weights_only=False: a full
        # checkpoint (optimizer, loops, callbacks) is what resume needs; saying so also keeps
        # Lightning from printing "`weights_only` was not set" after every epoch.
        trainer.save_checkpoint(tmp, weights_only=False)
        if trainer.is_global_zero:
            os.replace(tmp, self.path)
