"""kdlightning.data.fast: whole-tensor batches serve exactly the DataLoader path's batches.

One process and two simulated DDP ranks (the sampler Lightning injects, built by Lightning's own
functions), evaluation shards, a mid-epoch resume through a real Lightning fit, and the
``data.on_device`` values. About 4 s in all.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.trainer.connectors.data_connector import _get_distributed_sampler
from lightning.pytorch.trainer.states import RunningStage
from lightning.pytorch.utilities.data import _is_dataloader_shuffled, _update_dataloader
from torch import Tensor, nn
from torch.utils.data import DataLoader

from kdlightning import ClassifierModule
from kdlightning.data import DigitsDataModule
from kdlightning.data.fast import TensorBatches, check_on_device
from kdlightning.models import MLP


def _digits(on_device: bool | str, batch_size: int = 50, **kw: object) -> DigitsDataModule:
    dm = DigitsDataModule(batch_size=batch_size, seed=3, on_device=on_device, **kw)
    dm.setup()
    return dm


def _fake_trainer(world: int, rank: int) -> SimpleNamespace:
    # What the data module reads of its trainer (the real one needs processes to exist).
    cpu = SimpleNamespace(root_device=torch.device("cpu"))
    return SimpleNamespace(
        world_size=world, global_rank=rank, strategy=cpu,
        _accelerator_connector=SimpleNamespace(use_distributed_sampler=True),
    )  # fmt: skip


def _batches(loader: object, epoch: int) -> list[tuple[Tensor, ...]]:
    for sampler in {id(s): s for s in (getattr(loader, "sampler", None),) if s}.values():
        sampler.set_epoch(epoch)
    return list(loader)  # type: ignore[call-overload]


def _assert_same(got: list[tuple[Tensor, ...]], want: list[tuple[Tensor, ...]]) -> None:
    assert len(got) == len(want) > 0
    for g, w in zip(got, want, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(g, w, strict=True))


@pytest.mark.parametrize("mode", ["full", "labeled", "transfer"])
def test_one_process_serves_the_dataloader_batches_in_the_same_order(mode: str) -> None:
    fast, slow = _digits("auto", num_labeled=100), _digits(False, num_labeled=100)
    for dm in (fast, slow):
        dm.set_train_mode(mode)
    fast_loader, slow_loader = fast.train_dataloader(), slow.train_dataloader()
    assert isinstance(fast_loader, TensorBatches) and isinstance(slow_loader, DataLoader)
    assert len(fast_loader) == len(slow_loader)
    for epoch in (0, 1):  # another epoch, another order; the same in both paths
        _assert_same(_batches(fast_loader, epoch), _batches(slow_loader, epoch))
    assert not torch.equal(_batches(fast_loader, 0)[0][2], _batches(fast_loader, 1)[0][2])
    for split in ("val", "test"):
        got = list(getattr(fast, f"{split}_dataloader")())
        _assert_same(got, list(getattr(slow, f"{split}_dataloader")()))


@pytest.mark.parametrize("batch_size", [50, 64])  # 1257 training samples: odd, padded to 1258
def test_two_ranks_get_the_shards_lightnings_distributed_sampler_gives(batch_size: int) -> None:
    for rank in (0, 1):
        fast, slow = _digits("auto", batch_size), _digits(False, batch_size)
        fast.trainer = slow.trainer = _fake_trainer(2, rank)  # type: ignore[assignment]
        # What Lightning does to the DataLoader path under DDP (use_distributed_sampler=true)
        dl = slow.train_dataloader()
        sampler = _get_distributed_sampler(
            dl, shuffle=_is_dataloader_shuffled(dl), overfit_batches=0, num_replicas=2, rank=rank
        )
        injected = _update_dataloader(dl, sampler, mode=RunningStage.TRAINING)
        loader = fast.train_dataloader()
        assert len(loader) == len(injected)
        for epoch in (0, 2):
            _assert_same(_batches(loader, epoch), _batches(injected, epoch))
        # evaluation: rank r scores r, r + 2, ... (ExactDistributedSampler), every sample once
        _assert_same(list(fast.test_dataloader()), list(slow.test_dataloader()))
        whole = list(fast.loader(fast.indexed("val"), train=False, shard=False))
        assert sum(len(b[2]) for b in whole) == len(fast.val_set)


class _Recorder(L.LightningModule):
    """Records the sample positions of every training batch it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Linear(64, 10)
        self.seen: list[list[int]] = []

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        self.seen.append(batch[2].tolist())
        return F.cross_entropy(self.model(batch[0].flatten(1)), batch[1])

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        self.log("val/loss", F.cross_entropy(self.model(batch[0].flatten(1)), batch[1]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit(root: Path, steps: int, ckpt: str | None = None, every: int | None = None) -> _Recorder:
    callbacks = [L.pytorch.callbacks.ModelCheckpoint(root, every_n_train_steps=every,
                                                     save_top_k=-1)] if every else []  # fmt: skip
    trainer = L.Trainer(
        max_steps=steps, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=1, callbacks=callbacks,
        enable_checkpointing=bool(every), default_root_dir=root,
    )  # fmt: skip
    module = _Recorder()
    trainer.fit(module, datamodule=_digits("auto", batch_size=100), ckpt_path=ckpt)
    return module


def test_a_run_resumed_mid_epoch_serves_the_rest_of_the_same_order(tmp_path: Path) -> None:
    # 12 batches per epoch: steps 1-16 cross an epoch boundary; resume after step 5, mid-epoch
    whole = _fit(tmp_path / "whole", 16).seen
    _fit(tmp_path / "cut", 5, every=5)
    (ckpt,) = (tmp_path / "cut").glob("*step=5.ckpt")
    resumed = _fit(tmp_path / "resumed", 16, ckpt=str(ckpt)).seen
    assert resumed == whole[5:]


def _fit_with_dropout(on_device: bool | str, root: Path) -> dict[str, Tensor]:
    L.seed_everything(0)
    module = ClassifierModule(MLP(10, (1, 8, 8), hidden_sizes=[32], dropout=0.5), num_classes=10)
    trainer = L.Trainer(
        max_epochs=2, limit_train_batches=4, limit_val_batches=2, accelerator="cpu",
        logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, default_root_dir=root,
    )  # fmt: skip
    trainer.fit(module, datamodule=DigitsDataModule(batch_size=50, seed=3, on_device=on_device))
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_on_device_changes_no_result_dropout_included(tmp_path: Path) -> None:
    """The same weights with and without the fast path: a DataLoader's iterator draws once from
    the global generator (its workers' base seed), and so must the fast path's, or every dropout
    mask after the first epoch would differ (and a cached teacher trained one way would not be
    the teacher the other way trains: data.on_device is not in the stage cache's keys)."""
    fast, slow = _fit_with_dropout("auto", tmp_path / "a"), _fit_with_dropout(False, tmp_path / "b")
    assert fast.keys() == slow.keys()
    for key in fast:
        assert torch.equal(fast[key], slow[key]), key


@pytest.mark.parametrize(("value", "want"), [("auto", "auto"), (True, True), ("false", False)])
def test_on_device_values(value: object, want: object) -> None:
    assert check_on_device(value) == want


@pytest.mark.parametrize("value", ["yes", 1, "cuda", None])
def test_a_bad_on_device_value_is_named_with_the_choices(value: object) -> None:
    with pytest.raises(ValueError, match=r"data.on_device=.* is not one of auto, true, false"):
        DigitsDataModule(on_device=value)  # type: ignore[arg-type]
    assert isinstance(_digits(False).train_dataloader(), DataLoader)
