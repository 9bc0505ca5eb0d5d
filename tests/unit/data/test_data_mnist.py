"""MNIST / Fashion-MNIST data modules on tiny idx files, read by torchvision, download off."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fake_files import write_idx_dataset

from kdlightning.data import FashionMNISTDataModule, MNISTDataModule
from kdlightning.data.mnist import DEBIAN_FASHION_MNIST_DIR


def test_fashion_mnist_from_a_debian_style_folder(tmp_path: Path) -> None:
    system = tmp_path / "usr_share_datasets_fashion-mnist"
    arrays = write_idx_dataset(system, n_train=30, n_test=10)  # gzipped, as Debian ships them
    dm = FashionMNISTDataModule(
        data_dir=str(tmp_path / "data"), val_size=6, seed=1, system_dir=str(system), batch_size=8
    )
    assert dm.num_classes == 10 and dm.input_shape == (1, 28, 28)  # before setup
    dm.setup()
    # Unpacked where torchvision looks for them, and nothing else was fetched.
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(arrays)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (24, 6, 10)
    x, y = dm.test_set[3]
    expected = (arrays["t10k-images-idx3-ubyte"][3] / 255.0 - dm.mean) / dm.std
    assert torch.allclose(x[0], torch.as_tensor(expected, dtype=torch.float32), atol=1e-6)
    assert int(y) == int(arrays["t10k-labels-idx1-ubyte"][3])
    xb, yb, index = next(iter(dm.train_dataloader()))
    assert xb.shape == (8, 1, 28, 28) and xb.dtype == torch.float32 and yb.dtype == torch.int64
    assert len(set(index.tolist())) == 8 and int(index.max()) < 24


def test_validation_split_is_seeded_disjoint_and_from_train(tmp_path: Path) -> None:
    raw = tmp_path / "FashionMNIST" / "raw"
    arrays = write_idx_dataset(raw, n_train=40, n_test=10)

    def split(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        dm = FashionMNISTDataModule(data_dir=str(tmp_path), val_size=10, seed=seed, system_dir=None)
        dm.setup()
        return dm.train_set.tensors[0], dm.val_set.tensors[0]

    train_a, val_a = split(0)
    _, val_b = split(0)
    _, val_c = split(1)
    assert torch.equal(val_a, val_b) and not torch.equal(val_a, val_c)
    # every official training image lands in exactly one of train/val; none in test
    images = torch.as_tensor(arrays["train-images-idx3-ubyte"]).float().flatten(1)
    seen = torch.cat([train_a, val_a]).flatten(1)
    assert seen.shape[0] == images.shape[0]
    dm = FashionMNISTDataModule(data_dir=str(tmp_path), val_size=10, system_dir=None)
    recovered = (seen * dm.std + dm.mean) * 255.0
    assert torch.allclose(recovered.round().sort(0).values, images.sort(0).values, atol=1e-3)


def test_plain_idx_files_in_the_raw_folder_work_too(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path / "MNIST" / "raw", n_train=20, n_test=5, gz=False)
    dm = MNISTDataModule(data_dir=str(tmp_path), val_size=4)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (16, 4, 5)


def test_missing_files_fail_with_the_fix_and_no_download(tmp_path: Path) -> None:
    dm = FashionMNISTDataModule(data_dir=str(tmp_path), system_dir=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"apt-get install dataset-fashion-mnist") as err:
        dm.setup()
    assert "data.download=true" in str(err.value)
    assert not (tmp_path / "FashionMNIST" / "raw").exists() or not any(
        (tmp_path / "FashionMNIST" / "raw").iterdir()
    )


def test_default_system_dir_is_debians_package_folder() -> None:
    assert FashionMNISTDataModule().system_dir == Path(DEBIAN_FASHION_MNIST_DIR)
    assert MNISTDataModule().system_dir is None


def test_val_size_must_leave_training_data(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path / "MNIST" / "raw", n_train=10, n_test=5)
    with pytest.raises(ValueError, match=r"data.val_size"):
        MNISTDataModule(data_dir=str(tmp_path), val_size=10).setup()
