"""CIFAR-10 / CIFAR-100 (50k/10k colour 32x32 images) through torchvision, with the standard
augmentation of the CIFAR KD benchmarks.

    dm = CIFAR100DataModule(data_dir="data", batch_size=64, val_size=5000, seed=0)
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))   # x: (64, 3, 32, 32), y: (64,)

Training images: RandomCrop(32, padding=4), RandomHorizontalFlip, per-channel normalization.
Validation (carved from the training set) and test images: normalization only. The python
pickles are expected in ``<data_dir>/cifar-10-batches-py`` / ``<data_dir>/cifar-100-python``;
``download=True`` lets torchvision fetch them. ``check_md5=False`` skips torchvision's checksum
test of the files (for re-packed or synthetic pickles); the format is read the same way.
"""

from __future__ import annotations

from pathlib import Path

from torchvision import datasets, transforms

from kdlightning.data.base import ClassificationDataModule
from kdlightning.data.splits import split_with_transforms


def _without_md5(cls: type[datasets.CIFAR10]) -> type[datasets.CIFAR10]:
    # torchvision's check_integrity(path, None) only tests that the file exists.
    return type(
        f"{cls.__name__}AnyFile",
        (cls,),
        {
            "train_list": [[name, None] for name, _ in cls.train_list],
            "test_list": [[name, None] for name, _ in cls.test_list],
            "meta": {**cls.meta, "md5": None},
        },
    )


class _CIFARDataModule(ClassificationDataModule):
    dataset_cls: type[datasets.CIFAR10]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_shape = (3, 32, 32)

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 64,
        val_size: int = 5000,
        seed: int = 0,
        download: bool = False,
        check_md5: bool = True,
        augment: bool = True,
        num_workers: int = 4,
        pin_memory: bool = False,
        eval_batch_size: int | None = None,
        num_labeled: int | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory, eval_batch_size, num_labeled)
        self.data_dir = Path(data_dir).expanduser()
        self.val_size = int(val_size)
        self.seed = int(seed)
        self.download = bool(download)
        self.check_md5 = bool(check_md5)
        self.augment = bool(augment)
        self.augments = self.augment  # random crops and flips: stored logits would not match

    def transforms(self, train: bool) -> transforms.Compose:
        """The training (augmenting) or evaluation transforms."""
        norm = [transforms.ToTensor(), transforms.Normalize(self.mean, self.std)]
        if not (train and self.augment):
            return transforms.Compose(norm)
        aug = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()]
        return transforms.Compose(aug + norm)

    def _dataset(self, train: bool) -> datasets.CIFAR10:
        cls = self.dataset_cls if self.check_md5 else _without_md5(self.dataset_cls)
        try:
            return cls(str(self.data_dir), train=train, download=self.download)
        except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
            folder = self.data_dir / self.dataset_cls.base_folder
            raise FileNotFoundError(
                f"{self.dataset_cls.__name__} python pickles not found or corrupted in {folder} "
                f"({err}). Extract {self.dataset_cls.filename} into {self.data_dir} "
                "(data.data_dir), or set data.download=true."
            ) from err

    def prepare_data(self) -> None:
        if self.download:  # the only network access, on one process
            self._dataset(train=True)
            self._dataset(train=False)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        full = self._dataset(train=True)  # transform=None: samples are PIL images
        if len(full.classes) != self.num_classes:
            raise ValueError(
                f"{self.data_dir / full.base_folder} lists {len(full.classes)} classes, "
                f"expected {self.num_classes}"
            )
        test = self._dataset(train=False)
        self.train_set, self.val_set, self.test_set = split_with_transforms(
            full, test, self.val_size, self.seed,
            self.transforms(train=True), self.transforms(train=False),
        )  # fmt: skip


class CIFAR10DataModule(_CIFARDataModule):
    """CIFAR-10: 10 classes."""

    dataset_cls = datasets.CIFAR10
    num_classes = 10
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


class CIFAR100DataModule(_CIFARDataModule):
    """CIFAR-100: 100 fine classes."""

    dataset_cls = datasets.CIFAR100
    num_classes = 100
    mean, std = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
