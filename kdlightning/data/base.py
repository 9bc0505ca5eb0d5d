"""Shared plumbing for kdlightning's data modules.

Every data module reports ``num_classes`` and ``input_shape`` before ``setup`` runs, so that
``kdlightning.train`` can build teacher and student for the data and check them against it.
"""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader, Dataset


class ClassificationDataModule(L.LightningDataModule):
    """A LightningDataModule with train/val/test datasets and uniform loader settings.

    Subclasses set ``num_classes`` and ``input_shape`` and fill ``train_set``, ``val_set`` and
    ``test_set`` in ``setup``.
    """

    num_classes: int
    input_shape: tuple[int, ...]

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
        eval_batch_size: int | None = None,
    ) -> None:
        super().__init__()
        if int(batch_size) < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size!r}")
        if int(num_workers) < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {num_workers!r}")
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def _loader(self, dataset: Dataset | None, *, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before asking for loaders")
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            # Drop a ragged last batch only when training: tiny last batches make BatchNorm noisy.
            drop_last=train and len(dataset) > self.batch_size,  # type: ignore[arg-type]
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)
