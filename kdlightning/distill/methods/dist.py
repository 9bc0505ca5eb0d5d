"""DIST (Huang, You, Wang, Qian & Xu 2022, arXiv 2205.10536): Pearson-correlation matching of
the softened outputs between classes (inter) and within each class across the batch (intra)::

    loss = alpha * CE(s, y) + T^2 * (beta * inter + gamma * intra)

``alpha`` is the paper's: the weight of the cross-entropy. ``conf/kd/dist.yaml``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from kdlightning.distill.functional import dist_loss
from kdlightning.distill.methods.base import Method, check_temp, check_weight

__all__ = ["DIST"]


class DIST(Method):
    """DIST: inter- and intra-class correlation terms; the intra term relates the batch (under
    DDP the global one, through ``gather``)."""

    name = "dist"

    def __init__(self, *, temperature: Any, alpha: Any, beta: Any, gamma: Any) -> None:
        t, alpha = check_temp("temperature", temperature), check_weight("alpha", alpha)
        beta, gamma = check_weight("beta", beta), check_weight("gamma", gamma)
        super().__init__(t, ce_weight=alpha)
        self.beta, self.gamma = beta, gamma

    def distill(
        self, s_logits: Tensor, t_logits: Tensor, targets: Tensor, epoch: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        # beta and gamma inside: dist_loss weighs its two terms itself (one T^2 for both)
        s, t = self.gather(s_logits), self.gather(t_logits)  # intra: a relation over the batch
        dist = dist_loss(s, t, self.beta, self.gamma, self.temperature)
        return dist, {"dist_loss": dist}
