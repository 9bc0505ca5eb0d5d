"""Any folder of class folders (ImageNet layout) with the standard ImageNet transforms.

    root/train/<class>/*.jpg     training images; val is a seeded split of these
    root/val/<class>/*.jpg       the held-out set, used as the test set (as for ImageNet)

    dm = ImageFolderDataModule(root="/data/imagenet", image_size=224, val_size=10000)

Training: RandomResizedCrop(image_size) + RandomHorizontalFlip; evaluation: Resize(image_size /
0.875) + CenterCrop(image_size); both normalized with the ImageNet mean and std. The classes are
read from the training folder at construction time so ``num_classes`` is known before
``setup``; the test folder must hold the same class folders.
"""

from __future__ import annotations

from pathlib import Path

from torchvision import datasets, transforms

from kdlightning.data.base import ClassificationDataModule
from kdlightning.data.splits import split_with_transforms

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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


class ImageFolderDataModule(ClassificationDataModule):
    """Train/val/test from ``root/<train_dir>`` (split) and ``root/<test_dir>``."""

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

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        full = datasets.ImageFolder(str(self.train_root))  # transform=None: PIL images
        test = datasets.ImageFolder(str(self.test_root)) if self.test_root.is_dir() else None
        if test is None:
            raise FileNotFoundError(
                f"test folder not found: {str(self.test_root)!r}; set data.test_dir"
            )
        if test.classes != full.classes:
            raise ValueError(
                f"the class folders of {str(self.test_root)!r} differ from those of "
                f"{str(self.train_root)!r}: {sorted(set(test.classes) ^ set(full.classes))}"
            )
        self.train_set, self.val_set, self.test_set = split_with_transforms(
            full, test, self.val_size, self.seed,
            self.transforms(train=True), self.transforms(train=False),
        )  # fmt: skip
