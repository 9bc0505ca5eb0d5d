"""CIFAR-10 / CIFAR-100 (50k/10k colour 32x32 images) through torchvision, with the standard
augmentation of the CIFAR KD benchmarks.

    dm = CIFAR100DataModule(data_dir="data", batch_size=64, val_size=5000, seed=0)
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))   # x: (64, 3, 32, 32), y: (64,)

Training images: RandomCrop(32, padding=4), RandomHorizontalFlip, per-channel normalization.
Validation (carved from the training set) and test images: normalization only. The python
pickles are expected in ``<data_dir>/cifar-10-batches-py`` / ``<data_dir>/cifar-100-python``;
``download=True`` lets torchvision fetch them. ``check_md5=False`` skips torchvision's checksum
test of the files (for re-packed or synthetic pickles); the format is read the same way. A file
torchvision cannot read (missing, truncated, garbled) stops the job with its name and the fix.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from torchvision import datasets, transforms
from torchvision.datasets.utils import check_integrity

from kdlightning.data.base import ClassificationDataModule, RawInput
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


def pickle_problem(
    path: Path, meta_key: str | None = None, num_classes: int | None = None
) -> str | None:
    """Why torchvision could not use the CIFAR pickle at ``path``; ``None`` when it could.

    A batch must hold ``data`` (rows of 3x32x32 bytes) and as many labels, each below
    ``num_classes`` if given; the meta file (``meta_key`` given) the list of class names.
    """
    if not path.is_file():
        return "missing"
    try:
        with open(path, "rb") as f:
            # The data set's official format, read exactly as torchvision reads it.
            entry = pickle.load(f, encoding="latin1")
    except Exception as err:  # truncated: EOFError; garbled: UnpicklingError and many more
        return f"cannot be unpickled ({type(err).__name__}: {err})"
    if not isinstance(entry, dict):
        return f"holds a {type(entry).__name__}, not a dict"
    if meta_key is not None:
        return None if meta_key in entry else f"no {meta_key!r} entry"
    key = "labels" if "labels" in entry else "fine_labels"  # torchvision's choice
    if "data" not in entry or key not in entry:
        return f"no 'data' and {key!r} entries (keys: {sorted(map(str, entry))})"
    data, labels = np.asarray(entry["data"]), np.asarray(entry[key])
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        return f"data of shape {data.shape}, expected (n, 3072)"
    if labels.shape != (len(data),):
        return f"{labels.size} labels for {len(data)} images"
    if num_classes is None or not len(labels):
        return None
    if labels.min() < 0 or labels.max() >= num_classes:
        return f"labels from {labels.min()} to {labels.max()}, expected 0..{num_classes - 1}"
    return None


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
        self.meta_names: list[str] = []  # the class names of the data set's meta file

    @property
    def class_names(self) -> list[str]:
        """The meta file's names once set up (CIFAR-100's 100 fine classes), else CLASS_NAMES."""
        return list(self.meta_names) or super().class_names

    def raw_input(self) -> RawInput:
        """The stored RGB bytes (0-255), channels first; divided by 255 (ToTensor) and
        normalized per channel, as the evaluation transforms do."""
        return RawInput(
            "RGB pixel values 0-255 as float32, channels first (N, 3, 32, 32): the data set's "
            "(32, 32, 3) images transposed",
            (0.0, 255.0), integer=True, divide_by=255.0, mean=tuple(self.mean),
            std=tuple(self.std),
        )  # fmt: skip

    def transforms(self, train: bool) -> transforms.Compose:
        """The training (augmenting) or evaluation transforms."""
        norm = [transforms.ToTensor(), transforms.Normalize(self.mean, self.std)]
        if not (train and self.augment):
            return transforms.Compose(norm)
        aug = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()]
        return transforms.Compose(aug + norm)

    def _files(self, train: bool) -> list[tuple[Path, str | None]]:
        """(path, official MD5) of the batch files of one split, then of the meta file."""
        folder = self.data_dir / self.dataset_cls.base_folder
        listed = self.dataset_cls.train_list if train else self.dataset_cls.test_list
        meta = self.dataset_cls.meta
        return [(folder / name, md5) for name, md5 in listed] + [
            (folder / meta["filename"], meta["md5"])
        ]

    def source_files(self) -> list[Path]:
        found = {p for train in (True, False) for p, _ in self._files(train) if p.is_file()}
        return sorted(found)

    def _unreadable(self, train: bool) -> list[str]:
        """``path: problem`` for each file of a split that torchvision could not use."""
        meta = self.dataset_cls.meta
        found = []
        for path, _ in self._files(train):
            is_meta = path.name == meta["filename"]
            why = pickle_problem(path, meta["key"] if is_meta else None, self.num_classes)
            if why is not None:
                found.append(f"{path}: {why}")
        return found

    def _dataset(self, train: bool) -> datasets.CIFAR10:
        cls = self.dataset_cls if self.check_md5 else _without_md5(self.dataset_cls)
        folder = self.data_dir / self.dataset_cls.base_folder
        fix = (
            f"To fix: extract {self.dataset_cls.filename} into {self.data_dir} again "
            f"(tar -xzf {self.dataset_cls.filename} -C {self.data_dir}), or delete {folder} and "
            "set data.download=true."
        )
        try:
            dataset = cls(str(self.data_dir), train=train, download=self.download)
        except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
            missing = [p.name for p, _ in self._files(train) if not p.is_file()]
            # torchvision does not say which file failed; only on failure, find out.
            differ = [
                p.name
                for p, md5 in self._files(train)
                if self.check_md5 and p.is_file() and not check_integrity(str(p), md5)
            ]
            details = []
            if missing:
                details.append(f"missing: {', '.join(missing)}")
            if differ:
                details.append(
                    f"MD5 differs from the official file's: {', '.join(differ)} (truncated or "
                    "damaged; for re-packed or synthetic files set data.check_md5=false)"
                )
            raise FileNotFoundError(
                f"{self.dataset_cls.__name__} python pickles not found or corrupted in {folder} "
                f"({'; '.join(details) or err}). Extract {self.dataset_cls.filename} into "
                f"{self.data_dir} (data.data_dir), or set data.download=true."
            ) from err
        except Exception as err:  # an unpickling error, from torchvision's reading loop
            unreadable = self._unreadable(train)
            if not unreadable:
                raise
            raise ValueError(
                f"{self.dataset_cls.__name__} files that cannot be read (truncated or "
                f"damaged): {'; '.join(unreadable)}. {fix}"
            ) from err
        # torchvision checks neither that every image has a label nor the labels' range, and
        # a label out of range would only fail in the loss, mid-training.
        targets = np.asarray(dataset.targets)
        if len(targets) != len(dataset.data) or (
            len(targets) and (targets.min() < 0 or targets.max() >= self.num_classes)
        ):
            unreadable = self._unreadable(train) or [f"{folder}: labels do not match the images"]
            raise ValueError(
                f"{self.dataset_cls.__name__} files that cannot be used (damaged): "
                f"{'; '.join(unreadable)}. {fix}"
            )
        return dataset

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
        self.meta_names = list(full.classes)
        self.train_set, self.val_set, self.test_set = split_with_transforms(
            full, test, self.val_size, self.seed,
            self.transforms(train=True), self.transforms(train=False),
        )  # fmt: skip


class CIFAR10DataModule(_CIFARDataModule):
    """CIFAR-10: 10 classes."""

    dataset_cls = datasets.CIFAR10
    num_classes = 10
    # in label order (batches.meta); known before the files are read
    CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")  # fmt: skip
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


class CIFAR100DataModule(_CIFARDataModule):
    """CIFAR-100: 100 fine classes."""

    dataset_cls = datasets.CIFAR100
    num_classes = 100
    mean, std = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
