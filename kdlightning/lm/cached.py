"""Teacher logits computed once, kept as the top ``k`` per token (``kd.teacher_logits=cached``).

    from kdlightning.lm.cached import compute_topk, dense_from_topk
    stored = compute_topk(teacher, dm, k=32)     # {"train_values": (N, L, k), "train_indices": ...}
    logits = dense_from_topk(stored["train_values"][rows], stored["train_indices"][rows], 256)

Full logits of every token are ``tokens x vocabulary`` floats (0.5 GB for the 465 KB of pydocs
at vocabulary 256; terabytes for a real tokenizer): the top ``k`` logits and their token ids
are what is kept, as in distillation pipelines that store sparse teacher outputs. The teacher's
distribution is then renormalized over its top ``k`` tokens (the others get no mass), which is
exact when ``k >= vocabulary``. Forward KL is defined for such a truncated teacher; reverse KL
and JSD would put an unbounded penalty on the student's mass outside the ``k`` tokens, so
``kdlightning.job.tasks.text`` accepts them only when ``k`` covers the vocabulary.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from kdlightning.distill.logit_store import index_dtype
from kdlightning.lm.data import SPLITS, TextDataModule

#: Logit given to the tokens outside the stored top k: exp(-1e4) is exactly 0 in float32 (and
#: finite, so 0 * log 0 never turns into NaN inside a KL).
ABSENT = -1e4


@torch.no_grad()
def compute_topk(teacher: nn.Module, dm: TextDataModule, k: int) -> dict[str, Tensor]:
    """The teacher's top ``k`` logits (float32) and token ids (int16 up to 32767 tokens, else
    int32: a quarter or half of int64's bytes) for every block of every split, in block order:
    ``{split}_values`` and ``{split}_indices``, each ``(N, L, k)``."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = teacher.to(device).eval()
    dm.setup()
    out = {}
    for split in SPLITS:
        values, indices = [], []
        for batch in dm.loader(dm.split(split), train=False, shard=False):
            top = model(batch[0].to(device)).float().topk(min(k, dm.vocab_size), dim=-1)
            values.append(top.values.cpu())
            indices.append(top.indices.to(index_dtype(dm.vocab_size)).cpu())
        out[f"{split}_values"], out[f"{split}_indices"] = torch.cat(values), torch.cat(indices)
    teacher.to("cpu")
    return out


def dense_from_topk(values: Tensor, indices: Tensor, vocab_size: int) -> Tensor:
    """``(..., vocab)`` logits holding ``values`` at ``indices`` and :data:`ABSENT` elsewhere."""
    dense = torch.full((*values.shape[:-1], vocab_size), ABSENT, dtype=values.dtype,
                       device=values.device)  # fmt: skip
    return dense.scatter_(-1, indices.long(), values)
