"""Knowledge-distillation losses: pure functions of tensors (no Lightning, no config).

Convention (Hinton et al. 2015; RepDistiller's T=4, alpha=0.9 recipe): ``alpha`` weights the
*distillation* term and ``1 - alpha`` the hard-label cross-entropy::

    loss = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)

torchdistill's configs use the opposite weighting; translate ``alpha -> 1 - alpha`` when porting.

    >>> import torch
    >>> from kdlightning.losses import distillation_loss
    >>> s, t, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
    >>> distillation_loss(s, t, y, temperature=4.0, alpha=0.9).shape
    torch.Size([])
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor

__all__ = ["DistillationTerms", "distillation_loss", "distillation_terms", "kd_loss"]


class DistillationTerms(NamedTuple):
    """The combined loss and the two terms it is made of (each a scalar tensor)."""

    loss: Tensor
    kd: Tensor
    ce: Tensor


#: Below this temperature T^2 and the softened probabilities underflow: the KD term becomes 0.
MIN_TEMPERATURE = 0.05


def check_temperature(temperature: float) -> float:
    """Return ``temperature`` as a float, or raise ``ValueError`` unless it is finite and at
    least :data:`MIN_TEMPERATURE`."""
    try:
        t = float(temperature)
    except (TypeError, ValueError):
        t = math.nan
    if not math.isfinite(t) or t < MIN_TEMPERATURE:
        raise ValueError(
            f"temperature must be a finite number >= {MIN_TEMPERATURE} (below it the "
            f"distillation term underflows to 0), got {temperature!r}; typical values are 1-8 "
            "(set kd.temperature=4)."
        )
    return t


def check_alpha(alpha: float) -> float:
    """Return ``alpha`` as a float, or raise ``ValueError`` if it lies outside [0, 1]."""
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        a = math.nan
    if not 0.0 <= a <= 1.0:  # also rejects NaN
        raise ValueError(
            f"alpha must lie in [0, 1] (the weight of the distillation term), got {alpha!r}; "
            "use alpha=0.9 for the usual recipe, alpha=0 for plain cross-entropy."
        )
    return a


def _check_logits(student_logits: Tensor, teacher_logits: Tensor) -> None:
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student and teacher logits must have the same shape, got student "
            f"{tuple(student_logits.shape)} and teacher {tuple(teacher_logits.shape)}; "
            "check that both models were built with the data set's number of classes."
        )
    if student_logits.ndim < 2:
        raise ValueError(
            f"logits must be (batch, classes), got shape {tuple(student_logits.shape)}"
        )


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """``T^2 * KL(softmax(teacher/T) || softmax(student/T))``: sum over classes, mean over samples.

    Computed from log-softmax in float32 whatever the input dtype: under bf16/fp16 autocast the
    softened distributions underflow and the KL of two nearly equal low-precision vectors is noise.
    The ``T^2`` factor keeps the gradient magnitude comparable to cross-entropy's as T grows
    (the gradient w.r.t. the student logits is ``T * (p_s - p_t) / N``).
    Leading dimensions beyond the batch (e.g. tokens) are flattened into the batch.
    """
    t = check_temperature(temperature)
    _check_logits(student_logits, teacher_logits)
    num_classes = student_logits.shape[-1]
    s = student_logits.reshape(-1, num_classes).float() / t
    te = teacher_logits.reshape(-1, num_classes).float() / t
    log_p_s = F.log_softmax(s, dim=-1)
    log_p_t = F.log_softmax(te, dim=-1)
    # kl_div(input=log q, target=log p, log_target=True) = sum p * (log p - log q); "batchmean"
    # divides the sum by the batch size, which is the mathematically correct KL average.
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return kl * (t * t)


def distillation_terms(
    student_logits: Tensor,
    teacher_logits: Tensor,
    targets: Tensor,
    temperature: float,
    alpha: float,
) -> DistillationTerms:
    """The combined loss with its KD and cross-entropy terms, for logging each of them."""
    a = check_alpha(alpha)
    kd = kd_loss(student_logits, teacher_logits, temperature)
    num_classes = student_logits.shape[-1]
    targets = targets.reshape(-1)
    # Targets < 0 have no label (a transfer set): the KD term covers them, cross-entropy does
    # not. Sum over the labeled ones / their count (at least 1): 0, not NaN, when none is.
    ce_sum = F.cross_entropy(
        student_logits.reshape(-1, num_classes).float(), targets, ignore_index=-1, reduction="sum"
    )
    ce = ce_sum / (targets >= 0).sum().clamp(min=1)
    return DistillationTerms(loss=a * kd + (1.0 - a) * ce, kd=kd, ce=ce)


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    targets: Tensor,
    temperature: float,
    alpha: float,
) -> Tensor:
    """``alpha * kd_loss + (1 - alpha) * cross_entropy(student_logits, targets)``; a scalar tensor.

    ``alpha`` weights the distillation term (Hinton et al.; RepDistiller uses T=4, alpha=0.9).
    """
    return distillation_terms(student_logits, teacher_logits, targets, temperature, alpha).loss
