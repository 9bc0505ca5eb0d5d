"""MNIST-1D (Greydanus 2020): 1-D signals of length 40, 10 classes, generated locally.

    dm = MNIST1DDataModule(num_samples=5000, val_size=500, seed=0)
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))   # x: (64, 1, 40) float32, y: (64,) int64

Generated with the ``mnist1d`` package's ``make_dataset`` and its default arguments: 5000
samples split 4000/1000 into the official train/test sets. ``get_dataset`` is never called: it
tries to download the reference pickle first.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import TensorDataset

from kdlightning.data.base import ClassificationDataModule, RawInput
from kdlightning.data.splits import split_indices


class MNIST1DDataModule(ClassificationDataModule):
    """MNIST-1D with a seeded validation split carved from its training part."""

    num_classes = 10
    input_shape = (1, 40)

    def __init__(
        self,
        num_samples: int = 5000,
        train_split: float = 0.8,
        val_size: int = 500,
        generation_seed: int = 42,
        seed: int = 0,
        batch_size: int = 100,
        num_workers: int = 0,
        pin_memory: bool = False,
        eval_batch_size: int | None = None,
        num_labeled: int | None = None,
        on_device: bool | str = "auto",
    ) -> None:
        super().__init__(
            batch_size, num_workers, pin_memory, eval_batch_size, num_labeled, on_device
        )
        if int(num_samples) < 20:
            raise ValueError(f"data.num_samples must be >= 20, got {num_samples!r}")
        if not 0.0 < float(train_split) < 1.0:
            raise ValueError(f"data.train_split must lie in (0, 1), got {train_split!r}")
        self.num_samples = int(num_samples)
        self.train_split = float(train_split)
        self.val_size = int(val_size)
        # generation_seed fixes the data set itself (42: the package's default); seed only moves
        # the validation split, so that runs with different seeds see the same data.
        self.generation_seed = int(generation_seed)
        self.seed = int(seed)

    def raw_input(self) -> RawInput:
        """The signals as ``mnist1d`` generates them; the module does not rescale them."""
        return RawInput("MNIST-1D signals as mnist1d.data.make_dataset generates them (float32)")

    def _generate(self) -> dict:
        from mnist1d.data import get_dataset_args, make_dataset

        args = get_dataset_args(as_dict=False)
        args.num_samples = self.num_samples
        args.train_split = self.train_split
        args.seed = self.generation_seed
        # make_dataset reseeds the global numpy/random generators; leave them as they were.
        np_state, py_state = np.random.get_state(), random.getstate()
        try:
            return make_dataset(args)
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        data = self._generate()

        def tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.from_numpy(x).float().unsqueeze(1), torch.from_numpy(y).long()

        x, y = tensors(data["x"], data["y"])
        train_idx, val_idx = split_indices(len(y), self.val_size, self.seed)
        self.train_set = TensorDataset(x[train_idx], y[train_idx])
        self.val_set = TensorDataset(x[val_idx], y[val_idx])
        self.test_set = TensorDataset(*tensors(data["x_test"], data["y_test"]))
