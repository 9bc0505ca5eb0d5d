"""DigitsDataModule: shapes, normalization, seeded stratified splits, bad values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdlightning.data import DigitsDataModule


def labels(ds) -> np.ndarray:
    return ds.tensors[1].numpy()


def test_shapes_sizes_and_loaders() -> None:
    dm = DigitsDataModule(batch_size=32, val_fraction=0.15, test_fraction=0.15, seed=0)
    assert dm.num_classes == 10 and dm.input_shape == (1, 8, 8)
    dm.setup()
    n_train, n_val, n_test = len(dm.train_set), len(dm.val_set), len(dm.test_set)
    assert n_train + n_val + n_test == 1797
    assert n_test == pytest.approx(0.15 * 1797, abs=2)
    assert n_val == pytest.approx(0.15 * 1797, abs=2)
    x, y, index = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 1, 8, 8) and x.dtype == torch.float32
    # each sample's position in the training split, what cached teacher logits are looked up by
    assert index.dtype == torch.int64 and len(set(index.tolist())) == 32
    assert torch.equal(dm.train_set.tensors[1][index], y)
    assert y.dtype == torch.int64
    # standardized with training statistics
    train_x = dm.train_set.tensors[0]
    assert train_x.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert train_x.std().item() == pytest.approx(1.0, abs=1e-3)


def test_split_is_stratified_and_disjoint() -> None:
    dm = DigitsDataModule(seed=3)
    dm.setup()
    for ds in (dm.train_set, dm.val_set, dm.test_set):
        counts = np.bincount(labels(ds), minlength=10) / len(ds)
        assert counts.min() > 0.08 and counts.max() < 0.12  # each class ~10%
    rows = [{tuple(r.flatten().tolist()) for r in ds.tensors[0]} for ds in
            (dm.train_set, dm.val_set, dm.test_set)]  # fmt: skip
    # digits has a handful of exact duplicate images; the split itself must not copy rows
    assert len(rows[0] & rows[2]) < 5 and len(rows[1] & rows[2]) < 5


def test_same_seed_same_split_other_seed_other_split() -> None:
    a, b, c = DigitsDataModule(seed=1), DigitsDataModule(seed=1), DigitsDataModule(seed=2)
    for dm in (a, b, c):
        dm.setup()
    assert torch.equal(a.test_set.tensors[0], b.test_set.tensors[0])
    assert not torch.equal(a.test_set.tensors[0], c.test_set.tensors[0])


def test_test_set_does_not_depend_on_val_fraction() -> None:
    a, b = DigitsDataModule(val_fraction=0.1, seed=0), DigitsDataModule(val_fraction=0.3, seed=0)
    a.setup()
    b.setup()
    assert np.array_equal(labels(a.test_set), labels(b.test_set))


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"val_fraction": 0.0}, "val_fraction"),
        ({"test_fraction": 1.2}, "test_fraction"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, "must be < 1"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_values_are_named(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DigitsDataModule(**kw)


def test_loader_before_setup_says_so() -> None:
    with pytest.raises(RuntimeError, match="setup"):
        DigitsDataModule().train_dataloader()
