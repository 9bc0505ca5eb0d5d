"""Whole-tensor batches for data sets held in memory: the DataLoader's order, no per-sample Python.

    from kdlightning.data.fast import TensorBatches
    batches = TensorBatches(x, y, positions, batch_size=128, seed=0, train=True)
    batches.set_epoch(3)                  # Lightning calls it through ``batches.sampler``
    for x, y, index in batches: ...       # x: (128, ...), index: positions in the split

``data.on_device`` (``auto``, ``true``, ``false``) chooses it in the data modules
(:meth:`kdlightning.data.base.ClassificationDataModule.loader`): the inputs, targets and sample
positions are copied once to the training device (the GPU, when Lightning trains on one) and each
batch is one indexing per tensor with a slice of a per-epoch permutation. A ``DataLoader`` over
:class:`~kdlightning.data.base.IndexedTensors` turns every batch's indices into a Python list and
back into a tensor, which on a small student costs as much as its step.

The order is the DataLoader path's, exactly: :class:`~kdlightning.data.base.EpochShuffler`'s
permutation of (seed, epoch); under DDP, the shard Lightning's ``DistributedSamplerWrapper``
(``shuffle=False``) gives rank r of w -- the permutation padded with its own head to a multiple
of w, then every w-th entry from r -- cut into batches with the same ``drop_last``; evaluation
shards as :class:`~kdlightning.data.base.ExactDistributedSampler` (rank r scores r, r + w, ...).
``state_dict`` / ``load_state_dict`` make it resumable mid-epoch: Lightning stores the position
in the checkpoint and the resumed run serves the rest of the same epoch's order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

#: ``data.on_device`` values: ``auto`` serves in-memory sets as whole-tensor batches (on the
#: training device), ``true`` the same (named), ``false`` through a ``DataLoader``.
ON_DEVICE = ("auto", True, False)


def check_on_device(value: object) -> str | bool:
    """Return ``value`` if it is a ``data.on_device`` value, else a ``ValueError`` that names it."""
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if value in ON_DEVICE and (isinstance(value, bool) or value == "auto"):
        return value  # type: ignore[return-value]
    raise ValueError(
        f"data.on_device={value!r} is not one of auto, true, false: auto and true serve data sets "
        "held in memory as whole-tensor batches on the training device (the GPU when there is "
        "one), false through a DataLoader (e.g. data.on_device=false to save GPU memory)"
    )


def epoch_order(n: int, seed: int, epoch: int, device: torch.device | None = None) -> Tensor:
    """EpochShuffler's permutation of ``range(n)`` for (``seed``, ``epoch``), as a tensor."""
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(n, generator=g).to(device)


def shard(order: Tensor, world: int, rank: int, pad: bool) -> Tensor:
    """Rank ``rank``'s share of ``order``: every ``world``-th entry from ``rank``; ``pad``: first
    padded with its own head to a multiple of ``world`` (``DistributedSampler``'s training shard,
    equal lengths), else not (evaluation: every sample exactly once)."""
    if world == 1:
        return order
    if pad:
        total = -(-len(order) // world) * world
        reps = -(-total // max(1, len(order)))
        order = order.repeat(reps)[:total] if total > len(order) else order
    return order[rank::world]


class TensorBatches:
    """Batches ``(inputs[i], targets[i], positions[i])`` cut from whole tensors by an index order.

    ``train``: shuffled per (``seed``, epoch), batches of ``batch_size`` with the last ragged one
    dropped when the split holds more than one batch (as the data modules' loaders do); else in
    order, the last batch kept. ``world`` / ``rank``: the DDP shard (see the module docstring).
    """

    def __init__(
        self,
        inputs: Tensor,
        targets: Tensor,
        positions: Tensor,
        batch_size: int,
        *,
        train: bool,
        seed: int = 0,
        world: int = 1,
        rank: int = 0,
        device: torch.device | str | None = None,
    ) -> None:
        if not len(inputs) == len(targets) == len(positions):
            raise ValueError(
                f"{len(inputs)} inputs, {len(targets)} targets and {len(positions)} positions: "
                "one of each per sample"
            )
        self.device = torch.device(device or "cpu")
        self.inputs, self.targets, self.positions = (
            t.to(self.device) for t in (inputs, targets, positions)
        )
        self.batch_size, self.train, self.seed = int(batch_size), bool(train), int(seed)
        self.world, self.rank = int(world), int(rank)
        self.drop_last = self.train and len(targets) > self.batch_size
        self.epoch = 0
        self._resume: dict[str, int] | None = None  # from load_state_dict, used once
        self._served = 0  # batches handed out in the current epoch (state_dict)

    #: Lightning reads a loader's ``batch_sampler`` next to its ``sampler`` (None: no such)
    batch_sampler = None

    # Lightning's _set_sampler_epoch calls ``loader.sampler.set_epoch``: be our own sampler.
    @property
    def sampler(self) -> TensorBatches:
        return self

    @property
    def dataset(self) -> TensorBatches:  # Lightning sizes a loader's ``dataset`` (sized_len)
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def order(self) -> Tensor:
        """This rank's sample rows for the current epoch, in serving order (before batching)."""
        n = len(self.targets)
        if self.train:
            order = epoch_order(n, self.seed, self.epoch)
            return shard(order, self.world, self.rank, pad=True)
        return shard(torch.arange(n), self.world, self.rank, pad=False)

    def _rows(self) -> int:
        if self.world == 1:
            return len(self.targets)
        n = len(self.targets)
        if self.train:
            return -(-n // self.world)
        return len(range(self.rank, n, self.world))

    def __len__(self) -> int:
        rows = self._rows()
        return rows // self.batch_size if self.drop_last else -(-rows // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        # A generator: the order is drawn at the first next(), after Lightning's set_epoch.
        # One draw from the global generator first, as a DataLoader's iterator makes (its
        # workers' base seed): the model's random stream (dropout masks) then stays the one the
        # DataLoader path gives, so data.on_device changes speed, never results; the stage cache
        # relies on that (data.on_device is not in its keys). At the first next(), not at iter():
        # Lightning calls iter() on a loader that is not a DataLoader only to check it.
        torch.empty((), dtype=torch.int64).random_()
        order = self.order().to(self.device)
        start = 0
        if self._resume is not None and self._resume["epoch"] == self.epoch:
            start = self._resume["served"]
        self._resume = None
        self._served = start
        for b in range(start, len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            self._served = b + 1
            yield self.inputs[idx], self.targets[idx], self.positions[idx]

    def state_dict(self) -> dict[str, Any]:
        """The epoch and how many of its batches were served (Lightning saves it)."""
        return {"epoch": self.epoch, "served": self._served}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the saved epoch after its served batches (the next ``__iter__`` does)."""
        self._resume = {"epoch": int(state["epoch"]), "served": int(state["served"])}
