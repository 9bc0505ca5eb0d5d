"""KD with logit standardization (Sun, Ren, Li, Wang & Cao 2024, arXiv 2403.01427)::

    loss = ce_weight * CE(s, y) + alpha * T^2 * KL(softmax(z(t) / T) || softmax(z(s) / T))

``z`` z-scores each sample's logits over the classes; T is the base temperature and ``alpha``
a weight (9 in the paper's CIFAR-100 command), not a [0, 1] mix. For DKD on z-scored logits:
``DKD(..., standardize=True)``. ``conf/kd/ls_kd.yaml``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from kdlightning.distill.functional import kd_loss, standardize_logits
from kdlightning.distill.methods.base import Method, check_temp, check_weight

__all__ = ["LogitStandardKD"]


class LogitStandardKD(Method):
    """KD on z-scored logits; the cross-entropy on the raw ones."""

    name = "ls_kd"

    def __init__(self, *, temperature: Any, alpha: Any, ce_weight: Any) -> None:
        t, alpha = check_temp("temperature", temperature), check_weight("alpha", alpha)
        super().__init__(t, ce_weight=check_weight("ce_weight", ce_weight))
        self.kd_weight = alpha

    def distill(
        self, s_logits: Tensor, t_logits: Tensor, targets: Tensor, epoch: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        kd = kd_loss(standardize_logits(s_logits), standardize_logits(t_logits), self.temperature)
        return self.kd_weight * kd, {"kd_loss": kd}
