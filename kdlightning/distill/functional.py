"""Knowledge-distillation losses: pure functions of tensors (no Lightning, no config).

Convention (Hinton et al. 2015; RepDistiller's T=4, alpha=0.9 recipe): ``alpha`` weights the
*distillation* term and ``1 - alpha`` the hard-label cross-entropy::

    loss = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)

torchdistill's configs use the opposite weighting; translate ``alpha -> 1 - alpha`` when porting.

Beyond Hinton's KD, the module holds the functional form of other methods, in the style of
``torch.nn.functional`` (each computes in float32 whatever the input dtype, and raises
``ValueError`` naming the bad argument). Loss weights, warm-ups, connectors and interpolation
belong to the training module, not here.

* logit-based: :func:`dkd_loss` (+ :func:`dkd_warmup`), :func:`dist_loss`,
  :func:`standardize_logits` (a pre-process for :func:`kd_loss` / :func:`dkd_loss`);
* feature-based: :func:`hint_loss`, :func:`attention_loss`;
* relational (embeddings of a batch): :func:`rkd_distance_loss`, :func:`rkd_angle_loss`,
  :func:`pkt_loss`;
* contrastive (embeddings against a memory bank): :func:`crd_loss` (+ :func:`nce_loss`).

    >>> import torch
    >>> from kdlightning.distill.functional import distillation_loss
    >>> s, t, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
    >>> distillation_loss(s, t, y, temperature=4.0, alpha=0.9).shape
    torch.Size([])
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "ContrastTerms",
    "DistillationTerms",
    "attention_loss",
    "crd_loss",
    "dist_loss",
    "distillation_loss",
    "distillation_terms",
    "dkd_loss",
    "dkd_warmup",
    "hint_loss",
    "kd_loss",
    "kl_terms",
    "labeled_ce",
    "nce_loss",
    "pkt_loss",
    "rkd_angle_loss",
    "rkd_distance_loss",
    "standardize_logits",
]


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
    A ``-inf`` teacher logit (a masked class) has probability 0 and contributes 0, value and
    gradient (:func:`kl_terms`); a ``-inf`` student logit where the teacher has mass gives
    ``+inf``, the true KL.
    """
    t = check_temperature(temperature)
    _check_logits(student_logits, teacher_logits)
    num_classes = student_logits.shape[-1]
    s = student_logits.reshape(-1, num_classes).float() / t
    te = teacher_logits.reshape(-1, num_classes).float() / t
    log_p_s = F.log_softmax(s, dim=-1)
    log_p_t = F.log_softmax(te, dim=-1)
    # sum p_t * (log p_t - log p_s) over everything, divided by the batch size ("batchmean", the
    # mathematically correct KL average); a -inf teacher logit (a masked class) contributes 0.
    kl = kl_terms(log_p_t, log_p_s).sum() / s.shape[0]
    return kl * (t * t)


def kl_terms(log_p: Tensor, log_q: Tensor) -> Tensor:
    """Elementwise ``p * (log p - log q)`` from log-probabilities: sum it over the classes for
    ``KL(p || q)``.

    A class with ``p = 0`` (a ``-inf`` logit: a masked class or vocabulary entry, or a
    probability that underflows) contributes exactly 0 (``0 * log 0 = 0``), with a zero
    gradient, even where ``q`` is 0 too. ``F.kl_div(log_q, log_p, log_target=True)`` computes
    ``0 * (-inf - log q) = NaN`` there. A class with ``p > 0`` and ``q = 0`` gives ``+inf``, the
    true value. Everything else is ``F.kl_div``'s arithmetic; a ``where``, no host sync.
    """
    p = log_p.exp()
    return p * torch.where(p == 0, 0.0, log_p - log_q)


def labeled_ce(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy averaged over the labeled samples (targets >= 0; -1 marks a sample without a
    label, as in a transfer set): their summed loss over their count, 0, not NaN, if none is.
    Leading dimensions beyond the batch (e.g. tokens) are flattened into the batch."""
    targets = targets.reshape(-1)
    total = F.cross_entropy(
        logits.reshape(targets.shape[0], -1).float(), targets, ignore_index=-1, reduction="sum"
    )
    return total / (targets >= 0).sum().clamp(min=1)


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
    # Targets < 0 have no label (a transfer set): the KD term covers them, cross-entropy does not.
    ce = labeled_ce(student_logits, targets)
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


# --------------------------------------------------------------------------------------------
# Argument checks shared by the losses below
# --------------------------------------------------------------------------------------------


def _check_finite_nonnegative(name: str, value: float) -> float:
    """Return ``value`` as a float, or raise ``ValueError`` naming ``name`` unless it is a finite
    number >= 0 (loss weights, epsilons)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if not math.isfinite(v) or v < 0.0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


def _check_logit_pair(student_logits: Tensor, teacher_logits: Tensor, min_classes: int) -> None:
    """Same shape, ``(..., classes)`` with at least ``min_classes`` classes and one sample."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student_logits and teacher_logits must have the same shape, got student_logits "
            f"{tuple(student_logits.shape)} and teacher_logits {tuple(teacher_logits.shape)}"
        )
    if student_logits.ndim < 2:
        raise ValueError(
            f"student_logits must be (batch, classes), got shape {tuple(student_logits.shape)}"
        )
    if student_logits.shape[-1] < min_classes:
        raise ValueError(
            f"student_logits must have at least {min_classes} classes (last dimension), got "
            f"shape {tuple(student_logits.shape)}"
        )
    if student_logits.numel() == 0:
        raise ValueError(f"student_logits holds no sample, got shape {tuple(student_logits.shape)}")


def _check_min_samples(name: str, x: Tensor, min_samples: int, why: str) -> None:
    if x.shape[0] < min_samples:
        raise ValueError(
            f"{name} must hold at least {min_samples} samples ({why}), got shape "
            f"{tuple(x.shape)}; drop the last incomplete batch (drop_last=True) or enlarge it."
        )


def _flat_embeddings(student_emb: Tensor, teacher_emb: Tensor) -> tuple[Tensor, Tensor]:
    """``(batch, ...)`` -> float32 ``(batch, dim)``; the two dims may differ, batches may not."""
    if student_emb.ndim < 1 or teacher_emb.ndim < 1:
        raise ValueError(
            f"student_emb and teacher_emb must be (batch, ...), got student_emb "
            f"{tuple(student_emb.shape)} and teacher_emb {tuple(teacher_emb.shape)}"
        )
    if student_emb.shape[0] != teacher_emb.shape[0]:
        raise ValueError(
            f"student_emb and teacher_emb must have the same batch size (dimension 0), got "
            f"student_emb {tuple(student_emb.shape)} and teacher_emb {tuple(teacher_emb.shape)}"
        )
    for name, x in (("student_emb", student_emb), ("teacher_emb", teacher_emb)):
        if x.numel() == 0 and x.shape[0] > 0:  # e.g. (batch, 0)
            raise ValueError(f"{name} has an empty embedding, got shape {tuple(x.shape)}")
    n = student_emb.shape[0]
    return student_emb.reshape(n, -1).float(), teacher_emb.reshape(n, -1).float()


# --------------------------------------------------------------------------------------------
# Logit-based methods
# --------------------------------------------------------------------------------------------


def dkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    targets: Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
) -> Tensor:
    """Decoupled KD (Zhao et al., "Decoupled Knowledge Distillation", CVPR 2022).

    ``T^2 * (alpha * TCKD + beta * NCKD)``, each KL summed over its classes and averaged over the
    samples (the same ``batchmean`` as :func:`kd_loss`), with ``p = softmax(logits / T)``:

    * TCKD = ``KL(b_t || b_s)`` between the binary distributions ``b = (p_y, 1 - p_y)``: the
      probability of the target class ``y`` against the mass of all the others;
    * NCKD = ``KL(p̂_t || p̂_s)`` between the softened distributions over the ``C - 1``
      non-target classes (the target removed, the rest renormalized), *not* weighted by the
      teacher's ``1 - p_y`` (the paper's point: that factor suppresses NCKD exactly where the
      teacher is confident).

    Defaults are the paper's CIFAR-100 setting: ``alpha = 1``, ``beta = 8``, ``T = 4`` (ImageNet:
    ``alpha = 0.5``, ``beta = 0.5``, ``T = 1``; ``beta`` is tuned per teacher-student pair).
    The paper also ramps the DKD term linearly over the first 20 epochs; that schedule belongs to
    the training module: multiply this loss by :func:`dkd_warmup`.

    Unlike the authors' code (``log`` of the masked probabilities, and ``-1000`` on the target
    logit to drop it), everything is computed from log-softmax in float32: the non-target mass is
    a log-sum-exp and the non-target distribution is taken over the ``C - 1`` remaining logits,
    so a confident teacher or student (``p_y == 1`` in float32) gives a finite loss and gradient.

    Args:
        student_logits: ``(batch, classes)``; leading dimensions beyond the batch are flattened.
        teacher_logits: same shape (detach it: this function does not).
        targets: integer class indices in ``[0, classes)``, one per sample (``batch`` or the
            leading shape of the logits); DKD needs a label for every sample.
        alpha: weight of TCKD (>= 0).
        beta: weight of NCKD (>= 0).
        temperature: softmax temperature, as in :func:`kd_loss`.
    """
    t = check_temperature(temperature)
    a = _check_finite_nonnegative("alpha", alpha)
    b = _check_finite_nonnegative("beta", beta)
    # C >= 2: with one class there is no non-target distribution.
    _check_logit_pair(student_logits, teacher_logits, min_classes=2)
    num_classes = student_logits.shape[-1]
    s = student_logits.reshape(-1, num_classes).float() / t
    te = teacher_logits.reshape(-1, num_classes).float() / t
    n = s.shape[0]
    if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
        raise ValueError(f"targets must hold integer class indices, got dtype {targets.dtype}")
    if targets.numel() != n:
        raise ValueError(
            f"targets must hold one class index per sample ({n}), got shape "
            f"{tuple(targets.shape)} for logits of shape {tuple(student_logits.shape)}"
        )
    y = targets.reshape(-1).to(device=s.device, dtype=torch.long)
    # An out-of-range index would be a silently wrong mask (or a device-side assert far from its
    # cause). On the CPU the check is free; on an accelerator a host-side check would sync every
    # training step, so there the device asserts by itself, without waiting for the host.
    bad = (y < 0) | (y >= num_classes)
    if y.device.type != "cpu":
        torch._assert_async(~bad.any(), "DKD targets must lie in [0, num_classes)")
    elif bool(bad.any()):
        raise ValueError(
            f"targets must lie in [0, {num_classes}) (DKD needs a label for every sample), got "
            f"values in [{int(y.min())}, {int(y.max())}]"
        )
    is_target = torch.zeros_like(s, dtype=torch.bool).scatter_(1, y[:, None], True)

    def binary_log_probs(z: Tensor) -> Tensor:
        log_p = F.log_softmax(z, dim=1)
        log_target = log_p.gather(1, y[:, None])
        # log(1 - p_y) as a log-sum-exp over the other classes: no cancellation when p_y -> 1.
        log_rest = torch.logsumexp(log_p.masked_fill(is_target, -math.inf), dim=1, keepdim=True)
        return torch.cat([log_target, log_rest], dim=1)

    tckd = kl_terms(binary_log_probs(te), binary_log_probs(s)).sum() / n
    # Removing the target column (rather than masking it) keeps every log-probability finite.
    # The other columns, in order, by a stable sort of the mask: a gather with a fixed shape
    # (boolean indexing would need the mask's count on the host, a sync every step).
    rest = torch.argsort(is_target.to(torch.int8), dim=1, stable=True)[:, : num_classes - 1]
    s_rest, t_rest = s.gather(1, rest), te.gather(1, rest)
    nckd = kl_terms(F.log_softmax(t_rest, dim=1), F.log_softmax(s_rest, dim=1)).sum() / n
    return (a * tckd + b * nckd) * (t * t)


def dkd_warmup(epoch: float, warmup_epochs: float = 20) -> float:
    """The DKD loss weight's linear warm-up: ``min(epoch / warmup_epochs, 1)``.

    Zhao et al. (CVPR 2022) ramp the DKD term over the first 20 epochs (the default here). The
    authors' trainer counts epochs from 1, so the first epoch already has weight 1/20; pass
    ``trainer.current_epoch + 1`` from Lightning (which counts from 0) to reproduce it.
    ``warmup_epochs = 0`` means no warm-up. ``epoch`` may be fractional (a per-step ramp).
    """
    e = _check_finite_nonnegative("epoch", epoch)
    w = _check_finite_nonnegative("warmup_epochs", warmup_epochs)
    if w == 0.0:
        return 1.0
    return min(e / w, 1.0)


def _pearson_rows(a: Tensor, b: Tensor, eps: float) -> Tensor:
    """Pearson correlation of each row of ``a`` with the same row of ``b``."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    # eps in the denominator, as in the authors' code: a constant row correlates 0, not NaN.
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    beta: float = 1.0,
    gamma: float = 1.0,
    temperature: float = 1.0,
    *,
    eps: float = 1e-8,
) -> Tensor:
    """DIST (Huang et al., "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022).

    With ``y = softmax(logits / T)`` (``batch x classes``) and ``rho`` the Pearson correlation::

        inter = 1 - mean over samples n of rho(y_s[n, :], y_t[n, :])
        intra = 1 - mean over classes c of rho(y_s[:, c], y_t[:, c])
        loss  = T^2 * (beta * inter + gamma * intra)

    Matching correlations instead of KL only asks the student to preserve the teacher's
    *relations* (ranking and linear trends), which the paper argues suits stronger teachers.
    Defaults ``beta = gamma = T = 1`` are the authors' DIST loss defaults (their ImageNet
    setting). ``rho`` divides by ``|a| * |b| + eps`` with the authors' ``eps = 1e-8``, so a
    constant vector (e.g. a class no sample gives any mass in float32) correlates 0 instead of
    producing NaN.

    The intra-class term correlates each class across the batch, so it needs at least 2 samples:
    a batch of one raises ``ValueError`` unless ``gamma == 0`` (the inter-class term alone is
    defined for one sample). Leading dimensions beyond the batch are flattened into the batch.
    """
    t = check_temperature(temperature)
    b = _check_finite_nonnegative("beta", beta)
    g = _check_finite_nonnegative("gamma", gamma)
    e = _check_finite_nonnegative("eps", eps)
    # A Pearson correlation over one class is undefined (zero variance).
    _check_logit_pair(student_logits, teacher_logits, min_classes=2)
    num_classes = student_logits.shape[-1]
    y_s = F.softmax(student_logits.reshape(-1, num_classes).float() / t, dim=1)
    y_t = F.softmax(teacher_logits.reshape(-1, num_classes).float() / t, dim=1)
    inter = 1.0 - _pearson_rows(y_s, y_t, e).mean()
    if g == 0.0:
        return (t * t) * b * inter
    _check_min_samples(
        "student_logits", y_s, 2, "DIST's intra-class term correlates each class across the batch"
    )
    intra = 1.0 - _pearson_rows(y_s.T, y_t.T, e).mean()
    return (t * t) * (b * inter + g * intra)


def standardize_logits(logits: Tensor, eps: float = 1e-7, *, correction: int = 1) -> Tensor:
    """Z-score each sample's logits over the classes (Sun et al., "Logit Standardization in
    Knowledge Distillation", CVPR 2024): ``(z - mean(z)) / (std(z) + eps)``.

    A pre-process for :func:`kd_loss` and :func:`dkd_loss`, applied to *both* the student's and
    the teacher's logits, so that the student matches the teacher's logit relations rather than
    their range. The paper then softens with a *base temperature* (the standardized logits have
    unit std, so the effective temperature becomes ``T * std(z)`` per sample); the authors'
    CIFAR-100 runs use base temperature 2 (sometimes 3) with KD weight 9::

        kd_loss(standardize_logits(s), standardize_logits(t), temperature=2.0)

    ``std`` is the sample standard deviation over the ``K`` classes, with Bessel's correction
    (``correction = 1``: the squared deviations divided by ``K - 1``), as in the authors' code
    (``logit.std(dim=-1)``, torch's default) and torchdistill's ``LogitStdKDLoss``.
    ``correction = 0`` gives the population std (divided by ``K``; this function's default
    before issue 19): its z-scores are those of ``correction = 1`` times ``sqrt(K / (K - 1))``,
    i.e. a lower effective temperature, and the KD loss differs accordingly: about 11% with 10
    classes, about 2x with 2 classes (``tests/unit/distill/test_losses_methods.py``); from
    100 classes on, about 1%. ``eps = 1e-7`` as in their code keeps constant logits finite
    (they map to 0).

    Returns float32 whatever the input dtype (the losses compute in float32 anyway), shaped
    like ``logits``; the last dimension is the classes, and needs at least 2 of them.
    """
    e = _check_finite_nonnegative("eps", eps)
    if correction not in (0, 1):
        raise ValueError(f"correction must be 0 or 1, got {correction!r}")
    if logits.ndim < 1 or logits.shape[-1] < 2:
        raise ValueError(
            f"logits must be (..., classes) with at least 2 classes, got shape "
            f"{tuple(logits.shape)}"
        )
    z = logits.float()
    centered = z - z.mean(dim=-1, keepdim=True)
    var = centered.square().sum(dim=-1, keepdim=True) / (z.shape[-1] - correction)
    # sqrt has an infinite derivative at 0: clamping (no effect on any non-constant row) gives
    # constant rows a zero gradient instead of NaN.
    std = var.clamp_min(torch.finfo(torch.float32).tiny).sqrt()
    return centered / (std + e)


# --------------------------------------------------------------------------------------------
# Feature-based methods (no learnable parts: connectors and interpolation are the caller's)
# --------------------------------------------------------------------------------------------


def hint_loss(student_features: Tensor, teacher_features: Tensor) -> Tensor:
    """FitNets' hint loss (Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015).

    The mean squared error between the student's features, already mapped to the teacher's
    shape by a regressor (the connector belongs to the training module), and the teacher's
    hint: ``mean((s - t)^2)`` over all elements. The paper writes ``1/2 * ||t - r(s)||^2``
    (a sum) and trains the hint in a separate stage; the mean, as in RepDistiller's ``HintLoss``
    (weight 100 there), keeps the scale independent of the feature size.
    """
    if student_features.shape != teacher_features.shape:
        raise ValueError(
            f"student_features and teacher_features must have the same shape (project the "
            f"student's features with a connector first), got student_features "
            f"{tuple(student_features.shape)} and teacher_features "
            f"{tuple(teacher_features.shape)}"
        )
    if student_features.numel() == 0:
        raise ValueError(f"student_features is empty, got shape {tuple(student_features.shape)}")
    return F.mse_loss(student_features.float(), teacher_features.float())


def _attention_map(features: Tensor, p: float) -> Tensor:
    """``F^p_mean``: channel mean of ``|f|^p``, flattened and L2-normalized per sample."""
    q = features.float().abs().pow(p).mean(dim=1).reshape(features.shape[0], -1)
    return F.normalize(q, p=2.0, dim=1)


def attention_loss(student_features: Tensor, teacher_features: Tensor, p: float = 2) -> Tensor:
    """Activation-based attention transfer (Zagoruyko & Komodakis, "Paying More Attention to
    Attention", ICLR 2017).

    The attention map of a ``(batch, channels, *spatial)`` feature tensor is
    ``Q = mean over channels of |f|^p`` (the paper's ``F^p_sum`` divided by the channel count;
    the division vanishes in the normalization and lets student and teacher differ in
    channels), flattened to ``HW`` values and divided by its L2 norm per sample. The paper uses
    ``p = 2`` (the default here) and the loss ``beta/2 * sum_j || Q_s/||Q_s|| - Q_t/||Q_t|| ||_2``
    with ``beta = 1000`` "divided by the number of elements in the attention map and the batch
    size". What is implemented is what the authors' code computes for one pair of maps (and
    what that ``beta`` is calibrated for): the *squared* difference, averaged::

        loss = 1 / (batch * HW) * sum_n || q_s[n] - q_t[n] ||_2^2

    Weighting (``beta / 2``) and summing over several layers is the training module's job.
    The spatial sizes must match; interpolating or pooling one map to the other's size is the
    caller's job.
    """
    try:
        p_ = float(p)
    except (TypeError, ValueError):
        p_ = math.nan
    if not math.isfinite(p_) or p_ <= 0.0:
        raise ValueError(f"p must be a finite number > 0 (the paper uses p=2), got {p!r}")
    for name, x in (("student_features", student_features), ("teacher_features", teacher_features)):
        if x.ndim < 3:
            raise ValueError(
                f"{name} must be (batch, channels, *spatial), e.g. (N, C, H, W), got shape "
                f"{tuple(x.shape)}"
            )
    if student_features.shape[0] != teacher_features.shape[0]:
        raise ValueError(
            f"student_features and teacher_features must have the same batch size, got "
            f"student_features {tuple(student_features.shape)} and teacher_features "
            f"{tuple(teacher_features.shape)}"
        )
    if student_features.shape[2:] != teacher_features.shape[2:]:
        raise ValueError(
            f"student_features and teacher_features must have the same spatial size "
            f"(interpolate one to the other first), got student_features "
            f"{tuple(student_features.shape)} and teacher_features "
            f"{tuple(teacher_features.shape)}"
        )
    if student_features.numel() == 0 or teacher_features.numel() == 0:
        raise ValueError(
            f"student_features and teacher_features must not be empty, got "
            f"{tuple(student_features.shape)} and {tuple(teacher_features.shape)}"
        )
    q_s = _attention_map(student_features, p_)
    q_t = _attention_map(teacher_features, p_)
    return (q_s - q_t).square().mean()


# --------------------------------------------------------------------------------------------
# Relational methods: the structure of a batch of embeddings, whatever their dimensions
# --------------------------------------------------------------------------------------------


def rkd_distance_loss(student_emb: Tensor, teacher_emb: Tensor) -> Tensor:
    """RKD distance loss (Park et al., "Relational Knowledge Distillation", CVPR 2019).

    For each batch, ``psi(i, j) = ||e_i - e_j||_2 / mu`` with ``mu`` the mean distance over the
    pairs ``i != j`` (the paper's normalization, which makes the loss invariant to the
    embeddings' scale), then the Huber loss (smooth L1, ``delta = 1``) between the student's
    and the teacher's ``psi``, averaged over the ``N (N - 1) / 2`` pairs ``i < j`` (equivalently
    over the ordered pairs ``i != j``). The authors' code also averages over the zero diagonal,
    which scales the loss by ``(N - 1) / N``. The paper weights this term ``lambda_D = 1`` with
    ``lambda_A = 2`` for the angle term (RepDistiller's CIFAR-100 runs: 25 and 50); the weights
    are the training module's.

    Embeddings are ``(batch, ...)``, flattened per sample; student and teacher dimensions may
    differ (the point of relational KD). A distance needs a pair: fewer than 2 samples raise.
    """
    s, t = _flat_embeddings(student_emb, teacher_emb)
    _check_min_samples("student_emb", s, 2, "RKD's distances need pairs of samples")
    # pdist: the condensed i < j distances, computed from differences (no Gram-matrix
    # cancellation) and with a zero, not NaN, gradient for coincident points.
    d_s = torch.pdist(s)
    d_t = torch.pdist(t)
    # The clamp only matters when every embedding coincides (all distances 0 -> psi = 0).
    d_s = d_s / d_s.mean().clamp_min(1e-12)
    d_t = d_t / d_t.mean().clamp_min(1e-12)
    return F.smooth_l1_loss(d_s, d_t, beta=1.0)


def _triplet_cosines(e: Tensor) -> Tensor:
    """``cos[j, i, k] = <(e_i - e_j) / |e_i - e_j|, (e_k - e_j) / |e_k - e_j|>``: the angle at
    vertex ``j`` of the triangle ``(i, j, k)``."""
    unit = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2.0, dim=2)  # unit[j, i] ~ e_i - e_j
    return torch.bmm(unit, unit.transpose(1, 2))


def rkd_angle_loss(student_emb: Tensor, teacher_emb: Tensor) -> Tensor:
    """RKD angle loss (Park et al., "Relational Knowledge Distillation", CVPR 2019).

    ``psi(i, j, k) = cos angle(e_i, e_j, e_k) = <u_ij, u_kj>`` with
    ``u_ij = (e_i - e_j) / ||e_i - e_j||_2``, then the Huber loss (smooth L1, ``delta = 1``)
    between the student's and teacher's ``psi``, averaged over the ``N (N - 1) (N - 2)`` ordered
    triplets of *distinct* samples (the paper's triplets). The authors' code averages over all
    ``N^3`` index triplets, degenerate ones included (they contribute 0), which scales the loss
    by ``(N - 1)(N - 2) / N^2``. The paper's weight is ``lambda_A = 2`` (RepDistiller: 50).

    Embeddings are ``(batch, ...)``, flattened per sample; dimensions may differ between student
    and teacher. An angle needs three points: fewer than 3 samples raise ``ValueError``.
    Memory is ``O(N^2 * dim)`` for the difference vectors, as in the authors' code.
    """
    s, t = _flat_embeddings(student_emb, teacher_emb)
    _check_min_samples("student_emb", s, 3, "RKD's angles need triplets of distinct samples")
    n = s.shape[0]
    idx = torch.arange(n, device=s.device)
    # distinct[j, i, k]: i != j, k != j, i != k
    ne = idx[:, None] != idx[None, :]
    distinct = ne[:, :, None] & ne[:, None, :] & ne[None, :, :]
    return F.smooth_l1_loss(_triplet_cosines(s)[distinct], _triplet_cosines(t)[distinct], beta=1.0)


def _cosine_kernel_probs(e: Tensor, eps: float) -> Tensor:
    unit = e / (e.norm(dim=1, keepdim=True) + eps)
    # (cos + 1) / 2 maps the cosine to [0, 1]; the clamp removes the rounding below -1 that
    # would make a "probability" negative for antipodal embeddings.
    kernel = ((unit @ unit.T + 1.0) / 2.0).clamp_min(0.0)
    return kernel / kernel.sum(dim=1, keepdim=True)


def pkt_loss(student_emb: Tensor, teacher_emb: Tensor, eps: float = 1e-7) -> Tensor:
    """Probabilistic knowledge transfer (Passalis & Tefas, "Learning Deep Representations with
    Probabilistic Knowledge Transfer", ECCV 2018).

    Each batch's embeddings (``(batch, ...)``, flattened; dimensions may differ between student
    and teacher) define a cosine-similarity kernel ``K_ij = (cos(e_i, e_j) + 1) / 2`` with
    ``cos`` computed on ``e / (||e|| + eps)``, normalized per row into conditional probabilities
    ``P_ij = K_ij / sum_k K_ik``. As in the authors' reference ``cosine_similarity_loss``
    (``eps = 1e-7``), the loss is ``KL(P_teacher || P_student)`` averaged over all ``N^2``
    entries, diagonal included::

        loss = 1 / N^2 * sum_ij P_t[i, j] * log((P_t[i, j] + eps) / (P_s[i, j] + eps))

    (The paper's equations exclude ``j = i`` and sum instead of averaging; the difference is a
    constant factor up to the diagonal terms.) A batch of one gives 0: there is no relation to
    transfer.
    """
    e = _check_finite_nonnegative("eps", eps)
    s, t = _flat_embeddings(student_emb, teacher_emb)
    _check_min_samples("student_emb", s, 1, "PKT needs a batch")
    p_s = _cosine_kernel_probs(s, e)
    p_t = _cosine_kernel_probs(t, e)
    return (p_t * torch.log((p_t + e) / (p_s + e))).mean()


# --------------------------------------------------------------------------------------------
# Contrastive: embeddings against rows of a memory bank
# --------------------------------------------------------------------------------------------


class ContrastTerms(NamedTuple):
    """:func:`crd_loss`'s value and the two normalizing constants ``Z`` it used."""

    loss: Tensor
    normalizers: Tensor


def nce_loss(probs: Tensor, num_data: int, eps: float = 1e-7) -> Tensor:
    """The NCE loss of CRD (Tian et al. 2020, eq. 18; RepDistiller's ``ContrastLoss``).

    ``probs`` is ``(batch, 1 + K)``: column 0 the unnormalized model probability ``P`` of each
    sample's positive pair, the others those of its ``K`` negatives. With the noise distribution
    uniform over the ``num_data`` samples (``P_n = 1 / N``), the positive pair should be told
    from noise (``D = P / (P + K P_n)``), the negatives should not::

        loss = -1/B * sum_i [ log D(pos_i) + sum_k log(1 - D(neg_ik)) ]
             = -1/B * sum_i [ log(P / (P + K/N + eps)) + sum_k log((K/N) / (P_k + K/N + eps)) ]
    """
    if probs.ndim != 2 or probs.shape[1] < 2 or probs.shape[0] < 1:
        raise ValueError(
            f"probs must be (batch, 1 + K) with K >= 1 negatives, got shape {tuple(probs.shape)}"
        )
    if int(num_data) < 2:
        raise ValueError(f"num_data must be >= 2 (the data set's size), got {num_data!r}")
    e = _check_finite_nonnegative("eps", eps)
    p = probs.float()
    noise = (p.shape[1] - 1) / float(num_data)  # K * P_n
    pos, neg = p[:, 0], p[:, 1:]
    log_d1 = torch.log(pos / (pos + noise + e))
    log_d0 = torch.log(noise / (neg + noise + e))
    return -(log_d1.sum() + log_d0.sum()) / p.shape[0]


def crd_loss(
    student_emb: Tensor,
    teacher_emb: Tensor,
    student_bank: Tensor,
    teacher_bank: Tensor,
    contrast_index: Tensor,
    temperature: float,
    normalizers: Tensor | None = None,
    eps: float = 1e-7,
) -> ContrastTerms:
    """Contrastive representation distillation (Tian, Krishnan & Isola, "Contrastive
    Representation Distillation", ICLR 2020, arXiv 1910.10699), both of its symmetric terms.

    ``student_emb`` / ``teacher_emb`` are ``(batch, d)`` embeddings (the method projects and
    L2-normalizes them); ``student_bank`` / ``teacher_bank`` are ``(N, d)`` memory banks, a row
    per sample of the data set; ``contrast_index`` is ``(batch, 1 + K)``: each sample's own row
    first (the positive), then ``K`` other samples' (the negatives). The student's embedding is
    contrasted with those rows of the teacher's bank and the teacher's with the student's bank,
    each scored as ``P = exp(<row, emb> / T) / Z`` and put through :func:`nce_loss`::

        loss = nce(exp(<teacher_bank[rows], s> / T) / Z_s)
             + nce(exp(<student_bank[rows], t> / T) / Z_t)

    The scores come from one ``(batch, N)`` product with the whole bank, then the rows' columns:
    no ``(batch, 1 + K, d)`` copy of the bank (RepDistiller's gather, 0.5 GB a step on
    CIFAR-100), and cheaper when ``K`` is a fair share of ``N``. ``Z`` approximates the
    partition function over the data set: ``N`` times the mean of the batch's ``exp`` scores
    (RepDistiller fixes it on the first batch). ``normalizers`` is ``(Z_s, Z_t)``; an entry
    ``<= 0`` (or ``None``) is estimated from this batch. The normalizers used come back with the
    loss (detached), without a host sync either way. Banks receive no gradient.
    """
    t = _check_finite_nonnegative("temperature", temperature)
    if t <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    sides = (("student", student_emb, teacher_bank), ("teacher", teacher_emb, student_bank))
    for name, emb, bank in sides:
        if emb.ndim != 2 or bank.ndim != 2 or bank.shape[1] != emb.shape[1]:
            raise ValueError(
                f"{name}_emb must be (batch, d) and the bank it is contrasted with (N, d), got "
                f"{name}_emb {tuple(emb.shape)} and bank {tuple(bank.shape)}"
            )
    if contrast_index.ndim != 2 or contrast_index.shape[0] != student_emb.shape[0]:
        raise ValueError(
            f"contrast_index must be (batch, 1 + K), one row per sample, got shape "
            f"{tuple(contrast_index.shape)} for {student_emb.shape[0]} samples"
        )
    n = student_bank.shape[0]
    if teacher_bank.shape[0] != n or teacher_emb.shape[0] != student_emb.shape[0]:
        raise ValueError(
            f"the two sides must match: student_emb {tuple(student_emb.shape)}, teacher_emb "
            f"{tuple(teacher_emb.shape)}, student_bank {tuple(student_bank.shape)}, teacher_bank "
            f"{tuple(teacher_bank.shape)}"
        )
    scores = [
        torch.exp((emb.float() @ bank.detach().float().T).gather(1, contrast_index) / t)
        for _, emb, bank in sides
    ]
    estimate = torch.stack([x.mean() for x in scores]).detach() * float(n)
    z = estimate if normalizers is None else torch.where(normalizers > 0, normalizers, estimate)
    loss = nce_loss(scores[0] / z[0], n, eps) + nce_loss(scores[1] / z[1], n, eps)
    return ContrastTerms(loss, z.detach())
