"""Top-1 accuracy as two device-side counts, for the modules' per-step metric updates.

    from kdlightning.distill.metrics import Accuracy
    acc = Accuracy(ignore_index=-1)
    acc.update(logits, targets)    # logits (N, C, ...) or labels (N, ...); no host sync
    acc.compute()                  # correct / counted, summed over DDP ranks by torchmetrics

The value equals torchmetrics' ``MulticlassAccuracy(average="micro", ignore_index=...)``
(tests/unit/distill/test_metrics.py), which the modules used before: its update runs the
stat-scores machinery (several indexing ops, a boolean mask that syncs with the device) and cost
more per step than a small student's forward pass. Here an update is an argmax, a comparison and
two sums, added in place.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


class Accuracy(Metric):
    """Micro top-1 accuracy; targets equal to ``ignore_index`` are not counted (0 if none is)."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = True
    counts: Tensor

    def __init__(self, ignore_index: int | None = None) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        # [correct, counted] in one tensor: one in-place add per update, one reduce under DDP
        self.add_state("counts", torch.zeros(2, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """``preds``: scores with the classes on dimension 1, or predicted labels shaped as
        ``target``."""
        labels = preds.argmax(dim=1) if preds.ndim == target.ndim + 1 else preds
        hit = labels == target
        if self.ignore_index is None:
            self.counts += torch.stack([hit.sum(), hit.new_tensor(hit.numel(), dtype=torch.long)])
            return
        keep = target != self.ignore_index
        self.counts += torch.stack([(hit & keep).sum(), keep.sum()])

    def compute(self) -> Tensor:
        return self.counts[0].float() / self.counts[1].clamp(min=1)
