"""MNIST and Fashion-MNIST (60k/10k grey 28x28 images, 10 classes) through torchvision.

    dm = FashionMNISTDataModule(data_dir="data", batch_size=128, val_size=5000, seed=0)
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))   # x: (128, 1, 28, 28) float32, y: (128,) int64

Nothing is downloaded unless ``download=True``. Before asking torchvision, the raw idx files
are looked up in ``<data_dir>/<Name>/raw/`` and in ``system_dir``: on Debian/Ubuntu,
``apt-get install dataset-fashion-mnist`` puts the four gzipped Fashion-MNIST idx files into
``/usr/share/datasets/fashion-mnist``, and they are unpacked into ``data_dir`` from there.
torchvision reads the idx files (it wants them unpacked, hence the gunzip). Before it does, the
four files are checked (:func:`check_idx_files`: headers, sizes, label counts and values), so a
damaged file stops the job with its name and the fix instead of a traceback from torchvision.
"""

from __future__ import annotations

import gzip
import math
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import TensorDataset
from torchvision import datasets

from kdlightning.data.augment import AugmentedTensors
from kdlightning.data.base import ClassificationDataModule, IndexedTensors, RawInput
from kdlightning.data.splits import split_indices
from kdlightning.files import atomic_path

# Where Debian's dataset-fashion-mnist package installs the gzipped idx files.
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def stage_idx_files(
    raw_dir: Path, search_dirs: list[Path], fix: Callable[[Path], str] | None = None
) -> bool:
    """Make the four unpacked idx files exist in ``raw_dir``; True when all of them do.

    Each missing file is taken from ``raw_dir`` or ``search_dirs``, gzipped (``name.gz``) or
    not; nothing is ever downloaded here. A damaged ``.gz`` raises a ValueError naming it (with
    ``fix(its path)`` appended: how to replace it) and leaves nothing behind in ``raw_dir``.
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
                source = packed if packed.is_file() else plain
                opener = gzip.open if packed.is_file() else open
                try:
                    with (
                        atomic_path(target) as partial,
                        opener(source, "rb") as src,
                        open(partial, "wb") as dst,
                    ):
                        shutil.copyfileobj(src, dst)
                except (EOFError, zlib.error, gzip.BadGzipFile) as err:
                    # EOFError: the stream ends early (a truncated file); the others: garbled.
                    raise ValueError(
                        f"cannot unpack {source}: {err} (the gzip file is truncated or "
                        f"damaged); no partial copy was left in {raw_dir}. "
                        f"{fix(source) if fix else 'To fix: replace it with an intact copy.'}"
                    ) from err
                break
        else:
            return False
    return True


def _idx_dims(path: Path, ndim: int, fix: str) -> tuple[int, ...]:
    """The sizes in the header of the unsigned-byte idx file ``path`` of ``ndim`` dimensions,
    once its magic number and its length are found right (else a ValueError naming it)."""

    def damaged(what: str) -> ValueError:
        return ValueError(f"damaged idx file {path}: {what}. {fix}")

    size = path.stat().st_size
    header_size = 4 + 4 * ndim
    with open(path, "rb") as f:
        header = f.read(header_size)
    # The magic number: two zero bytes, the element type (0x08: unsigned byte), the rank.
    magic = bytes([0, 0, 0x08, ndim])
    if len(header) < 4:
        raise damaged(f"truncated: {size:,} bytes, not even the 4-byte magic number")
    if header[:4] != magic:
        raise damaged(
            f"wrong magic number 0x{header[:4].hex()}, expected 0x{magic.hex()} (unsigned "
            f"bytes in {ndim} dimension{'s' if ndim > 1 else ''})"
        )
    if len(header) < header_size:
        raise damaged(f"truncated: {size:,} bytes, the header alone takes {header_size}")
    dims = struct.unpack(f">{ndim}I", header[4:])
    promised = header_size + math.prod(dims)  # Python ints: a garbled header cannot overflow
    if size < promised:
        raise damaged(f"truncated: {size:,} bytes, the header promises {promised:,}")
    if size > promised:
        raise damaged(f"{size:,} bytes, longer than the {promised:,} the header promises")
    return dims


def _no_fix(plural: bool = False) -> str:
    return ""


def check_idx_files(
    raw_dir: Path, num_classes: int = 10, fix: Callable[[bool], str] = _no_fix
) -> None:
    """Check the four (Fashion-)MNIST idx files in ``raw_dir`` before torchvision reads them.

    Each must be an unsigned-byte idx file exactly as long as its header says; the images
    28x28; as many labels as images, each below ``num_classes``. Otherwise a ValueError names
    the file, what is wrong and ``fix(plural)`` (how to replace one file, or two). Only the
    headers and the label files are read (70 kB for the full data set).
    """
    for split in ("train", "t10k"):
        images = raw_dir / f"{split}-images-idx3-ubyte"
        labels = raw_dir / f"{split}-labels-idx1-ubyte"
        n_images, *shape = _idx_dims(images, 3, fix(False))
        if shape != [28, 28]:
            raise ValueError(
                f"damaged idx file {images}: images of {shape[0]}x{shape[1]} pixels, "
                f"expected 28x28. {fix(False)}"
            )
        (n_labels,) = _idx_dims(labels, 1, fix(False))
        if n_labels != n_images:
            raise ValueError(
                f"idx files that do not match: {labels} holds {n_labels:,} labels, but "
                f"{images} holds {n_images:,} images. {fix(True)}"
            )
        values = labels.read_bytes()[8:]
        if values and max(values) >= num_classes:
            at = next(i for i, v in enumerate(values) if v >= num_classes)
            raise ValueError(
                f"damaged idx file {labels}: label {values[at]} at position {at:,}, expected "
                f"0..{num_classes - 1}. {fix(False)}"
            )


class _IdxDataModule(ClassificationDataModule):
    """Shared logic: find the idx files, read them with torchvision, normalize, split."""

    dataset_cls: type[datasets.MNIST]
    mean: float
    std: float
    num_classes = 10
    input_shape = (1, 28, 28)
    default_system_dir: str | None = None
    install_hint = ""
    reinstall_command = ""  # re-installs the files of system_dir (a distribution package)

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
        on_device: bool | str = "auto",
        augment: bool = False,
        crop_padding: int = 2,
        hflip: bool = True,
    ) -> None:
        super().__init__(
            batch_size, num_workers, pin_memory, eval_batch_size, num_labeled, on_device
        )
        if int(crop_padding) < 0:
            raise ValueError(
                f"data.crop_padding={crop_padding!r}: the padding of the random crops must be "
                ">= 0 pixels (0: no crops)"
            )
        # Random crops (crop_padding pixels) and mirror images (hflip) of the training batches;
        # the validation and test images are never augmented.
        self.augment = bool(augment)
        self.augments = self.augment  # random views: stored teacher logits would not match
        self.crop_padding, self.hflip = int(crop_padding), bool(hflip)
        self.data_dir = Path(data_dir).expanduser()
        self.val_size = int(val_size)
        self.seed = int(seed)
        self.download = bool(download)
        # "default": the distribution's package folder (if any); null: look nowhere else.
        chosen = self.default_system_dir if system_dir == "default" else system_dir
        self.system_dir = Path(chosen) if chosen else None

    def raw_input(self) -> RawInput:
        """The idx files' bytes (0-255), divided by 255 and standardized with the data set's
        published mean and std."""
        return RawInput(
            f"{self.dataset_cls.__name__} pixel values as the idx files store them: 0-255 "
            "(uint8), as float32",
            (0.0, 255.0), integer=True, divide_by=255.0, mean=(self.mean,), std=(self.std,),
        )  # fmt: skip

    def train_view(self, dataset: IndexedTensors) -> IndexedTensors:
        if not self.augment:
            return dataset
        # An empty (0) pixel after normalization: the padding looks like the images' background.
        background = -self.mean / self.std
        # data.seed stays fixed (it fixes the validation split); the job's seed, set by
        # seed_everything before each stage builds its loader, moves the views between seeds.
        seed = (self.seed * 1_000_003 + torch.initial_seed()) % 2**63
        return AugmentedTensors(
            dataset.inputs, dataset.targets, dataset.positions, crop_padding=self.crop_padding,
            hflip=self.hflip, fill=background, seed=seed,
        )  # fmt: skip

    @property
    def raw_dir(self) -> Path:
        return self.data_dir / self.dataset_cls.__name__ / "raw"

    def _fix(self, plural: bool = False) -> str:
        """How to replace damaged staged idx files (``plural``: the wording for two of them)."""
        it, they = ("them", "they") if plural else ("it", "it")
        if not self.system_dir:
            return (
                f"To fix: delete {it} and set data.download=true to let torchvision download the "
                "files again, or put intact copies there."
            )
        there = (
            f"re-install the package: {self.reinstall_command}"
            if self.reinstall_command
            else "replace it with an intact copy"
        )
        copy = "the copies there are" if plural else "the copy there is"
        return (
            f"To fix: delete {it} so that {they} {'are' if plural else 'is'} staged again from "
            f"{self.system_dir}; if {copy} damaged too, {there}."
        )

    def _fix_packed(self, source: Path) -> str:
        """How to replace ``source``, a damaged gzipped idx file in system_dir or raw_dir."""
        if self.system_dir and source.parent == self.system_dir:
            reinstall = (
                f"re-install the package: {self.reinstall_command}, "
                if self.reinstall_command
                else "replace it with an intact copy, "
            )
            return (
                f"To fix: {reinstall}or set data.system_dir=null and data.download=true to let "
                "torchvision download the files instead."
            )
        return (
            "To fix: delete it and set data.download=true to let torchvision download the files "
            "again, or put an intact copy there."
        )

    def prepare_data(self) -> None:
        found = stage_idx_files(
            self.raw_dir,
            [self.system_dir] if self.system_dir else [],
            fix=self._fix_packed,
        )
        if found or self.download:
            return
        looked = [str(self.raw_dir)] + ([str(self.system_dir)] if self.system_dir else [])
        raise FileNotFoundError(
            f"{self.dataset_cls.__name__} idx files not found in {' or '.join(looked)}. "
            f"{self.install_hint}Or set data.download=true to let torchvision download them "
            f"into {self.data_dir} (data.data_dir / paths.data_dir)."
        )

    def source_files(self) -> list[Path]:
        self.prepare_data()  # stages the idx files into raw_dir (idempotent)
        return [self.raw_dir / name for name in _IDX_FILES if (self.raw_dir / name).is_file()]

    def _load(self, train: bool) -> TensorDataset:
        ds = self.dataset_cls(str(self.data_dir), train=train, download=self.download)
        # The whole set fits in memory as one tensor: far faster on a CPU than PIL per sample.
        images = (ds.data.float().div(255.0).unsqueeze(1) - self.mean) / self.std
        return TensorDataset(images, ds.targets.long())

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.prepare_data()  # idempotent; Lightning calls it too, but setup may run alone
        if all((self.raw_dir / name).is_file() for name in _IDX_FILES):
            # Else torchvision downloads them (data.download=true) and checks their MD5 sums.
            check_idx_files(self.raw_dir, self.num_classes, fix=self._fix)
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
    # in label order (Xiao et al. 2017, arXiv:1708.07747)
    CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")  # fmt: skip
    install_hint = "On Debian/Ubuntu: apt-get install dataset-fashion-mnist. "
    reinstall_command = "apt-get install --reinstall dataset-fashion-mnist"


class MNISTDataModule(_IdxDataModule):
    """MNIST: 60k train (minus ``val_size`` for val) / 10k test."""

    dataset_cls = datasets.MNIST
    mean, std = 0.1307, 0.3081  # statistics of the MNIST training images
