"""Vanilla knowledge distillation (Hinton, Vinyals & Dean 2015, arXiv 1503.02531)::

    loss = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)

``standardize=True`` z-scores both models' logits per sample first (logit standardization, Sun
et al. 2024, arXiv 2403.01427); T is then their base temperature. ``conf/kd/kd.yaml``.
"""

from __future__ import annotations

from typing import Any

from kdlightning.distill.methods.base import KDMix

__all__ = ["KD"]


class KD(KDMix):
    """Hinton's KD: ``alpha * T^2 KL + (1 - alpha) * CE``; unlabeled samples get the KD term only.

    ``temperature`` (>= 0.05), ``alpha`` (in [0, 1]: the weight of the KD term) and
    ``standardize`` (true or false) are checked here.
    """

    name = "kd"

    def __init__(self, *, temperature: Any, alpha: Any, standardize: Any) -> None:
        super().__init__(temperature, alpha, standardize)
