"""scikit-learn's digits (1797 images, 8x8, 10 classes): the embedded default data set.

It ships inside scikit-learn, so the default job never downloads anything.

    dm = DigitsDataModule(batch_size=64, seed=0)
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))   # x: (64, 1, 8, 8) float32, y: (64,) int64
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import TensorDataset

from kdlightning.data.base import ClassificationDataModule, RawInput


def _check_fraction(name: str, value: float) -> float:
    v = float(value)
    if not 0.0 < v < 1.0:
        raise ValueError(f"data.{name} must lie strictly between 0 and 1, got {value!r}")
    return v


class DigitsDataModule(ClassificationDataModule):
    """Seeded, stratified train/val/test split of the digits, standardized with train statistics."""

    num_classes = 10
    input_shape = (1, 8, 8)

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 0,
        num_workers: int = 0,
        pin_memory: bool = False,
        eval_batch_size: int | None = None,
        num_labeled: int | None = None,
        on_device: bool | str = "auto",
    ) -> None:
        super().__init__(
            batch_size, num_workers, pin_memory, eval_batch_size, num_labeled, on_device
        )
        self.val_fraction = _check_fraction("val_fraction", val_fraction)
        self.test_fraction = _check_fraction("test_fraction", test_fraction)
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                f"data.val_fraction + data.test_fraction must be < 1, got "
                f"{self.val_fraction} + {self.test_fraction}"
            )
        self.seed = int(seed)
        self.mean: float | None = None  # of the training split's pixels / 16, set by setup
        self.std: float | None = None

    def raw_input(self) -> RawInput:
        """``load_digits()`` values (integers 0-16), divided by 16 and standardized with the
        training split's mean and std (which depend on the seed's split)."""
        if self.mean is None:
            self.setup()
        return RawInput(
            "sklearn.datasets.load_digits() pixel values: integers 0-16, as float32",
            (0.0, 16.0), integer=True, divide_by=16.0, mean=(self.mean,), std=(self.std,),
        )  # fmt: skip

    def source_files(self) -> list[Path]:
        import sklearn.datasets

        # the digits ship inside scikit-learn: another release could ship other pixels
        path = Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"
        return [path] if path.is_file() else []

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        x, y = load_digits(return_X_y=True)
        x = x.astype(np.float32) / 16.0  # pixel values are 0..16
        # Two stratified cuts with one seed: the test set never depends on val_fraction.
        x_rest, x_test, y_rest, y_test = train_test_split(
            x, y, test_size=self.test_fraction, stratify=y, random_state=self.seed
        )
        val_share = self.val_fraction / (1.0 - self.test_fraction)
        x_train, x_val, y_train, y_val = train_test_split(
            x_rest, y_rest, test_size=val_share, stratify=y_rest, random_state=self.seed
        )
        # Standardize with training statistics only: val/test must not leak into preprocessing.
        mean, std = x_train.mean(), x_train.std()
        self.mean, self.std = float(mean), float(std)

        def to_set(xs: np.ndarray, ys: np.ndarray) -> TensorDataset:
            images = torch.from_numpy((xs - mean) / std).float().reshape(-1, *self.input_shape)
            return TensorDataset(images, torch.from_numpy(ys).long())

        self.train_set = to_set(x_train, y_train)
        self.val_set = to_set(x_val, y_val)
        self.test_set = to_set(x_test, y_test)
