"""MNIST1DDataModule: generated locally with make_dataset, never downloaded."""

from __future__ import annotations

import random

import mnist1d.data
import numpy as np
import pytest
import torch

from kdlightning.data import MNIST1DDataModule


@pytest.fixture(autouse=True)
def no_downloader(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("mnist1d.data.get_dataset (which downloads) must not be called")

    monkeypatch.setattr(mnist1d.data, "get_dataset", refuse)


def test_default_sizes_and_shapes() -> None:
    dm = MNIST1DDataModule(seed=0, batch_size=50)
    assert dm.num_classes == 10 and dm.input_shape == (1, 40)  # before setup
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (3500, 500, 1000)
    x, y, index = next(iter(dm.train_dataloader()))
    assert x.shape == (50, 1, 40) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(dm.train_set.tensors[1][index], y)  # index: position in the split
    assert set(dm.test_set.tensors[1].tolist()) == set(range(10))


def test_seed_moves_only_the_validation_split_and_rngs_are_untouched() -> None:
    np.random.seed(123)
    random.seed(123)
    expected_np, expected_py = np.random.rand(), random.random()
    np.random.seed(123)
    random.seed(123)
    a = MNIST1DDataModule(num_samples=200, val_size=20, seed=0)
    a.setup()
    assert np.random.rand() == expected_np and random.random() == expected_py
    b = MNIST1DDataModule(num_samples=200, val_size=20, seed=1)
    b.setup()
    assert (len(a.train_set), len(a.val_set), len(a.test_set)) == (140, 20, 40)
    assert torch.equal(a.test_set.tensors[0], b.test_set.tensors[0])  # same generated data
    assert not torch.equal(a.val_set.tensors[0], b.val_set.tensors[0])
    pool = lambda dm: torch.cat([dm.train_set.tensors[0], dm.val_set.tensors[0]]).sum()  # noqa: E731
    assert torch.allclose(pool(a), pool(b))  # the same training part, split differently


def test_bad_sizes() -> None:
    with pytest.raises(ValueError, match=r"num_samples"):
        MNIST1DDataModule(num_samples=5)
    with pytest.raises(ValueError, match=r"train_split"):
        MNIST1DDataModule(train_split=1.5)
