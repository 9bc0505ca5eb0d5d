"""Attention transfer (Zagoruyko & Komodakis 2017, arXiv 1612.03928)::

    loss = alpha * KD + (1 - alpha) * CE(s, y) + beta / 2 * sum_pairs AT(s_l, t_l)

AT compares the normalized spatial attention maps (channel mean of |f|^p) of paired layers; a
larger map is average-pooled to the smaller one's size (RepDistiller's AT). ``conf/kd/at.yaml``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from kdlightning.distill.connectors import pool_to
from kdlightning.distill.functional import attention_loss
from kdlightning.distill.methods.base import FeatureMethod, check_number, check_weight

__all__ = ["AttentionTransfer"]


def _match_spatial(s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Average-pool the larger feature map to the smaller one's size (RepDistiller's AT)."""
    s_sp, t_sp = s.shape[2:], t.shape[2:]
    if s_sp == t_sp:
        return s, t
    if all(a >= b for a, b in zip(s_sp, t_sp, strict=True)):
        return pool_to(t_sp)(s), t
    return s, pool_to(s_sp)(t)


class AttentionTransfer(FeatureMethod):
    """Attention transfer: ``beta / 2 * sum over layer pairs of attention_loss(s, t, p)``."""

    name = "at"

    def __init__(
        self,
        *,
        temperature: Any,
        alpha: Any,
        student_layers: Any,
        teacher_layers: Any,
        beta: Any,
        p: Any,
        teacher: nn.Module,
        student: nn.Module,
        input_shape: Sequence[int],
    ) -> None:
        beta, p = check_weight("beta", beta), check_number("p", p, positive=True)
        super().__init__(
            temperature=temperature, alpha=alpha, student_layers=student_layers,
            teacher_layers=teacher_layers, teacher=teacher, student=student,
            input_shape=input_shape,
        )  # fmt: skip
        self.beta, self.p = beta, p
        for s, t, sp, tp in zip(self.student_shapes, self.teacher_shapes, self.student_layers,
                                self.teacher_layers, strict=True):  # fmt: skip
            if len(s) < 2 or len(t) < 2 or len(s) != len(t):
                raise ValueError(
                    f"attention transfer needs feature maps (C, H, W) of the same kind: "
                    f"kd.student_layers {sp!r} gives {s} per sample, kd.teacher_layers {tp!r} "
                    f"gives {t}; pick convolutional layers"
                )

    def feature_terms(
        self, s_feats: Sequence[Tensor], t_feats: Sequence[Tensor], index: Tensor | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        at = sum(attention_loss(*_match_spatial(s, t), p=self.p)
                 for s, t in zip(s_feats, t_feats, strict=True))  # fmt: skip
        # beta / 2 as in the paper (beta = 1000); the authors' code does the same
        return self.beta / 2 * at, {"at_loss": at}
