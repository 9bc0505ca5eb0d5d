"""kdlightning.data.base: indexed whole-batch loading, the labeled subset, exact DDP evaluation."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from kdlightning.data import DigitsDataModule
from kdlightning.data.base import (
    UNLABELED,
    ExactDistributedSampler,
    Indexed,
    IndexedTensors,
    balanced_subset,
    dataset_targets,
)


def test_indexed_tensors_serve_whole_batches_with_their_positions() -> None:
    x, y = torch.arange(20.0).reshape(10, 2), torch.arange(10) % 3
    ds = IndexedTensors(x, y)
    bx, by, bi = ds.__getitems__([7, 2, 5])
    assert torch.equal(bi, torch.tensor([7, 2, 5]))
    assert torch.equal(bx, x[[7, 2, 5]]) and torch.equal(by, y[[7, 2, 5]])
    assert [int(t) for t in ds[4][1:]] == [int(y[4]), 4]


def test_shuffled_dropping_loader_batches_align_with_the_split() -> None:
    dm = DigitsDataModule(batch_size=50, seed=3)
    dm.setup()
    x_all, y_all = dm.train_set.tensors
    seen = []
    for x, y, idx in dm.train_dataloader():  # shuffled, drop_last
        assert torch.equal(x, x_all[idx]) and torch.equal(y, y_all[idx])
        seen.append(idx)
    seen_idx = torch.cat(seen)
    assert len(seen_idx) == (len(y_all) // 50) * 50 and len(set(seen_idx.tolist())) == len(seen_idx)
    assert not torch.equal(seen_idx, torch.sort(seen_idx).values)  # it did shuffle


def test_balanced_subset_is_balanced_seeded_sorted_and_checked() -> None:
    targets = torch.tensor([0] * 50 + [1] * 30 + [2] * 4)
    chosen = balanced_subset(targets, 30, 3, seed=0)
    counts = torch.bincount(targets[chosen], minlength=3).tolist()
    # class 2 has only 4 samples: the others share what it cannot give
    assert counts == [13, 13, 4]
    assert torch.equal(chosen, torch.sort(chosen).values) and len(set(chosen.tolist())) == 30
    assert torch.equal(chosen, balanced_subset(targets, 30, 3, seed=0))
    assert not torch.equal(chosen, balanced_subset(targets, 30, 3, seed=1))
    with pytest.raises(ValueError, match=r"data.num_labeled must lie between 1 and 84"):
        balanced_subset(targets, 85, 3, seed=0)


def test_num_labeled_modes_on_digits() -> None:
    dm = DigitsDataModule(num_labeled=100, seed=0)
    dm.setup()
    x_train, y_train = dm.train_set.tensors
    labeled = dm.labeled_positions()
    assert len(labeled) == 100
    assert torch.bincount(y_train[labeled], minlength=10).tolist() == [10] * 10

    transfer = dm.indexed("train", "transfer")
    assert len(transfer) == len(y_train)
    kept = transfer.targets != UNLABELED
    assert torch.equal(torch.nonzero(kept).flatten(), labeled)
    assert torch.equal(transfer.targets[kept], y_train[labeled])

    alone = dm.indexed("train", "labeled")
    # only labeled samples, repeated up to the split's size (the same steps per epoch)
    assert len(alone) == len(y_train) and set(alone.positions.tolist()) == set(labeled.tolist())
    assert torch.equal(alone.inputs, x_train[alone.positions])

    full = dm.indexed("train", "full")
    assert torch.equal(full.targets, y_train)
    # the labeled subset is part of the training split: none of its images is in val or test
    rows = {tuple(r.flatten().tolist()) for r in x_train[labeled]}
    for split in (dm.val_set, dm.test_set):
        assert rows.isdisjoint({tuple(r.flatten().tolist()) for r in split.tensors[0]})


def test_num_labeled_on_generic_datasets_and_bad_values() -> None:
    base = TensorDataset(torch.randn(12, 3), torch.arange(12) % 2)
    wrapped = Indexed(base, targets=torch.full((12,), UNLABELED))
    assert wrapped[5][1:] == (UNLABELED, 5)
    subset = torch.utils.data.Subset(base, [1, 2, 3])
    assert dataset_targets(subset).tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match=r"data.num_labeled must be >= 1 or null, got 0"):
        DigitsDataModule(num_labeled=0)


@pytest.mark.parametrize(("n", "world"), [(10, 3), (7, 2), (4, 4), (3, 4)])
def test_exact_distributed_sampler_counts_every_sample_once(n: int, world: int) -> None:
    shards = [list(ExactDistributedSampler(range(n), world, r)) for r in range(world)]
    assert sorted(i for s in shards for i in s) == list(range(n))
    assert [len(ExactDistributedSampler(range(n), world, r)) for r in range(world)] == [
        len(s) for s in shards
    ]
