"""Decoupled knowledge distillation (Zhao, Cui, Song, Qiu & Liang 2022, arXiv 2203.08679)::

    loss = ce_weight * CE(s, y) + warmup(epoch) * T^2 * (alpha * TCKD + beta * NCKD)

``standardize=True`` z-scores the logits first (Sun et al. 2024). ``conf/kd/dkd.yaml``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from kdlightning.distill.functional import dkd_loss, dkd_warmup, standardize_logits
from kdlightning.distill.methods.base import Method, check_flag, check_temp, check_weight

__all__ = ["DKD"]


class DKD(Method):
    """Decoupled KD with its linear warm-up over ``warmup_epochs`` (0: none).

    DKD splits the KL around each sample's target class, so it needs one for every sample: an
    unlabeled one (the transfer set) is decoupled around the *teacher's* top-1 class, the class
    the teacher treats as the answer. Refusing DKD on transfer sets would take away the case
    distillation is most useful for; its cross-entropy still skips unlabeled samples.
    """

    name = "dkd"

    def __init__(
        self,
        *,
        temperature: Any,
        alpha: Any,
        beta: Any,
        ce_weight: Any,
        warmup_epochs: Any,
        standardize: Any,
    ) -> None:
        t = check_temp("temperature", temperature)
        alpha, beta = check_weight("alpha", alpha), check_weight("beta", beta)
        ce_weight = check_weight("ce_weight", ce_weight)
        warmup_epochs = check_weight("warmup_epochs", warmup_epochs)
        standardize = check_flag("standardize", standardize)
        super().__init__(t, ce_weight)
        self.alpha, self.beta, self.warmup_epochs = alpha, beta, warmup_epochs
        self.standardize = standardize

    def distill(
        self, s_logits: Tensor, t_logits: Tensor, targets: Tensor, epoch: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        y = targets.reshape(-1)
        y = torch.where(y >= 0, y, t_logits.reshape(y.shape[0], -1).argmax(dim=-1))
        if self.standardize:  # z-scoring keeps each row's order: the same top-1 class
            s_logits, t_logits = standardize_logits(s_logits), standardize_logits(t_logits)
        dkd = dkd_loss(s_logits, t_logits, y, self.alpha, self.beta, self.temperature)
        # The authors' trainer counts epochs from 1: the first epoch already has weight 1/20.
        return dkd_warmup(epoch + 1, self.warmup_epochs) * dkd, {"dkd_loss": dkd}
