"""Seeded train/val splits carved from an official training set, with per-split transforms.

    from kdlightning.data.splits import split_indices, TransformSubset
    train_idx, val_idx = split_indices(len(full_train), val_size=5000, seed=0)
    train_set = TransformSubset(full_train, train_idx, train_transform)  # augmented
    val_set = TransformSubset(full_train, val_idx, eval_transform)      # not augmented

The validation split comes out of the training set so that model selection never sees the test
set; it must use the *evaluation* transforms, which is why the subset carries its own transform
instead of inheriting the augmenting one of the underlying data set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset


def split_indices(n: int, val_size: int, seed: int) -> tuple[list[int], list[int]]:
    """A seeded random permutation of ``range(n)`` cut into (train, val) index lists."""
    val_size = int(val_size)
    if not 0 < val_size < n:
        raise ValueError(
            f"data.val_size must lie between 1 and {n - 1} (the training set has {n} samples), "
            f"got {val_size!r}"
        )
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=g).tolist()
    return sorted(perm[val_size:]), sorted(perm[:val_size])


class TransformSubset(Dataset):
    """``dataset[indices]`` with ``transform`` applied to each sample's input.

    ``dataset`` must return ``(input, target)`` pairs with its own transform switched off
    (torchvision data sets return PIL images when ``transform=None``).
    """

    def __init__(
        self,
        dataset: Dataset,
        indices: Sequence[int],
        transform: Callable[[Any], Any] | None = None,
    ) -> None:
        self.dataset = dataset
        self.indices = list(indices)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        x, y = self.dataset[self.indices[i]]
        return (self.transform(x) if self.transform is not None else x), y


def split_with_transforms(
    full: Dataset,
    test: Dataset,
    val_size: int,
    seed: int,
    train_transform: Callable[[Any], Any],
    eval_transform: Callable[[Any], Any],
) -> tuple[TransformSubset, TransformSubset, TransformSubset]:
    """(train, val, test) sets: a seeded cut of ``full`` and the whole ``test`` set.

    Only the training part augments; validation images come from the training set but get the
    evaluation transforms, like the test set.
    """
    train_idx, val_idx = split_indices(len(full), val_size, seed)  # type: ignore[arg-type]
    return (
        TransformSubset(full, train_idx, train_transform),
        TransformSubset(full, val_idx, eval_transform),
        TransformSubset(test, range(len(test)), eval_transform),  # type: ignore[arg-type]
    )
