"""Contrastive representation distillation (Tian, Krishnan & Isola 2020, "Contrastive
Representation Distillation", ICLR, arXiv 1910.10699)::

    loss = alpha * KD + (1 - alpha) * CE(s, y) + beta * CRD

One student layer and one teacher layer are projected by linear heads to ``feat_dim`` and
L2-normalized; each side keeps a memory bank of every training sample's embedding (``num_train``
rows, keyed by the sample index batches carry). Each sample's embedding is told apart, by NCE
(:func:`kdlightning.distill.functional.crd_loss`), from ``nce_k`` other samples' rows of the
other side's bank, its own row being the positive; then the banks' rows of the batch move
towards the new embeddings (momentum ``nce_m``). ``conf/kd/crd.yaml``.

Negatives are drawn uniformly from the other samples (RepDistiller draws them from other
*classes*, which a transfer set's unlabeled samples do not have). They come from the method's
own seeded stream (seed + step), the same on every DDP rank, for the global batch in sample
order (``Method.gather``): two ranks draw what one process would, and every rank updates its
banks with every rank's samples, so all ranks hold the same banks. Banks, ``Z`` and the
stream's position are saved with the checkpoint: a resumed run continues with them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlightning.distill.functional import crd_loss
from kdlightning.distill.methods.base import (
    ArgumentError,
    FeatureMethod,
    check_count,
    check_number,
    check_weight,
)

__all__ = ["CRD"]


class CRD(FeatureMethod):
    """CRD on one pair of layers, with a memory bank of ``num_train`` rows per side."""

    name = "crd"

    def __init__(
        self,
        *,
        temperature: Any,
        alpha: Any,
        student_layers: Any,
        teacher_layers: Any,
        beta: Any,
        feat_dim: Any,
        nce_k: Any,
        nce_t: Any,
        nce_m: Any,
        teacher: nn.Module,
        student: nn.Module,
        input_shape: Sequence[int],
        num_train: int,
    ) -> None:
        beta, feat_dim = check_weight("beta", beta), check_count("feat_dim", feat_dim)
        nce_k, nce_t = check_count("nce_k", nce_k), check_number("nce_t", nce_t, positive=True)
        nce_m = check_number("nce_m", nce_m, high=1.0)  # 1: the banks never move
        num_train = check_count("num_train", num_train, low=2)
        super().__init__(
            temperature=temperature, alpha=alpha, student_layers=student_layers,
            teacher_layers=teacher_layers, teacher=teacher, student=student,
            input_shape=input_shape,
        )  # fmt: skip
        if len(self.student_layers) != 1:
            raise ArgumentError("student_layers", list(self.student_layers),
                                "{key}={value}: CRD contrasts one embedding per model; give one "
                                "student layer and one teacher layer")  # fmt: skip
        self.beta, self.nce_t, self.nce_m, self.num_train = beta, nce_t, nce_m, num_train
        self.nce_k = min(nce_k, num_train - 1)  # negatives: the other samples at most
        self.embed_student = nn.Linear(math.prod(self.student_shapes[0]), feat_dim)
        self.embed_teacher = nn.Linear(math.prod(self.teacher_shapes[0]), feat_dim)
        stdv = 1.0 / math.sqrt(feat_dim / 3)  # RepDistiller's initial rows
        for side in ("student", "teacher"):
            self.register_buffer(f"bank_{side}", (torch.rand(num_train, feat_dim) * 2 - 1) * stdv)
        self.register_buffer("normalizers", torch.full((2,), -1.0))  # Z: set by the first batch
        self.sample_seed, self.draws = int(torch.randint(2**31 - 1, ())), 0

    def get_extra_state(self) -> dict[str, int]:  # the negatives' stream, in the checkpoint
        return {"sample_seed": self.sample_seed, "draws": self.draws}

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.sample_seed, self.draws = int(state["sample_seed"]), int(state["draws"])

    def negatives(self, index: Tensor) -> Tensor:
        """``(batch, nce_k)`` sample indices, uniform over the samples other than each row's."""
        g = torch.Generator(device=index.device)
        g.manual_seed(self.sample_seed + self.draws)
        self.draws += 1
        draw = torch.randint(self.num_train - 1, (index.shape[0], self.nce_k), generator=g,
                             device=index.device)  # fmt: skip
        return draw + (draw >= index[:, None]).long()  # skip the sample itself

    def feature_terms(
        self, s_feats: Sequence[Tensor], t_feats: Sequence[Tensor], index: Tensor | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        if index is None:
            raise ValueError(
                "crd keys its memory banks by sample: it needs batches of (inputs, targets, "
                "index); serve the data through a kdlightning data module"
            )
        # The global batch in sample order: each sample's negatives then depend on which samples
        # the batch holds, not on how the DDP ranks split it (one process draws the same ones).
        idx, order = self.gather(index).long().sort()
        s = self.embed_student(self.gather(s_feats[0]).flatten(1)[order])
        t = self.embed_teacher(self.gather(t_feats[0]).flatten(1)[order])
        s, t = F.normalize(s.float(), dim=1), F.normalize(t.float(), dim=1)
        rows = torch.cat([idx[:, None], self.negatives(idx)], dim=1)  # the positive first
        # copies: the loss's backward needs the banks as they were, the update below is in place
        banks = self.bank_student.clone(), self.bank_teacher.clone()
        out = crd_loss(s, t, *banks, rows, self.nce_t, self.normalizers)
        with torch.no_grad():
            self.normalizers.copy_(out.normalizers)
            for bank, emb in ((self.bank_student, s), (self.bank_teacher, t)):
                moved = bank[idx] * self.nce_m + emb.detach().to(bank.dtype) * (1 - self.nce_m)
                bank.index_copy_(0, idx, F.normalize(moved, dim=1))
        return self.beta * out.loss, {"crd_loss": out.loss}
