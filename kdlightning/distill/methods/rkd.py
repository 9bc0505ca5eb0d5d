"""Relational knowledge distillation (Park, Kim, Lu & Cho 2019, arXiv 1904.05068)::

    loss = alpha * KD + (1 - alpha) * CE + distance_weight * RKD-D + angle_weight * RKD-A

Distances between pairs and angles of triplets of a batch's embeddings (dimensions may differ,
no connector); under DDP the ranks' embeddings are gathered (``Method.gather``), so the loss is
the one-process loss of the global batch. ``conf/kd/rkd.yaml``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from kdlightning.distill.functional import rkd_angle_loss, rkd_distance_loss
from kdlightning.distill.methods.base import FeatureMethod, check_weight

__all__ = ["RKD"]


class RKD(FeatureMethod):
    """Relational KD on batch embeddings: distance and angle terms, summed over layer pairs."""

    name = "rkd"

    def __init__(
        self,
        *,
        temperature: Any,
        alpha: Any,
        student_layers: Any,
        teacher_layers: Any,
        distance_weight: Any,
        angle_weight: Any,
        teacher: nn.Module,
        student: nn.Module,
        input_shape: Sequence[int],
    ) -> None:
        distance_weight = check_weight("distance_weight", distance_weight)
        angle_weight = check_weight("angle_weight", angle_weight)
        super().__init__(
            temperature=temperature, alpha=alpha, student_layers=student_layers,
            teacher_layers=teacher_layers, teacher=teacher, student=student,
            input_shape=input_shape,
        )  # fmt: skip
        self.distance_weight, self.angle_weight = distance_weight, angle_weight

    def feature_terms(
        self, s_feats: Sequence[Tensor], t_feats: Sequence[Tensor], index: Tensor | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        pairs = [(self.gather(s), self.gather(t)) for s, t in zip(s_feats, t_feats, strict=True)]
        dist = sum(rkd_distance_loss(s, t) for s, t in pairs)
        angle = sum(rkd_angle_loss(s, t) for s, t in pairs)
        weighted = self.distance_weight * dist + self.angle_weight * angle
        return weighted, {"rkd_distance_loss": dist, "rkd_angle_loss": angle}
