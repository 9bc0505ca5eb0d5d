"""CIFAR-10/100 data modules on tiny python-pickle files, read by torchvision, download off."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fake_files import write_cifar

from kdlightning.data import CIFAR10DataModule, CIFAR100DataModule


@pytest.mark.parametrize(
    ("cls", "which", "classes"),
    [(CIFAR10DataModule, "cifar-10", 10), (CIFAR100DataModule, "cifar-100", 100)],
)
def test_loads_the_pickles_and_splits(tmp_path: Path, cls: type, which: str, classes: int) -> None:
    write_cifar(tmp_path, which, n_train=50, n_test=20)
    dm = cls(data_dir=str(tmp_path), val_size=10, check_md5=False, batch_size=8, num_workers=0)
    assert dm.num_classes == classes and dm.input_shape == (3, 32, 32)  # before setup
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (40, 10, 20)
    x, y, index = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert len(set(index.tolist())) == 8 and 0 <= int(index.min()) <= int(index.max()) < 40


def test_train_is_augmented_and_val_test_are_not(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar-10", n_train=50, n_test=20)
    dm = CIFAR10DataModule(data_dir=str(tmp_path), val_size=10, check_md5=False)
    dm.setup()
    torch.manual_seed(0)
    train_views = torch.stack([dm.train_set[0][0] for _ in range(8)])
    assert not all(torch.equal(train_views[0], v) for v in train_views[1:])  # crops/flips vary
    # val comes from the training pickles but is only normalized, identically every time
    base, idx = dm.val_set.dataset, dm.val_set.indices[0]
    pixels = torch.as_tensor(np.asarray(base.data[idx]), dtype=torch.float32).permute(2, 0, 1)
    mean, std = torch.tensor(dm.mean)[:, None, None], torch.tensor(dm.std)[:, None, None]
    expected = (pixels / 255.0 - mean) / std
    assert torch.allclose(dm.val_set[0][0], expected, atol=1e-5)
    assert torch.equal(dm.test_set[3][0], dm.test_set[3][0])
    assert dm.val_set.indices and not set(dm.val_set.indices) & set(dm.train_set.indices)


def test_torchvisions_checksums_reject_fake_files_with_a_clear_message(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar-100")
    dm = CIFAR100DataModule(data_dir=str(tmp_path), check_md5=True)
    with pytest.raises(FileNotFoundError, match=r"cifar-100-python.*data.download=true"):
        dm.setup()


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py"):
        CIFAR10DataModule(data_dir=str(tmp_path)).setup()
