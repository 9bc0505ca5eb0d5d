"""FitNets hints (Romero, Ballas, Kahou, Chassang, Gatta & Bengio 2015, arXiv 1412.6550)::

    loss = alpha * KD + (1 - alpha) * CE(s, y) + beta * sum_pairs mean((connector(s_l) - t_l)^2)

A student layer, mapped by a learnable connector (:func:`kdlightning.distill.connectors.
make_connector`: 1x1 conv + BatchNorm, Linear, or none), regresses a teacher layer, in one stage
with the task loss as RepDistiller does. ``conf/kd/fitnet.yaml``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from kdlightning.distill.connectors import make_connector
from kdlightning.distill.functional import hint_loss
from kdlightning.distill.methods.base import FeatureMethod, check_weight

__all__ = ["FitNet"]


class FitNet(FeatureMethod):
    """FitNets hints: ``beta * mean((connector(s) - t)^2)`` summed over the layer pairs."""

    name = "fitnet"

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
        pairs = zip(self.student_shapes, self.teacher_shapes, self.student_layers,
                    self.teacher_layers, strict=True)  # fmt: skip
        # Trained with the student, saved in its checkpoints (``method.connectors.*``), never
        # in student.pt: the deployed student does not need them.
        self.connectors = nn.ModuleList(make_connector(*pair) for pair in pairs)

    def feature_terms(
        self, s_feats: Sequence[Tensor], t_feats: Sequence[Tensor], index: Tensor | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        pairs = zip(self.connectors, s_feats, t_feats, strict=True)
        hint = sum(hint_loss(conn(s), t) for conn, s, t in pairs)
        return self.beta * hint, {"hint_loss": hint}
