"""Where the teacher's outputs come from: run online on every batch, or computed once and looked
up by sample index (cached), optionally verified against the live teacher.

    from kdlightning.distill.teacher import compute_teacher_logits, choose_teacher_logits
    mode = choose_teacher_logits("auto", needs_features=False, augments=dm.augments)  # "cached"
    logits = compute_teacher_logits(teacher, dm)   # {"train": (N, C), "val": ..., "test": ...}
    module = DistillationModule(teacher, student, teacher_logits=logits)

Stored logits are right only for the exact inputs the student sees: with random augmentation,
or with a method that reads the teacher's intermediate layers, the teacher must run online.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

#: ``kd.teacher_logits``: auto picks cached unless the method or the data rules it out.
TEACHER_LOGITS = ("auto", "online", "cached")


def check_teacher_logits(mode: object) -> str:
    """Return ``mode`` if it is one of :data:`TEACHER_LOGITS`, else a ``ValueError`` naming them."""
    if mode not in TEACHER_LOGITS:
        raise ValueError(
            f"kd.teacher_logits={mode!r} is not one of {', '.join(TEACHER_LOGITS)}; cached runs "
            "the teacher once before training, online on every batch"
        )
    return str(mode)


def cached_feature_message(method: str) -> str:
    """Why ``kd.teacher_logits=cached`` cannot serve a feature method, and the fix."""
    return (
        f"kd.teacher_logits=cached with kd={method}: {method} reads the teacher's intermediate "
        "layers on every batch, which stored logits do not hold. Use kd.teacher_logits=online "
        "(or auto, which picks online for feature methods)."
    )


def choose_teacher_logits(
    mode: object, needs_features: bool, augments: bool, method: str = "kd", data: str = "the data"
) -> str:
    """``online`` or ``cached`` for a ``kd.teacher_logits`` value; refuses cached logits when the
    method reads the teacher's intermediate layers (``needs_features``), which stored logits do
    not hold, or when the training inputs are random (``augments``), since stored outputs would
    not match them."""
    mode = check_teacher_logits(mode)
    if mode == "auto":
        return "online" if needs_features or augments else "cached"
    if mode == "cached" and needs_features:
        raise ValueError(cached_feature_message(method))
    if mode == "cached" and augments:
        raise ValueError(
            f"kd.teacher_logits=cached with {data}, whose training inputs are "
            "randomly augmented: logits stored once would belong to other crops and flips than "
            "the student sees. Use kd.teacher_logits=online (or auto), or switch augmentation "
            "off (data.augment=false where the data set has it)."
        )
    return mode


#: ``progress(batches, total, description)`` -> the same batches, shown as they are consumed
Progress = Callable[[Iterable[Any], int, str], Iterable[Any]]


@torch.no_grad()
def compute_teacher_logits(
    teacher: nn.Module, dm: Any, progress: Progress | None = None
) -> dict[str, Tensor]:
    """The teacher's logits on every sample of every split of a kdlightning classification data
    module, in sample order (eval mode; on the GPU when there is one); ``progress`` shows the
    pass (a large data set takes a while)."""
    use_cuda = torch.cuda.is_available()
    device = torch.device("cuda" if use_cuda else "cpu")
    model = teacher.to(device).eval()
    out = {}
    for split in ("train", "val", "test"):
        rows = []
        loader = dm.loader(dm.indexed(split), train=False, shard=False)
        batches = progress(loader, len(loader), f"teacher logits ({split})") if progress else loader
        for batch in batches:
            rows.append(model(batch[0].to(device)).float().cpu())
        out[split] = torch.cat(rows)
    teacher.to("cpu")
    return out


def check_logit_rows(logits: dict[str, Tensor], sizes: dict[str, int], where: str) -> None:
    """Stored teacher outputs must hold one row per sample of each split: a table made for other
    data would pair inputs with another sample's soft targets (or index past its end)."""
    for name, table in logits.items():
        split = name.split("_", 1)[0]  # "train" or "train_values" / "train_indices"
        if split in sizes and table.shape[0] != sizes[split]:
            raise ValueError(
                f"the stored teacher outputs in {where} hold {table.shape[0]} rows for the "
                f"{split} split, which has {sizes[split]} samples: they were made for other data. "
                "Delete that entry (or set cache.enabled=false) so they are computed again."
            )
