"""Whole-batch random crops and flips (kdlightning.data.augment) and data.augment on the
(Fashion-)MNIST data modules."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fake_files import write_idx_dataset
from torch.utils.data import DataLoader

from kdlightning.data import FashionMNISTDataModule
from kdlightning.data.augment import AugmentedTensors, random_crop, random_hflip
from kdlightning.data.fast import TensorBatches


def _images(n: int = 6, h: int = 5, w: int = 7) -> torch.Tensor:
    return torch.arange(n * 2 * h * w, dtype=torch.float32).reshape(n, 2, h, w) + 1


def test_random_crop_is_a_window_of_the_padded_image() -> None:
    x = _images()
    out = random_crop(x, padding=2, fill=-1.0, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), value=-1.0)
    offsets = set()
    for i in range(len(x)):
        # exactly one offset (dy, dx) in 0..4 gives this image: a shifted window, fill outside
        found = [(dy, dx) for dy in range(5) for dx in range(5)
                 if torch.equal(out[i], padded[i, :, dy:dy + 5, dx:dx + 7])]  # fmt: skip
        assert len(found) == 1
        offsets.add(found[0])
    assert len(offsets) > 1  # drawn per image, not once per batch


def test_random_crop_and_flip_repeat_under_a_seed_and_move_with_it() -> None:
    x = torch.randn(64, 1, 28, 28)

    def views(seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return random_hflip(random_crop(x, 2, -0.8, g), g)

    assert torch.equal(views(3), views(3))
    assert not torch.equal(views(3), views(4))
    assert torch.equal(random_crop(x, 0), x)  # padding 0: no crop
    with pytest.raises(ValueError, match="crop_padding must be >= 0"):
        random_crop(x, -1)


def test_random_hflip_mirrors_about_half_the_images_exactly() -> None:
    x = torch.randn(400, 1, 4, 6)
    out = random_hflip(x, torch.Generator().manual_seed(0))
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all())
    assert 150 < int(mirrored.sum()) < 250


def test_augmented_tensors_serve_views_with_the_rows_targets_and_positions() -> None:
    x, y = _images(), torch.arange(6)
    ds = AugmentedTensors(x, y, torch.arange(10, 16), crop_padding=1, hflip=True, seed=0)
    xb, yb, pos = ds.__getitems__([4, 1])
    assert xb.shape == (2, 2, 5, 7)
    assert yb.tolist() == [4, 1] and pos.tolist() == [14, 11]
    # each call draws new views: an epoch's batches differ from the last epoch's
    first, again = ds.__getitems__(range(6))[0], ds.__getitems__(range(6))[0]
    assert not torch.equal(first, again)
    single = ds[2]
    assert single[0].shape == (2, 5, 7) and int(single[1]) == 2 and int(single[2]) == 12


def test_fashion_mnist_augments_training_batches_only(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path / "sys", n_train=40, n_test=10)

    def module(augment: bool) -> FashionMNISTDataModule:
        dm = FashionMNISTDataModule(
            data_dir=str(tmp_path / "data"), val_size=8, batch_size=32,
            system_dir=str(tmp_path / "sys"), augment=augment,
        )  # fmt: skip
        dm.setup()
        return dm

    plain, aug = module(False), module(True)
    assert (plain.augments, aug.augments) == (False, True)
    # augmented views are drawn as batches are served: a DataLoader, never the whole-tensor
    # fast path (data.on_device=auto), which would serve the stored pixels unaugmented
    assert isinstance(aug.train_dataloader(), DataLoader)
    assert isinstance(plain.train_dataloader(), TensorBatches)
    assert isinstance(aug.val_dataloader(), TensorBatches)
    torch.manual_seed(0)
    xa, ya, ia = next(iter(aug.train_dataloader()))
    xp, yp, ip = next(iter(plain.train_dataloader()))
    assert torch.equal(ia, ip) and torch.equal(ya, yp)  # same order: only the pixels move
    assert xa.shape == xp.shape == (32, 1, 28, 28) and not torch.equal(xa, xp)
    # the padding is an empty pixel (0 before normalization), never a new value
    background = -aug.mean / aug.std
    assert bool(((xa - background).abs() < 1e-6).any())
    # the job's seed (set before each stage builds its loader) fixes the views
    torch.manual_seed(0)
    assert torch.equal(next(iter(aug.train_dataloader()))[0], xa)
    for split in ("val", "test"):
        a, p = (
            next(iter(getattr(aug, f"{split}_dataloader")())),
            next(iter(getattr(plain, f"{split}_dataloader")())),
        )
        assert torch.equal(a[0], p[0])
    with pytest.raises(ValueError, match=r"data\.crop_padding=-2"):
        FashionMNISTDataModule(data_dir=str(tmp_path), crop_padding=-2)
