"""Any folder of class folders (ImageNet layout) with the standard ImageNet transforms.

    root/train/<class>/*.jpg     training images; val is a seeded split of these
    root/val/<class>/*.jpg       the held-out set, used as the test set (as for ImageNet)

    dm = ImageFolderDataModule(root="/data/imagenet", image_size=224, val_size=10000)

Training: RandomResizedCrop(image_size) + RandomHorizontalFlip; evaluation: Resize(image_size /
0.875) + CenterCrop(image_size); both normalized with the ImageNet mean and std. The classes are
read from the training folder at construction time so ``num_classes`` is known before
``setup``; the test folder must hold the same class folders.

``setup`` checks every image file of both folders before any training (:func:`image_problem`:
the header of every file, the checksums of PNGs, the end marker of JPEGs; about 0.1 ms a file,
a tenth of what decoding an ImageNet-sized JPEG takes) and stops with a list of the files it
cannot read; ``skip_bad_files=True`` leaves them out with a warning instead. A file that passes
the check yet fails to decode later (a JPEG garbled mid-stream) is named in the error too.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections import Counter
from pathlib import Path

from PIL import Image
from torchvision import datasets, transforms
from torchvision.datasets.folder import IMG_EXTENSIONS

from kdlightning.data.base import ClassificationDataModule, RawInput
from kdlightning.data.splits import split_with_transforms

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_LISTED = 10  # bad files quoted in an error or warning; the rest are counted


def _class_folders(folder: Path, what: str) -> list[str]:
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{what} folder not found: {str(folder)!r}; data.root must hold {what} "
            "class folders (root/<train_dir>/<class>/image.jpg)"
        )
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise ValueError(f"{str(folder)!r} holds {len(classes)} class folders; need at least 2")
    return classes


def _jpeg_is_complete(path: str) -> bool:
    # A JPEG ends with the EOI marker FF D9; a truncated one does not, and PIL refuses to decode
    # it. Look at the tail rather than the last two bytes: some writers pad after the marker.
    with open(path, "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - 512))
        return b"\xff\xd9" in f.read()


def image_problem(path: str) -> str | None:
    """Why the training loader could not read the image at ``path``; ``None`` when it can.

    Cheap where the format allows: every file's header is parsed (garbage and non-images fail
    there); PNGs are verified (the checksum of every chunk, no decompression); JPEGs must end
    with their end-of-image marker (a truncated one does not), else they are decoded at 1/8
    scale to decide; other formats (rare in image folders, and ``verify`` checks nothing for
    most of them) are decoded.
    """
    try:
        with Image.open(path) as img:
            if img.format == "PNG":
                img.verify()
                return None
            if img.format == "JPEG":
                if _jpeg_is_complete(path):
                    return None
                img.draft(img.mode, (1, 1))  # the smallest DCT scale: reads all data, fast
            img.load()
    except Exception as err:  # whatever PIL raises here, training would hit too
        return f"{type(err).__name__}: {err}"
    return None


def find_bad_images(paths: list[str]) -> list[tuple[str, str]]:
    """``(path, problem)`` for each file of ``paths`` that :func:`image_problem` rejects."""
    # One file after the other: a thread pool measured 1.5-3x slower on cached files (the work
    # is mostly Python, under the GIL). PIL warns about harmless oddities (EXIF, palettes);
    # training shows those if they matter.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        problems = [(path, image_problem(path)) for path in paths]
    return [(path, why) for path, why in problems if why is not None]


def _listing(bad: list[tuple[str, str]]) -> str:
    lines = [f"  {path}: {why}" for path, why in bad[:_LISTED]]
    if len(bad) > _LISTED:
        lines.append(f"  ... and {len(bad) - _LISTED:,} more")
    return "\n".join(lines)


def load_rgb(path: str) -> Image.Image:
    """torchvision's PIL loader, naming the file when it fails (module level: workers pickle it)."""
    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except Exception as err:
        # The check before training reads headers and end markers, not every pixel of a JPEG.
        raise OSError(
            f"cannot decode image {path}: {type(err).__name__}: {err}. "
            "Delete or replace the file and start again."
        ) from err


class ImageFolderDataModule(ClassificationDataModule):
    """Train/val/test from ``root/<train_dir>`` (split) and ``root/<test_dir>``.

    ``skip_bad_files``: leave out (with a warning) the image files that cannot be read, instead
    of stopping before training with a list of them.
    """

    augments = True  # RandomResizedCrop + flips

    def __init__(
        self,
        root: str,
        train_dir: str = "train",
        test_dir: str = "val",
        image_size: int = 224,
        val_size: int = 10000,
        seed: int = 0,
        batch_size: int = 256,
        num_workers: int = 8,
        pin_memory: bool = False,
        eval_batch_size: int | None = None,
        num_labeled: int | None = None,
        skip_bad_files: bool = False,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory, eval_batch_size, num_labeled)
        self.train_root = Path(root).expanduser() / train_dir
        self.test_root = Path(root).expanduser() / test_dir
        self.classes = _class_folders(self.train_root, "training")
        self.num_classes = len(self.classes)
        self.image_size = int(image_size)
        self.input_shape = (3, self.image_size, self.image_size)
        self.val_size = int(val_size)
        self.seed = int(seed)
        self.skip_bad_files = bool(skip_bad_files)

    def raw_input(self) -> RawInput:
        """RGB bytes (0-255) of the image resized and centre-cropped as for evaluation,
        channels first; divided by 255 and normalized with the ImageNet mean and std."""
        size, resize = self.image_size, round(self.image_size / 0.875)
        return RawInput(
            f"RGB pixel values 0-255 as float32, channels first (N, 3, {size}, {size}), of the "
            f"image resized (shorter side {resize}) and centre-cropped to {size}x{size}",
            (0.0, 255.0), integer=True, divide_by=255.0, mean=IMAGENET_MEAN, std=IMAGENET_STD,
        )  # fmt: skip

    def transforms(self, train: bool) -> transforms.Compose:
        """The training (augmenting) or evaluation transforms."""
        norm = [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        if train:
            aug = [transforms.RandomResizedCrop(self.image_size), transforms.RandomHorizontalFlip()]
            return transforms.Compose(aug + norm)
        resize = round(self.image_size / 0.875)  # 256 for 224: the usual centre crop ratio
        return transforms.Compose(
            [transforms.Resize(resize), transforms.CenterCrop(self.image_size), *norm]
        )

    def _check_images(self, sets: list[tuple[datasets.ImageFolder, Path]]) -> None:
        """Stop on unreadable files, or (``skip_bad_files``) drop them from their data set.

        ``sets``: (data set, its folder) pairs; one error or warning lists the files of all.
        """
        start = time.perf_counter()
        bad_per_set = [find_bad_images([path for path, _ in ds.samples]) for ds, _ in sets]
        bad = [entry for found in bad_per_set for entry in found]
        total = sum(len(ds.samples) for ds, _ in sets)
        log.info(
            "checked %d image files in %.1f s: %d unreadable",
            total, time.perf_counter() - start, len(bad),
        )  # fmt: skip
        if not bad:
            return
        folders = " and ".join(repr(str(folder)) for _, folder in sets)
        what = f"{len(bad):,} of the {total:,} image files in {folders}"
        if not self.skip_bad_files:
            raise ValueError(
                f"{what} cannot be read as images:\n{_listing(bad)}\n"
                "Delete or replace them, or set data.skip_bad_files=true to train without them."
            )
        message = f"{what} cannot be read as images; left out (data.skip_bad_files):\n"
        log.warning("%s%s", message, _listing(bad))
        warnings.warn(message + _listing(bad), UserWarning, stacklevel=3)
        # Before the split: the split's sizes and the targets the labeled subset draws from
        # must count only what will be served.
        for (dataset, _), found in zip(sets, bad_per_set, strict=True):
            dropped = {path for path, _ in found}
            dataset.samples = [s for s in dataset.samples if s[0] not in dropped]
            dataset.imgs = dataset.samples
            dataset.targets = [target for _, target in dataset.samples]

    @staticmethod
    def _require_images(dataset: datasets.ImageFolder, folder: Path, after: str = "") -> None:
        """A clear error for class folders without a single image file."""
        counts = Counter(dataset.targets)
        empty = [c for i, c in enumerate(dataset.classes) if counts[i] == 0]
        if not empty:
            return
        extensions = " ".join(IMG_EXTENSIONS)
        if len(empty) == len(dataset.classes):
            raise FileNotFoundError(
                f"no image files in the class folders of {str(folder)!r}{after}: images must lie "
                f"in {folder}/<class>/ and end in one of {extensions} (any case)"
            )
        listed = ", ".join(str(folder / c) for c in empty[:_LISTED])
        more = f" and {len(empty) - _LISTED} more" if len(empty) > _LISTED else ""
        raise FileNotFoundError(
            f"{len(empty)} of the {len(dataset.classes)} class folders of {str(folder)!r} "
            f"{'holds' if len(empty) == 1 else 'hold'} no image files{after}: {listed}{more}. "
            f"Put images ({extensions}) in them, or remove them from the training and the test "
            "folder alike."
        )

    def source_files(self) -> list[Path]:
        # every file under the training and test folders, in a stable order
        return sorted(p for root in (self.train_root, self.test_root) if root.is_dir()
                      for p in root.rglob("*") if p.is_file())  # fmt: skip

    @property
    def class_names(self) -> list[str]:
        """The training folder's class folders, in label order."""
        return list(self.classes)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        if not self.test_root.is_dir():
            raise FileNotFoundError(
                f"test folder not found: {str(self.test_root)!r}; set data.test_dir"
            )
        # allow_empty: empty class folders get this module's message, not torchvision's.
        full = datasets.ImageFolder(str(self.train_root), loader=load_rgb, allow_empty=True)
        test = datasets.ImageFolder(str(self.test_root), loader=load_rgb, allow_empty=True)
        if test.classes != full.classes:
            raise ValueError(
                f"the class folders of {str(self.test_root)!r} differ from those of "
                f"{str(self.train_root)!r}: {sorted(set(test.classes) ^ set(full.classes))}"
            )
        sets = [(full, self.train_root), (test, self.test_root)]
        for dataset, folder in sets:
            self._require_images(dataset, folder)
        self._check_images(sets)  # the test set too: it is read after training
        for dataset, folder in sets:
            self._require_images(dataset, folder, after=" once the unreadable ones are left out")
        self.train_set, self.val_set, self.test_set = split_with_transforms(
            full, test, self.val_size, self.seed,
            self.transforms(train=True), self.transforms(train=False),
        )  # fmt: skip
