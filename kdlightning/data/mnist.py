"""MNIST and Fashion-MNIST (60k/10k grey 28x28 images, 10 classes) through torchvision.

    dm = FashionMNISTDataModule(data_dir="data", batch_size=128, val_size=5000, seed=0)
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))   # x: (128, 1, 28, 28) float32, y: (128,) int64

Nothing is downloaded unless ``download=True``. Before asking torchvision, the raw idx files
are looked up in ``<data_dir>/<Name>/raw/`` and in ``system_dir``: on Debian/Ubuntu,
``apt-get install dataset-fashion-mnist`` puts the four gzipped Fashion-MNIST idx files into
``/usr/share/datasets/fashion-mnist``, and they are unpacked into ``data_dir`` from there.
torchvision reads the idx files (it wants them unpacked, hence the gunzip).
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

from torch.utils.data import TensorDataset
from torchvision import datasets

from kdlightning.data.base import ClassificationDataModule
from kdlightning.data.splits import split_indices

# Where Debian's dataset-fashion-mnist package installs the gzipped idx files.
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def stage_idx_files(raw_dir: Path, search_dirs: list[Path]) -> bool:
    """Make the four unpacked idx files exist in ``raw_dir``; True when all of them do.

    Each missing file is taken from ``raw_dir`` or ``search_dirs``, gzipped (``name.gz``) or
    not; nothing is ever downloaded here.
    """
    for name in _IDX_FILES:
        target = raw_dir / name
        if target.is_file():
            continue
        for folder in [raw_dir, *search_dirs]:
            packed, plain = folder / f"{name}.gz", folder / name
            if packed.is_file() or plain.is_file():
                raw_dir.mkdir(parents=True, exist_ok=True)
                # Write aside, then rename: several processes (DDP ranks) may stage at once,
                # and none of them may ever read a half-written file.
                partial = raw_dir / f".{name}.{os.getpid()}.partial"
                opener = gzip.open if packed.is_file() else open
                with (
                    opener(packed if packed.is_file() else plain, "rb") as src,
                    open(partial, "wb") as dst,
                ):
                    shutil.copyfileobj(src, dst)
                os.replace(partial, target)
                break
        else:
            return False
    return True


class _IdxDataModule(ClassificationDataModule):
    """Shared logic: find the idx files, read them with torchvision, normalize, split."""

    dataset_cls: type[datasets.MNIST]
    mean: float
    std: float
    num_classes = 10
    input_shape = (1, 28, 28)
    default_system_dir: str | None = None
    install_hint = ""

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 128,
        val_size: int = 5000,
        seed: int = 0,
        download: bool = False,
        system_dir: str | None = "default",
        num_workers: int = 0,
        pin_memory: bool = False,
        eval_batch_size: int | None = None,
        num_labeled: int | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory, eval_batch_size, num_labeled)
        self.data_dir = Path(data_dir).expanduser()
        self.val_size = int(val_size)
        self.seed = int(seed)
        self.download = bool(download)
        # "default": the distribution's package folder (if any); null: look nowhere else.
        chosen = self.default_system_dir if system_dir == "default" else system_dir
        self.system_dir = Path(chosen) if chosen else None

    @property
    def raw_dir(self) -> Path:
        return self.data_dir / self.dataset_cls.__name__ / "raw"

    def prepare_data(self) -> None:
        found = stage_idx_files(self.raw_dir, [self.system_dir] if self.system_dir else [])
        if found or self.download:
            return
        looked = [str(self.raw_dir)] + ([str(self.system_dir)] if self.system_dir else [])
        raise FileNotFoundError(
            f"{self.dataset_cls.__name__} idx files not found in {' or '.join(looked)}. "
            f"{self.install_hint}Or set data.download=true to let torchvision download them "
            f"into {self.data_dir} (data.data_dir / paths.data_dir)."
        )

    def _load(self, train: bool) -> TensorDataset:
        ds = self.dataset_cls(str(self.data_dir), train=train, download=self.download)
        # The whole set fits in memory as one tensor: far faster on a CPU than PIL per sample.
        images = (ds.data.float().div(255.0).unsqueeze(1) - self.mean) / self.std
        return TensorDataset(images, ds.targets.long())

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.prepare_data()  # idempotent; Lightning calls it too, but setup may run alone
        full = self._load(train=True)
        train_idx, val_idx = split_indices(len(full), self.val_size, self.seed)
        x, y = full.tensors
        self.train_set = TensorDataset(x[train_idx], y[train_idx])
        self.val_set = TensorDataset(x[val_idx], y[val_idx])
        self.test_set = self._load(train=False)


class FashionMNISTDataModule(_IdxDataModule):
    """Fashion-MNIST (Xiao et al. 2017): 60k train (minus ``val_size`` for val) / 10k test."""

    dataset_cls = datasets.FashionMNIST
    mean, std = 0.2860, 0.3530  # statistics of the Fashion-MNIST training images
    default_system_dir = DEBIAN_FASHION_MNIST_DIR
    install_hint = "On Debian/Ubuntu: apt-get install dataset-fashion-mnist. "


class MNISTDataModule(_IdxDataModule):
    """MNIST: 60k train (minus ``val_size`` for val) / 10k test."""

    dataset_cls = datasets.MNIST
    mean, std = 0.1307, 0.3081  # statistics of the MNIST training images
