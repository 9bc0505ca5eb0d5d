"""ImageFolderDataModule on a tiny folder of PNG class folders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fake_files import write_image_folder

from kdlightning.data import ImageFolderDataModule


def test_class_folders_split_and_transforms(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "train", classes=3, per_class=4, size=40)
    write_image_folder(tmp_path / "val", classes=3, per_class=2, size=40)
    dm = ImageFolderDataModule(
        root=str(tmp_path), image_size=32, val_size=3, batch_size=4, num_workers=0
    )
    assert dm.num_classes == 3 and dm.input_shape == (3, 32, 32)  # before setup
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (9, 3, 6)
    x, y, index = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 32, 32) and set(y.tolist()) <= {0, 1, 2}
    assert len(set(index.tolist())) == 4 and int(index.max()) < 9
    assert torch.equal(dm.val_set[0][0], dm.val_set[0][0])  # eval transforms: deterministic
    assert dm.transforms(train=False).transforms[0].size == 37  # 32 / 0.875: resize, then crop


def test_missing_or_mismatched_folders(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"training folder not found"):
        ImageFolderDataModule(root=str(tmp_path))
    write_image_folder(tmp_path / "train", classes=3, per_class=2)
    write_image_folder(tmp_path / "val", classes=2, per_class=2)
    dm = ImageFolderDataModule(root=str(tmp_path), val_size=1, image_size=32)
    with pytest.raises(ValueError, match=r"class folders .* differ"):
        dm.setup()
