"""Probabilistic knowledge transfer (Passalis & Tefas 2018, arXiv 1803.10837)::

    loss = alpha * KD + (1 - alpha) * CE(s, y) + beta * KL(P_teacher || P_student)

P: the conditional probabilities a cosine kernel defines over a batch's embeddings (dimensions
may differ); under DDP the global batch's, through ``Method.gather``. ``conf/kd/pkt.yaml``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from kdlightning.distill.functional import pkt_loss
from kdlightning.distill.methods.base import FeatureMethod, check_weight

__all__ = ["PKT"]


class PKT(FeatureMethod):
    """Probabilistic knowledge transfer on batch embeddings, summed over layer pairs."""

    name = "pkt"

    def __init__(
        self,
        *,
        temperature: Any,
        alpha: Any,
        student_layers: Any,
        teacher_layers: Any,
        beta: Any,
        teacher: nn.Module,
        student: nn.Module,
        input_shape: Sequence[int],
    ) -> None:
        beta = check_weight("beta", beta)
        super().__init__(
            temperature=temperature, alpha=alpha, student_layers=student_layers,
            teacher_layers=teacher_layers, teacher=teacher, student=student,
            input_shape=input_shape,
        )  # fmt: skip
        self.beta = beta

    def feature_terms(
        self, s_feats: Sequence[Tensor], t_feats: Sequence[Tensor], index: Tensor | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        pairs = zip(s_feats, t_feats, strict=True)
        pkt = sum(pkt_loss(self.gather(s), self.gather(t)) for s, t in pairs)
        return self.beta * pkt, {"pkt_loss": pkt}
