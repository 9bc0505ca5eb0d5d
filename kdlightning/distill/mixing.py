"""Function matching on mixed images (Beyer et al. 2022, "Knowledge distillation: A good teacher
is patient and consistent", arXiv 2106.05237): the batch is mixed, and the student matches the
teacher's outputs on the mixed images; no label is used for them.

    g = torch.Generator().manual_seed(0)
    mixed = mix_batch(x, "mixup", alpha=1.0, generator=g)   # x: (N, C, H, W)
    module = DistillationModule(teacher, student, method=method, mix="cutmix")

``mixup``: each image becomes ``lam * x_i + (1 - lam) * x_j`` with ``x_j`` another image of the
batch (a random permutation) and ``lam ~ Beta(alpha, alpha)`` drawn per image. ``cutmix``: a
box covering a ``1 - lam`` share of the image (the same ``lam`` law) is pasted from ``x_j`` at a
uniformly drawn center (clipped at the borders, so the share can be smaller). A mixed image
has no label: the teacher, run on that very image, is its only target (kdlightning.distill
modules: the training loss on a mixed batch is the method's distillation term alone).
"""

from __future__ import annotations

import torch
from torch import Tensor

#: The values ``kd.mix`` accepts.
MIX_MODES = ("none", "mixup", "cutmix")


def check_mix(mode: object, alpha: object = 1.0) -> tuple[str, float]:
    """``(mode, alpha)`` checked: a mode of :data:`MIX_MODES` and a Beta parameter > 0."""
    if mode is None:
        mode = "none"
    if mode not in MIX_MODES:
        raise ValueError(
            f"kd.mix={mode!r} is not a mixing mode; use one of {', '.join(MIX_MODES)} "
            "(none: the teacher and the student see the batch as served)"
        )
    try:
        a = float(alpha)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        a = float("nan")
    if isinstance(alpha, bool) or not a > 0 or a == float("inf"):
        raise ValueError(
            f"kd.mix_alpha={alpha!r}: the Beta(alpha, alpha) parameter of the mixing weights "
            "must be a finite number > 0 (1.0: uniform weights)"
        )
    return str(mode), a


def _weights(n: int, alpha: float, generator: torch.Generator | None) -> Tensor:
    # Beta(a, a) as G1 / (G1 + G2) from two Gamma draws: torch.distributions takes no generator.
    conc = torch.full((2, n), float(alpha))
    g = torch._standard_gamma(conc, generator=generator)
    return g[0] / g.sum(0)


def mixup(x: Tensor, lam: Tensor, perm: Tensor) -> Tensor:
    """``lam_i * x_i + (1 - lam_i) * x[perm_i]`` per image (``lam``: (N,))."""
    w = lam.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
    return w * x + (1 - w) * x[perm]


def cutmix(x: Tensor, lam: Tensor, perm: Tensor, centers: Tensor) -> Tensor:
    """Each image ``x_i`` (N, C, H, W) with a box of ``x[perm_i]`` pasted in: the box has sides
    ``sqrt(1 - lam_i)`` times the image's, centered at ``centers[i]`` (fractions of H and W in
    [0, 1]) and clipped at the borders."""
    _, _, h, w = x.shape
    cut = (1 - lam).clamp(0, 1).sqrt()
    half_h, half_w = cut * h / 2, cut * w / 2
    cy, cx = centers[:, 0] * h, centers[:, 1] * w
    top, bottom = (cy - half_h).round().clamp(0, h), (cy + half_h).round().clamp(0, h)
    left, right = (cx - half_w).round().clamp(0, w), (cx + half_w).round().clamp(0, w)
    rows, cols = torch.arange(h)[None], torch.arange(w)[None]
    in_rows = (rows >= top[:, None]) & (rows < bottom[:, None])  # (N, H)
    in_cols = (cols >= left[:, None]) & (cols < right[:, None])  # (N, W)
    box = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]  # (N, 1, H, W)
    return torch.where(box.to(x.device), x[perm], x)


def mix_batch(
    x: Tensor, mode: str, alpha: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """``x`` mixed per ``mode`` (:data:`MIX_MODES`); the random draws come from ``generator``
    (the global one when None), on the CPU whatever ``x``'s device."""
    if mode == "none" or len(x) < 2:
        return x
    n = len(x)
    lam = _weights(n, alpha, generator)
    perm = torch.randperm(n, generator=generator).to(x.device)
    if mode == "mixup":
        return mixup(x, lam.to(x.device), perm)
    if mode == "cutmix":
        if x.dim() != 4:
            raise ValueError(
                f"kd.mix=cutmix pastes boxes into images of shape (N, C, H, W), got inputs of "
                f"shape {tuple(x.shape)}; use kd.mix=mixup for other inputs"
            )
        centers = torch.rand(n, 2, generator=generator)
        return cutmix(x, lam, perm, centers)
    check_mix(mode)  # raises, naming the bad mode
    return x
