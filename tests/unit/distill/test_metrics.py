"""The per-step savings of issue 20 keep every value: the accuracy metric equals torchmetrics',
and a fit's logged step and epoch values are the steps' own (about 3 s)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import Logger
from torchmetrics.classification import MulticlassAccuracy

from kdlightning.data.fast import TensorBatches
from kdlightning.distill.metrics import Accuracy
from kdlightning.distill.modules import DistillationModule
from kdlightning.models import MLP


@pytest.mark.parametrize("shape", [(64,), (8, 5)])
def test_accuracy_equals_torchmetrics_micro_accuracy_with_ignore_index(shape: tuple) -> None:
    g = torch.Generator().manual_seed(0)
    ours, ref = Accuracy(ignore_index=-1), MulticlassAccuracy(7, average="micro", ignore_index=-1)
    for _ in range(3):
        logits = torch.randn(shape[0], 7, *shape[1:], generator=g)
        target = torch.randint(-1, 7, shape, generator=g)
        ours.update(logits, target)
        ref.update(logits, target)
    assert ours.compute().item() == pytest.approx(ref.compute().item(), abs=1e-7)
    labels = Accuracy()  # predicted labels against labels (the agreement metric), no ignoring
    labels.update(torch.tensor([1, 2, 3, 3]), torch.tensor([1, 2, 0, 3]))
    assert labels.compute().item() == 0.75
    nothing = Accuracy(ignore_index=-1)
    nothing.update(torch.randn(2, 3), torch.tensor([-1, -1]))
    assert nothing.compute().item() == 0.0  # as torchmetrics: 0, not NaN


class Capture(Logger):
    """Every metrics dict Lightning writes, with its step."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[int, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "capture"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.rows.append((int(step or 0), dict(metrics)))

    def log_hyperparams(self, *args: Any, **kwargs: Any) -> None:
        pass


class StepLosses(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, module: Any, outputs: Any, *args: Any) -> None:
        self.losses.append(float(outputs["loss"]))


def test_the_loggers_get_each_logged_steps_own_values_and_exact_epoch_means(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(1)
    n, shape = 96, (1, 4, 4)
    x, y = torch.randn(n, *shape, generator=g), torch.randint(0, 3, (n,), generator=g)
    y[::5] = -1  # transfer-set samples: no label, KD term only
    table = torch.randn(n, 3, generator=g)
    teacher, student = MLP(3, shape, hidden_sizes=[4]), MLP(3, shape, hidden_sizes=[4])
    module = DistillationModule(teacher, student, 2.0, 0.7, teacher_logits={"train": table})
    logger, losses = Capture(), StepLosses()
    trainer = L.Trainer(
        max_epochs=2, accelerator="cpu", logger=logger, log_every_n_steps=2, callbacks=[losses],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path,
    )  # fmt: skip
    batches = TensorBatches(x, y, torch.arange(n), 16, train=True, seed=0)  # 6 steps per epoch
    trainer.fit(module, train_dataloaders=batches)
    steps = {s: m for s, m in logger.rows if "train/loss_step" in m}
    assert sorted(steps) == [1, 3, 5, 7, 9, 11]  # every 2nd step, as Lightning writes them
    for step, metrics in steps.items():
        assert metrics["train/loss_step"] == pytest.approx(losses.losses[step], rel=1e-6)
        mix = 0.7 * metrics["train/kd_loss_step"] + 0.3 * metrics["train/ce_loss_step"]
        assert metrics["train/loss_step"] == pytest.approx(mix, rel=1e-5)
    epochs = [m for _, m in logger.rows if "train/loss_epoch" in m]
    for epoch, metrics in enumerate(epochs):  # equal batch sizes: the mean of the step losses
        want = sum(losses.losses[6 * epoch : 6 * epoch + 6]) / 6
        assert metrics["train/loss_epoch"] == pytest.approx(want, rel=1e-5)
        assert 0.0 <= metrics["train/acc"] <= 1.0
    assert len(epochs) == 2
