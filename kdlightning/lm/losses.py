"""Token-level distillation losses for causal language models: pure functions, masked, chunked.

Every function takes aligned ``(batch, seq, vocab)`` logits (position ``i`` predicts token
``i + 1``; the data module shifts) and a ``(batch, seq)`` mask that is true on the tokens to
score: padding after a document's end and the prompt of instruction data are false. Each returns
the **per-token mean** over masked tokens, so adding padding never changes the value::

    >>> import torch
    >>> from kdlightning.lm.losses import forward_kl, next_token_ce
    >>> s, t = torch.randn(2, 5, 256), torch.randn(2, 5, 256)
    >>> mask = torch.ones(2, 5, dtype=torch.bool)
    >>> forward_kl(s, t, mask, temperature=2.0, chunk_size=2).shape
    torch.Size([])

Divergences (each on ``logits / T``, times ``T^2`` as in Hinton et al. 2015, arXiv 1503.02531):

* :func:`forward_kl` ``KL(p_t || p_s)``: the token-level KD of torchtune's recipe and of
  ``kdlightning.distill.functional.kd_loss``, with a mask;
* :func:`reverse_kl` ``KL(p_s || p_t)``: mode-seeking, argued for by MiniLLM (Gu et al. 2023,
  arXiv 2306.08543);
* :func:`generalized_jsd` with ``beta`` (GKD, Agarwal et al. 2023, arXiv 2306.13649, TRL's
  convention): ``beta * KL(p_t || m) + (1 - beta) * KL(p_s || m)``,
  ``m = beta * p_t + (1 - beta) * p_s``; ``beta=0`` is forward KL and ``beta=1`` reverse KL.

Memory: ``chunk_size`` positions are scored at a time. Under autograd each chunk's gradient is
computed right away, in the forward, and written into one preallocated gradient of the logits
(the backward only scales it): the float32 log-probabilities of teacher and student exist for
one chunk at a time, instead of for the whole ``batch x seq x vocab``. We first checkpointed
each chunk (``torch.utils.checkpoint``, as torchtune's chunked losses do): every chunk then ran
its forward twice, and each chunk's slice backward allocated a gradient the size of the whole
logits. On 4 x 256 x 32000 logits, chunk 16 (docs/performance.md): checkpointed 1.76x the
unchunked time, 392 MiB peak growth; computed in the forward 0.40x, 353 MiB; unchunked 662 MiB.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlightning.distill.functional import check_temperature, kl_terms

__all__ = [
    "divergence",
    "forward_kl",
    "generalized_jsd",
    "masked_mean",
    "next_token_ce",
    "reverse_kl",
    "topk_forward_kl",
]


# per-token divergence of (student log-probs, teacher log-probs) -> (batch, chunk)
TokenFn = Callable[[Tensor, Tensor], Tensor]


def _check(student_logits: Tensor, other: Tensor, mask: Tensor) -> None:
    if student_logits.ndim != 3:
        raise ValueError(
            f"logits must be (batch, seq, vocab), got shape {tuple(student_logits.shape)}"
        )
    if other.shape[:2] != student_logits.shape[:2] or (
        other.ndim == 3 and other.shape != student_logits.shape
    ):
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits / targets "
            f"{tuple(other.shape)} do not match; teacher and student must share the vocabulary"
        )
    if mask.shape != student_logits.shape[:2]:
        raise ValueError(
            f"mask must be (batch, seq) = {tuple(student_logits.shape[:2])}, "
            f"got {tuple(mask.shape)}"
        )


def masked_mean(per_token: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``per_token`` over the true entries of ``mask`` (0 when none is true)."""
    m = mask.bool()
    return torch.where(m, per_token, 0.0).sum() / m.sum().clamp_min(1)


class _EagerChunks(torch.autograd.Function):
    """The masked sum of ``fn`` over sequence chunks, each chunk's gradient computed in the
    forward into one buffer per differentiable input; the backward scales the buffers."""

    @staticmethod
    def forward(ctx: Any, fn: Callable[..., Tensor], step: int, mask: Tensor,
                *tensors: Tensor) -> Tensor:  # fmt: skip
        wants = [x.requires_grad and x.is_floating_point() for x in tensors]
        grads = [torch.zeros_like(x) if w else None for x, w in zip(tensors, wants, strict=True)]
        total = torch.zeros((), device=mask.device, dtype=torch.float32)
        for start in range(0, mask.shape[1], step):
            parts = [x[:, start : start + step].detach().requires_grad_(w)
                     for x, w in zip(tensors, wants, strict=True)]  # fmt: skip
            m = mask[:, start : start + step].bool()
            with torch.enable_grad():
                value = torch.where(m, fn(*parts), 0.0).sum()
            inputs = [p for p, w in zip(parts, wants, strict=True) if w]
            for grad, part in zip((g for g in grads if g is not None),
                                  torch.autograd.grad(value, inputs), strict=True):  # fmt: skip
                grad[:, start : start + step] = part
            total = total + value.detach()
        ctx.save_for_backward(*(g for g in grads if g is not None))
        ctx.wants = wants
        return total

    @staticmethod
    def backward(ctx: Any, out: Tensor) -> tuple[Tensor | None, ...]:
        saved = iter(ctx.saved_tensors)
        grads = [next(saved) * out if w else None for w in ctx.wants]
        return (None, None, None, *grads)


def _chunked_mean(
    fn: Callable[..., Tensor], tensors: tuple[Tensor, ...], mask: Tensor, chunk_size: int | None
) -> Tensor:
    """Mean over masked positions of ``fn(*chunk)`` (per token), one sequence chunk at a time."""
    seq = mask.shape[1]
    step = seq if not chunk_size or chunk_size >= seq else int(chunk_size)
    if step < 1:
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    if step < seq and torch.is_grad_enabled() and any(x.requires_grad for x in tensors):
        total = _EagerChunks.apply(fn, step, mask, *tensors)
    else:
        total = torch.zeros((), device=mask.device, dtype=torch.float32)
        for start in range(0, seq, step):
            parts = tuple(x[:, start : start + step] for x in tensors)
            m = mask[:, start : start + step].bool()
            # where, not a product: a masked position's value never reaches the sum, not even inf
            total = total + torch.where(m, fn(*parts), 0.0).sum()
    return total / mask.float().sum().clamp_min(1.0)


def divergence(
    token_fn: TokenFn,
    student_logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor,
    temperature: float = 1.0,
    chunk_size: int | None = None,
) -> Tensor:
    """``T^2`` times the per-token mean of ``token_fn(log p_s, log p_t)`` over masked tokens."""
    t = check_temperature(temperature)
    _check(student_logits, teacher_logits, mask)

    def per_token(s: Tensor, te: Tensor) -> Tensor:
        log_p_s = F.log_softmax(s.float() / t, dim=-1)
        log_p_t = F.log_softmax(te.float() / t, dim=-1)
        return token_fn(log_p_s, log_p_t)

    return _chunked_mean(per_token, (student_logits, teacher_logits), mask, chunk_size) * (t * t)


def _kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """``KL(p || q)`` per token from log-probabilities: a vocabulary entry with ``p = 0`` (a
    ``-inf`` logit) contributes 0, with a zero gradient, whatever ``q`` is there
    (:func:`kdlightning.distill.functional.kl_terms`)."""
    return kl_terms(log_p, log_q).sum(-1)


def forward_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor,
    temperature: float = 1.0,
    chunk_size: int | None = None,
) -> Tensor:
    """``T^2 * KL(softmax(t/T) || softmax(s/T))``, per-token mean over ``mask``."""
    return divergence(
        lambda s, t: _kl(t, s), student_logits, teacher_logits, mask, temperature, chunk_size
    )


def topk_forward_kl(
    student_logits: Tensor,
    values: Tensor,
    indices: Tensor,
    mask: Tensor,
    temperature: float = 1.0,
    chunk_size: int | None = None,
) -> Tensor:
    """:func:`forward_kl` against a teacher kept as its top ``k`` logits per token (``values``
    and their token ids ``indices``, ``(batch, seq, k)``; ``kdlightning.lm.cached``), the rest
    dropped: ``T^2 sum_j q_j (log q_j - log p_s[idx_j])`` with ``q = softmax(values / T)``.

    The same value as ``forward_kl(student, dense_from_topk(values, indices, V), ...)``, without
    building the dense ``(batch, seq, V)`` teacher logits and their log-softmax: the student's
    log-softmax is gathered at the ``k`` ids. On ``experiment=lm_pydocs`` (V = 256, k = 32) that
    is what keeps a cached-logit step near the student's own cost (docs/performance.md)."""
    t = check_temperature(temperature)
    _check(student_logits, mask, mask)
    if values.shape != indices.shape or values.shape[:2] != student_logits.shape[:2]:
        raise ValueError(
            f"top-k values {tuple(values.shape)} and indices {tuple(indices.shape)} must both be "
            f"(batch, seq, k) for student logits {tuple(student_logits.shape)}"
        )

    def per_token(s: Tensor, v: Tensor, i: Tensor) -> Tensor:
        log_p_s = F.log_softmax(s.float() / t, dim=-1).gather(-1, i.long())
        log_q = F.log_softmax(v.float() / t, dim=-1)
        return kl_terms(log_q, log_p_s).sum(-1)

    return _chunked_mean(per_token, (student_logits, values, indices), mask, chunk_size) * (t * t)


def reverse_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor,
    temperature: float = 1.0,
    chunk_size: int | None = None,
) -> Tensor:
    """``T^2 * KL(softmax(s/T) || softmax(t/T))`` (MiniLLM's direction), per-token mean."""
    return divergence(
        lambda s, t: _kl(s, t), student_logits, teacher_logits, mask, temperature, chunk_size
    )


def check_beta(beta: float) -> float:
    """Return ``beta`` as a float, or raise ``ValueError`` unless it lies in [0, 1]."""
    try:
        b = float(beta)
    except (TypeError, ValueError):
        b = math.nan
    if not 0.0 <= b <= 1.0:
        raise ValueError(
            f"beta must lie in [0, 1] (0: forward KL, 1: reverse KL, 0.5: symmetric JSD), "
            f"got {beta!r}; set kd.beta=0.5"
        )
    return b


def generalized_jsd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor,
    beta: float = 0.5,
    temperature: float = 1.0,
    chunk_size: int | None = None,
) -> Tensor:
    """GKD's generalized JSD: ``beta KL(p_t||m) + (1-beta) KL(p_s||m)``, ``m = beta p_t +
    (1-beta) p_s``; ``beta=0`` gives :func:`forward_kl`, ``beta=1`` :func:`reverse_kl`."""
    b = check_beta(beta)
    if b == 0.0:  # the mixture is the student itself: the limit TRL takes is forward KL
        return forward_kl(student_logits, teacher_logits, mask, temperature, chunk_size)
    if b == 1.0:
        return reverse_kl(student_logits, teacher_logits, mask, temperature, chunk_size)
    log_b, log_1b = math.log(b), math.log1p(-b)

    def jsd(log_p_s: Tensor, log_p_t: Tensor) -> Tensor:
        # Where both are -inf the mixture is 0 too; logaddexp(-inf, -inf) is -inf but its
        # gradient is NaN, so those entries are taken out of it (finite inputs, then -inf back).
        both = torch.isneginf(log_p_t) & torch.isneginf(log_p_s)
        mixed = torch.logaddexp(
            torch.where(both, 0.0, log_p_t) + log_b, torch.where(both, 0.0, log_p_s) + log_1b
        )
        log_m = torch.where(both, -math.inf, mixed)
        return b * _kl(log_p_t, log_m) + (1.0 - b) * _kl(log_p_s, log_m)

    return divergence(jsd, student_logits, teacher_logits, mask, temperature, chunk_size)


def next_token_ce(
    logits: Tensor, targets: Tensor, mask: Tensor, chunk_size: int | None = None
) -> Tensor:
    """Cross-entropy of ``logits`` against the next ``targets``, per-token mean over ``mask``."""
    _check(logits, targets, mask)

    def per_token(z: Tensor, y: Tensor) -> Tensor:
        flat = F.cross_entropy(z.float().flatten(0, 1), y.flatten(), reduction="none")
        return flat.view(y.shape)

    return _chunked_mean(per_token, (logits, targets), mask, chunk_size)
