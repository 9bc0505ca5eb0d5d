"""Shared plumbing for kdlightning's data modules: indexed batches and the labeled subset.

Every data module reports ``num_classes`` and ``input_shape`` before ``setup`` runs, so that
the job can build teacher and student for the data and check them against it.

Every batch is ``(inputs, targets, index)``: ``index`` is each sample's position in its split,
which is what lets the distillation stage look up teacher logits computed once beforehand,
whatever the shuffling, ``drop_last`` or DDP sharding. Data sets held in memory as tensors are
served whole-batch (one fancy-indexing per batch, no per-sample ``__getitem__`` + collate).

``num_labeled=N`` (the transfer set): a seeded, class-balanced subset of N training samples keeps
its labels. ``train_mode`` says what ``train_dataloader`` serves:

- ``"full"``: every training sample with its label (the teacher);
- ``"labeled"``: only the N labeled samples (the student alone), repeated to the size of the
  training split so that an epoch takes as many steps in every mode;
- ``"transfer"``: every training sample, the unlabeled ones with target ``-1`` (the distilled
  student: cross-entropy on the labeled ones, the distillation term on all).

``raw_input()`` says what the data set stores and how the module turns it into the inputs the
models see (:class:`RawInput`: a divisor, then per-channel mean and std): an exported student folds
that normalization into its graph and takes the data as stored (digits' 0-16, Fashion-MNIST's
0-255), :mod:`kdlightning.deploy.export`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, TensorDataset

from kdlightning.data.fast import TensorBatches, check_on_device
from kdlightning.files import fingerprint_files

#: Target of a training sample whose label is withheld (``num_labeled``); losses ignore it.
UNLABELED = -1
TRAIN_MODES = ("full", "labeled", "transfer")


@dataclass(frozen=True)
class RawInput:
    """The inputs as a data set stores them, and the normalization a data module applies:
    ``model input = (raw / divide_by - mean) / std``, mean and std per channel (or one for all).

    ``integer``: the stored values are integers (pixel counts 0-16, bytes 0-255), so
    :meth:`to_raw` rounds and gets them back exactly from the normalized inputs.
    """

    description: str
    value_range: tuple[float, float] | None = None
    integer: bool = False
    divide_by: float = 1.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    @property
    def is_identity(self) -> bool:
        return self.divide_by == 1.0 and set(self.mean) == {0.0} and set(self.std) == {1.0}

    def _stats(self, x: Tensor) -> tuple[Tensor, Tensor]:
        shape = [1] * x.dim()
        if len(self.mean) > 1:
            shape[1] = len(self.mean)  # (N, C, ...): one value per channel
        mean = torch.tensor(self.mean, dtype=x.dtype).reshape(shape)
        std = torch.tensor(self.std, dtype=x.dtype).reshape(shape)
        return mean, std

    def normalizer(self) -> nn.Module:
        """The normalization as a module (exported in front of the student)."""
        return Normalize(self.divide_by, self.mean, self.std)

    def to_raw(self, inputs: Tensor) -> Tensor:
        """Normalized model inputs back to the values as stored (rounded when integers)."""
        if self.is_identity:
            return inputs
        mean, std = self._stats(inputs)
        raw = (inputs * std + mean) * self.divide_by
        return raw.round() if self.integer else raw

    def as_dict(self) -> dict[str, Any]:
        return {
            "values": self.description,
            "value_range": list(self.value_range) if self.value_range else None,
            "normalization": {"divide_by": self.divide_by, "mean": list(self.mean),
                              "std": list(self.std)},
        }  # fmt: skip


class Normalize(nn.Module):
    """``(x / divide_by - mean) / std``, mean and std per channel (dimension 1) or one for all
    (the data modules divide first, as ``ToTensor`` does: the same float32 rounding)."""

    def __init__(self, divide_by: float, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.divide_by = float(divide_by)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        shape = [1] * x.dim()
        if self.mean.numel() > 1:
            shape[1] = self.mean.numel()
        return (x / self.divide_by - self.mean.reshape(shape)) / self.std.reshape(shape)


class IndexedTensors(Dataset):
    """In-memory ``(inputs, targets)`` served as ``(x, y, index)``, a whole batch at a time.

    ``DataLoader`` calls ``__getitems__`` with a batch of indices when it exists; ``index`` maps
    each row back to ``positions`` (its place in the split it came from).
    """

    #: whether batches are random views drawn as they are served (data.augment), so that they
    #: cannot be cut from the tensors ahead (kdlightning.data.fast)
    augmented = False

    def __init__(self, inputs: Tensor, targets: Tensor, positions: Tensor | None = None) -> None:
        if len(inputs) != len(targets):
            raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets")
        self.inputs, self.targets = inputs, targets
        self.positions = torch.arange(len(targets)) if positions is None else positions

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, Tensor]:
        return self.inputs[i], self.targets[i], self.positions[i]

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, Tensor, Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.inputs[idx], self.targets[idx], self.positions[idx]


class EpochShuffler(Sampler[int]):
    """A random order that depends on (seed, epoch) only, like ``DistributedSampler``'s.

    ``RandomSampler`` draws from the global generator, so a run resumed from a checkpoint would
    see other batches than the run it continues; Lightning calls ``set_epoch`` on this one.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):  # type: ignore[no-untyped-def]
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())


class ExactDistributedSampler(DistributedSampler):
    """Rank r of w evaluates samples r, r + w, r + 2w, ...: every sample exactly once.

    Lightning's default ``DistributedSampler`` pads the ranks to equal length by repeating
    samples, so a test accuracy under DDP would count some images twice. Evaluation needs no
    equal lengths: metrics are summed across ranks once, at the end of the epoch. Being a
    ``DistributedSampler``, Lightning leaves it in place.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.num_samples = len(range(rank, len(dataset), num_replicas))  # type: ignore[arg-type]
        self.total_size = len(dataset)  # type: ignore[arg-type]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(range(self.rank, self.total_size, self.num_replicas))


def _injects_sampler(trainer: L.Trainer) -> bool:
    # Trainer(use_distributed_sampler=False) leaves DataLoaders unsharded: so does the fast path.
    return bool(trainer._accelerator_connector.use_distributed_sampler)


def batch_as_is(batch: Any) -> Any:
    # IndexedTensors.__getitems__ already returns the batch (module level: workers pickle it).
    return batch


class Indexed(Dataset):
    """Any ``(input, target)`` data set, with the target replaced per ``targets`` if given,
    returning ``(input, target, index)`` for the default collate."""

    def __init__(self, dataset: Dataset, targets: Tensor | None = None) -> None:
        self.dataset, self.targets = dataset, targets

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Any, Any, int]:
        x, y = self.dataset[i]
        return x, (int(self.targets[i]) if self.targets is not None else y), i


def dataset_targets(dataset: Dataset) -> Tensor:
    """The targets of a data set without decoding its inputs (tensors, subsets, torchvision)."""
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[1].long()
    if isinstance(dataset, IndexedTensors):
        return dataset.targets.long()
    inner, indices = getattr(dataset, "dataset", None), getattr(dataset, "indices", None)
    if inner is not None and indices is not None:
        return dataset_targets(inner)[torch.as_tensor(list(indices), dtype=torch.long)]
    if hasattr(dataset, "targets"):
        return torch.as_tensor(dataset.targets).long()
    return torch.as_tensor([int(dataset[i][1]) for i in range(len(dataset))])  # type: ignore[arg-type]


def balanced_subset(targets: Tensor, n: int, num_classes: int, seed: int) -> Tensor:
    """``n`` seeded sample positions, as equal a share per class as the classes allow (sorted)."""
    if not 0 < n <= len(targets):
        raise ValueError(
            f"data.num_labeled must lie between 1 and {len(targets)} (the training split's "
            f"size), got {n!r}; use null to keep every label"
        )
    g = torch.Generator().manual_seed(int(seed))
    pools = [torch.nonzero(targets == c).flatten() for c in range(num_classes)]
    pools = [p[torch.randperm(len(p), generator=g)] for p in pools]
    chosen: list[Tensor] = []
    need, open_pools = n, [p for p in pools if len(p)]
    # Round-robin over classes: each takes its share; small classes give the rest to others.
    while need > 0:
        share = max(1, need // len(open_pools))
        for i, pool in enumerate(open_pools):
            take = min(share, len(pool), need)
            chosen.append(pool[:take])
            open_pools[i], need = pool[take:], need - take
            if need == 0:
                break
        open_pools = [p for p in open_pools if len(p)]
    return torch.sort(torch.cat(chosen)).values


def make_loader(
    dm: L.LightningDataModule,
    dataset: Dataset,
    *,
    train: bool,
    shard: bool = True,
    seed: int = 0,
    collate_fn: Any = None,
) -> DataLoader:
    """A DataLoader with ``dm``'s settings (``batch_size``, ``eval_batch_size``, ``num_workers``,
    ``pin_memory``): seeded shuffling when training (the same order for every stage of a seed);
    under DDP, evaluation sharded without padding (every sample scored exactly once) unless
    ``shard=False``, which serves the whole set on every rank."""
    trainer = getattr(dm, "trainer", None)
    sampler: Sampler[int] | None = None
    if train:
        sampler = EpochShuffler(len(dataset), seed)  # type: ignore[arg-type]
    elif shard and trainer is not None and trainer.world_size > 1:
        sampler = ExactDistributedSampler(dataset, trainer.world_size, trainer.global_rank)
    return DataLoader(
        dataset,
        batch_size=dm.batch_size if train else dm.eval_batch_size,
        sampler=sampler,
        # Drop a ragged last batch only when training: tiny last batches make BatchNorm noisy.
        drop_last=train and len(dataset) > dm.batch_size,  # type: ignore[arg-type]
        num_workers=dm.num_workers,
        pin_memory=dm.pin_memory,
        persistent_workers=dm.num_workers > 0,
        collate_fn=collate_fn,
    )


class ClassificationDataModule(L.LightningDataModule):
    """A LightningDataModule with train/val/test datasets and uniform loader settings.

    Subclasses set ``num_classes`` and ``input_shape`` and fill ``train_set``, ``val_set`` and
    ``test_set`` (``(input, target)`` data sets; a 2-tensor ``TensorDataset`` is served
    whole-batch) in ``setup``. ``augments`` says whether the training inputs are random.
    """

    num_classes: int
    input_shape: tuple[int, ...]
    augments: bool = False
    CLASS_NAMES: ClassVar[tuple[str, ...]] = ()  # in label order; empty: the class indices

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
        eval_batch_size: int | None = None,
        num_labeled: int | None = None,
        on_device: bool | str = "auto",
    ) -> None:
        super().__init__()
        self.on_device = check_on_device(on_device)
        if int(batch_size) < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size!r}")
        if int(num_workers) < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {num_workers!r}")
        if num_labeled is not None and int(num_labeled) < 1:
            raise ValueError(f"data.num_labeled must be >= 1 or null, got {num_labeled!r}")
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.num_labeled = None if num_labeled is None else int(num_labeled)
        self.train_mode = "full"
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self._labeled: Tensor | None = None

    @property
    def class_names(self) -> list[str]:
        """One readable name per class, for figures: the subclass's ``CLASS_NAMES``, else "0",
        "1", ... (the digit drawn, for the digit data sets)."""
        return list(self.CLASS_NAMES) or [str(i) for i in range(self.num_classes)]

    def raw_input(self) -> RawInput:
        """What the data set stores and how this module normalizes it (:class:`RawInput`);
        here: the inputs as served, nothing folded in. Subclasses that normalize override it."""
        return RawInput("the model inputs as this data module serves them (float32)")

    # --- the labeled subset ---------------------------------------------------------------------
    def labeled_positions(self) -> Tensor | None:
        """Positions in ``train_set`` that keep their labels (``None``: all of them)."""
        if self.num_labeled is None:
            return None
        if self._labeled is None:
            targets = dataset_targets(self._split("train"))
            seed = int(getattr(self, "seed", 0))
            self._labeled = balanced_subset(targets, self.num_labeled, self.num_classes, seed)
        return self._labeled

    def source_files(self) -> list[Path]:
        """The files the samples are read from (none for data made in memory); the job's cache
        keys cover what they hold (:meth:`fingerprint`), not only their path in the config."""
        return []

    def fingerprint(self) -> dict[str, Any]:
        """Count, size and digest of :meth:`source_files` (empty when there are none)."""
        files = self.source_files()
        return fingerprint_files(files) if files else {}

    def set_train_mode(self, mode: str) -> None:
        """Choose what ``train_dataloader`` serves: ``full``, ``labeled`` or ``transfer``."""
        if mode not in TRAIN_MODES:
            raise ValueError(f"train_mode must be one of {TRAIN_MODES}, got {mode!r}")
        self.train_mode = mode

    # --- loaders --------------------------------------------------------------------------------
    def _split(self, split: str) -> Dataset:
        dataset = getattr(self, f"{split}_set")
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before asking for loaders")
        return dataset

    def indexed(self, split: str, mode: str = "full") -> Dataset:
        """``split`` as ``(x, y, index)`` samples; for ``train``, as ``mode`` says."""
        dataset = self._split(split)
        labeled = self.labeled_positions() if split == "train" else None
        targets = dataset_targets(dataset) if labeled is not None else None
        if labeled is not None and mode == "labeled":
            # The labeled samples repeated up to the split's size: an epoch of the student alone
            # takes as many steps as an epoch of the distilled student, which sees every sample.
            reps = -(-len(targets) // len(labeled))
            tiled = labeled.repeat(reps)[: len(targets)]
            if isinstance(dataset, TensorDataset):
                x, y = dataset.tensors
                return self.train_view(IndexedTensors(x[tiled], y[tiled].long(), tiled))
            return Indexed(torch.utils.data.Subset(dataset, tiled.tolist()))
        if labeled is not None and mode == "transfer":
            masked = torch.full_like(targets, UNLABELED)
            masked[labeled] = targets[labeled]
            targets = masked
        if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2:
            x, y = dataset.tensors
            served = IndexedTensors(x, y.long() if targets is None else targets)
            return self.train_view(served) if split == "train" else served
        return Indexed(dataset, targets)

    def train_view(self, dataset: IndexedTensors) -> IndexedTensors:
        """The in-memory training split as the training loader serves it: as is here;
        subclasses that augment whole batches wrap it (:mod:`kdlightning.data.augment`)."""
        return dataset

    def loader(
        self, dataset: Dataset, *, train: bool, shard: bool = True
    ) -> DataLoader | TensorBatches:
        """The batches of an :meth:`indexed` data set, with this module's settings.

        In-memory sets (:class:`IndexedTensors`) are served as whole-tensor batches on the
        training device (:mod:`kdlightning.data.fast`: the same order, no per-sample Python;
        ``num_workers`` and ``pin_memory`` do not apply) unless ``data.on_device=false`` or the
        batches are augmented; others through a DataLoader. Under DDP, training shards as
        Lightning's distributed sampler does, evaluation without padding
        (:class:`ExactDistributedSampler`); ``shard=False`` serves the whole set on every rank.
        """
        seed = int(getattr(self, "seed", 0))
        # Augmented batches (data.augment) draw their views per batch as the DataLoader asks for
        # them (AugmentedTensors.__getitems__): those keep the DataLoader.
        fast = not getattr(dataset, "augmented", False) and self.on_device is not False
        if isinstance(dataset, IndexedTensors) and fast:
            return self._tensor_batches(dataset, train=train, shard=shard, seed=seed)
        collate = batch_as_is if isinstance(dataset, IndexedTensors) else None
        return make_loader(self, dataset, train=train, shard=shard, seed=seed, collate_fn=collate)

    def _tensor_batches(
        self, dataset: IndexedTensors, *, train: bool, shard: bool, seed: int
    ) -> TensorBatches:
        trainer = getattr(self, "trainer", None)
        world, rank, device = 1, 0, torch.device("cpu")
        if trainer is not None:
            device = trainer.strategy.root_device  # the GPU when training on one
            # Training shards whenever Lightning would inject its sampler (the DataLoader path).
            if trainer.world_size > 1 and (shard if not train else _injects_sampler(trainer)):
                world, rank = trainer.world_size, trainer.global_rank
        return TensorBatches(
            dataset.inputs, dataset.targets, dataset.positions,
            self.batch_size if train else self.eval_batch_size,
            train=train, seed=seed, world=world, rank=rank, device=device,
        )  # fmt: skip

    def train_dataloader(self) -> DataLoader | TensorBatches:
        return self.loader(self.indexed("train", self.train_mode), train=True)

    def val_dataloader(self) -> DataLoader | TensorBatches:
        return self.loader(self.indexed("val"), train=False)

    def test_dataloader(self) -> DataLoader | TensorBatches:
        return self.loader(self.indexed("test"), train=False)
