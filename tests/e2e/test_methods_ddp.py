"""Every distillation method under DDP (2 CPU processes, gloo) computes what 1 process computes.

Each method trains a few steps twice: on one process with global batches of ``2b`` samples, and
on two processes (``strategy="ddp_fork"``) with ``b`` samples each, the same global batches
split between the ranks. The trained weights (student, and FitNets' connector) must agree to
float32 rounding (:data:`ATOL`). ``ddp_fork`` starts the two processes by forking this one:
nothing is re-imported, so a method costs about a second (a subprocess per run would pay 5-15 s
of imports each).

What makes the two runs compute the same thing: global batch k is samples ``[2bk, 2bk + 2b)``
on one process, and rank r of 2 takes every other one of them (``DistributedSampler`` with
``shuffle=False``); every per-sample term is a mean over equal shards, so DDP's gradient average
is the global mean; every sample is labeled (with a transfer set each rank's cross-entropy is a
mean over its own labeled count); the students have no BatchNorm or dropout in train mode (the
frozen teacher's BatchNorm uses running statistics), and FitNets' connector is a Linear (a 1x1
conv connector has a BatchNorm, whose statistics are per rank under DDP, as any student's BatchNorm
is without ``trainer.sync_batchnorm=true``, which needs GPUs); plain SGD; the same initial weights.

The batch-relational terms (DIST, RKD, PKT) are exact because the module gathers their inputs
across the ranks with gradients (``kdlightning.distill.methods.Method.gather``); the last test shows
that without the gather RKD's result would differ. CRD gathers its embeddings and sample indices
the same way: every rank scores the global batch against the same negatives (a seeded stream) and
updates its memory banks with every rank's samples, so the banks, too, match one process's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import CONF_DIR
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from kdlightning.data import DigitsDataModule
from kdlightning.distill.modules import DistillationModule
from kdlightning.distill.mutual import MutualLearningModule
from kdlightning.job.build import build_method
from kdlightning.models import SmallCNN

pytestmark = pytest.mark.slow  # two processes; about 1 s per method here (10 s in all)

PER_RANK_BATCH, WORLD_SIZE, STEPS = 16, 2, 4
SGD = functools.partial(torch.optim.SGD, lr=0.05)
# Float32 sums in another order (two half-batch means averaged by all-reduce) through 4 steps:
# measured max |difference| 1e-8 (kd, dkd, dml) to 1.5e-6 (fitnet), 7e-6 for rkd (its angle
# term, weight 50, magnifies rounding). Relational terms left per rank differ by 6e-3 (pkt),
# 9e-3 (dist) and 0.15 (rkd); a wrong data split by far more.
ATOL = 5e-5
CONF = CONF_DIR / "kd"


class TinyConvNet(nn.Module):
    """A student without BatchNorm or dropout: features.1/.3 are 8x8 maps, head.0 a vector."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))


def _teacher() -> nn.Module:
    # features.2: 8x8 activations, features.6: 4x4, head.0: a 32-vector; BatchNorm in eval mode
    torch.manual_seed(100)
    teacher = SmallCNN(10, (1, 8, 8), channels=[8, 32], hidden=32)
    with torch.no_grad():  # running statistics that are not the initial ones
        teacher.train()(torch.randn(64, 1, 8, 8))
    return teacher.eval()


def _student(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return TinyConvNet()


#: kd.<method> settings for these models (the conf/kd files' layers are for teacher/student=cnn)
FEATURES = {
    # head.0 16 -> 32: a Linear connector (trained, compared too)
    "fitnet": {"student_layers": ["head.0"], "teacher_layers": ["head.0"]},
    "at": {
        "student_layers": ["features.1", "features.3"],
        "teacher_layers": ["features.2", "features.6"],
    },
    "rkd": {"student_layers": ["head.0"], "teacher_layers": ["head.0"]},
    "pkt": {"student_layers": ["head.0"], "teacher_layers": ["head.0"]},
    "crd": {"student_layers": ["head.0"], "teacher_layers": ["head.0"]},
}


#: Every image method: its conf/kd file (the paper's values) with the layers above.
METHODS = ("kd", "dkd", "dist", "ls_kd", "fitnet", "at", "rkd", "pkt", "crd")


def _distillation(name: str, module_class: type = DistillationModule) -> L.LightningModule:
    teacher, student = _teacher(), _student()
    kd = OmegaConf.merge(OmegaConf.load(CONF / f"{name}.yaml"), FEATURES.get(name, {}))
    method = build_method(kd, teacher, student, (1, 8, 8), STEPS * PER_RANK_BATCH * WORLD_SIZE)
    return module_class(teacher, student, optimizer=SGD, method=method)


CASES: dict[str, Callable[[], L.LightningModule]] = {
    **{name: functools.partial(_distillation, name) for name in METHODS},
    "dml": lambda: MutualLearningModule([_student(0), _student(1)], optimizer=SGD),
}


class GlobalBatches(L.LightningDataModule):
    """The same global batches on 1 process (``2b`` at a time) and on 2 (``b`` per rank)."""

    def __init__(self) -> None:
        super().__init__()
        dm = DigitsDataModule()
        dm.setup("fit")
        x, y = dm.train_set.tensors  # type: ignore[union-attr]
        n = STEPS * PER_RANK_BATCH * WORLD_SIZE
        self.data = TensorDataset(x[:n], y[:n].long(), torch.arange(n))

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        assert trainer is not None
        if trainer.world_size == 1:
            return DataLoader(self.data, batch_size=PER_RANK_BATCH * WORLD_SIZE)
        sampler = DistributedSampler(
            self.data, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
        )
        return DataLoader(self.data, batch_size=PER_RANK_BATCH, sampler=sampler)


def _train(module: L.LightningModule, devices: int, root: Path) -> dict[str, torch.Tensor]:
    """``STEPS`` steps on ``devices`` processes; the trained weights (rank 0's under DDP,
    which ``ddp_fork`` loads back into ``module``), the frozen teacher left out."""
    trainer = L.Trainer(
        accelerator="cpu", devices=devices, strategy="ddp_fork" if devices > 1 else "auto",
        max_steps=STEPS, use_distributed_sampler=False, precision="32-true", logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=root,
    )  # fmt: skip
    trainer.fit(module, datamodule=GlobalBatches())
    # (under ddp_fork the loop ran in the children: this process's trainer counted nothing)
    assert devices > 1 or trainer.global_step == STEPS
    return {k: v.detach().clone() for k, v in module.state_dict().items()
            if not k.startswith("teacher.") and torch.is_tensor(v)}  # fmt: skip


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.mark.parametrize("name", sorted(CASES))
def test_two_processes_train_what_one_process_trains(name: str, tmp_path: Path) -> None:
    start = CASES[name]().state_dict()
    one = _train(CASES[name](), 1, tmp_path)
    two = _train(CASES[name](), WORLD_SIZE, tmp_path)
    assert _max_difference(one, {k: start[k] for k in one}) > 1e-3  # it did train
    assert _max_difference(two, one) < ATOL
    if name == "fitnet":  # the connector trained too, and matches
        assert any(k.startswith("method.connectors.0.") for k in two)
    if name == "crd":  # heads, memory banks (updated from both ranks' samples) and Z match
        assert {"method.embed_student.weight", "method.bank_student", "method.bank_teacher",
                "method.normalizers"} <= two.keys()  # fmt: skip
        moved = two["method.bank_student"] - start["method.bank_student"]
        assert (moved.abs().sum(dim=1) > 0).all()  # every sample's row, from either rank


class PerRankRelations(DistillationModule):
    """The module with the gather switched off: relational terms see the rank's batch only."""

    def on_fit_start(self) -> None:
        pass


def test_without_the_gather_rkd_would_relate_each_ranks_half_batch(tmp_path: Path) -> None:
    one = _train(_distillation("rkd"), 1, tmp_path)
    per_rank = _train(_distillation("rkd", PerRankRelations), WORLD_SIZE, tmp_path)
    assert _max_difference(per_rank, one) > 100 * ATOL
