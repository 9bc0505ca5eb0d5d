"""Stored teacher logits: full rows (float32 or float16) or the top ``k`` per row, memory-mapped
from a safetensors file and looked up by sample index.

    from kdlightning.distill.logit_store import open_tables, save_tables, tables, to_layout
    stored = to_layout({"train": logits}, dtype="float16", topk=5)  # train_values, train_indices
    save_tables(stored, "logits.safetensors")     # named tensors only: nothing is pickled
    store = tables(open_tables("logits.safetensors"), num_classes=1000)   # memory-mapped
    t_logits = store["train"].lookup(index)       # (batch, classes) float32 on index's device

Why memory-mapped: ImageNet-1k's 1.28M x 1000 float32 logits are 5.1 GB. Loaded with
``torch.load`` every DDP process holds its own copy; mapped from one file, the processes of a
node share the page cache and a process holds only the pages its batches touched
(``benchmarks/logit_store.py`` measures it). float16 halves the file; the top ``k`` values and
their class ids (FKD-style sparse soft labels) keep ``k / C`` of it.

The top-k teacher (``kd.logits_topk=k``): the teacher's distribution is renormalized over its
``k`` kept classes and the rest is **dropped** (its classes get a ``-inf`` logit, so probability
0 and no gradient, :func:`kdlightning.distill.functional.kl_terms`); the student keeps its full
softmax, so the KD term also pushes the student's mass off the dropped classes. We drop the
rest rather than keep it as one "rest" bucket because the bucket's mass at temperature ``T`` is
``sum exp(z_j / T)`` over the dropped logits, which ``k`` stored values cannot give for any
``T`` but the one it was computed at: the entry would have to be keyed by ``kd.temperature``, and
a temperature sweep would recompute the teacher's pass for every ``T``. Dropped, one entry
serves every ``T``, the semantics are those of the language-model top-k cache
(``kdlightning.lm.cached``), and the truncation is exact once ``k`` reaches the class count.
The cost: the teacher looks more confident than it is (``k=1`` is its hard labels); the
top-k accuracy table in ``docs/performance.md`` measures what that costs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

#: What ``kd.logits_dtype`` accepts: the stored values' type (lookups return float32).
DTYPES = {"float32": torch.float32, "float16": torch.float16}
#: Bumped whenever the stored layout changes: part of the cache key, so an entry written in
#: another layout is recomputed, never misread.
LAYOUT_VERSION = 2


def check_topk(k: Any, num_classes: int | None = None) -> int | None:
    """``k`` as an int (``None`` stays ``None``: full logits), else ``ValueError`` naming it:
    a positive integer, at most ``num_classes`` when that is known."""
    if k is None:
        return None
    ok = isinstance(k, int) and not isinstance(k, bool) and k >= 1
    if not ok:
        raise ValueError(
            f"kd.logits_topk={k!r} must be a positive integer (the teacher classes kept per "
            "sample, e.g. kd.logits_topk=5) or null for every class"
        )
    if num_classes is not None and k > num_classes:
        raise ValueError(
            f"kd.logits_topk={k} exceeds the data's {num_classes} classes; set kd.logits_topk "
            f"to at most {num_classes}, or null to keep every class"
        )
    return int(k)


def check_dtype(name: Any) -> torch.dtype:
    """The torch dtype ``kd.logits_dtype`` names, else ``ValueError`` listing the choices."""
    if name not in DTYPES:
        raise ValueError(
            f"kd.logits_dtype={name!r} is not one of {', '.join(DTYPES)}; float16 halves the "
            "stored teacher logits (lookups still return float32)"
        )
    return DTYPES[name]


def index_dtype(num_classes: int) -> torch.dtype:
    """The smallest integer type that holds a class id (int16 up to 32767 classes)."""
    return torch.int16 if num_classes <= torch.iinfo(torch.int16).max else torch.int32


def to_layout(
    logits: Mapping[str, Tensor], dtype: str = "float32", topk: int | None = None
) -> dict[str, Tensor]:
    """Full ``(N, C)`` logits per split in the stored layout: ``{split}`` cast to ``dtype``, or
    with ``topk`` the ``{split}_values`` (``dtype``) and ``{split}_indices`` (int16/int32) of
    each row's ``topk`` largest logits, largest first."""
    torch_dtype = check_dtype(dtype)
    out: dict[str, Tensor] = {}
    for split, table in logits.items():
        if topk is None:
            out[split] = table.to(torch_dtype).contiguous()
            continue
        top = table.float().topk(check_topk(topk, table.shape[-1]), dim=-1)
        out[f"{split}_values"] = top.values.to(torch_dtype).contiguous()
        out[f"{split}_indices"] = top.indices.to(index_dtype(table.shape[-1])).contiguous()
    return out


def save_tables(tensors: Mapping[str, Tensor], path: str | Path) -> None:
    """Write named tensors as a safetensors file (a JSON header and raw bytes: no pickle)."""
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))


def open_tables(path: str | Path) -> dict[str, Tensor]:
    """Every tensor of a safetensors file, memory-mapped (CPU): pages are read when a lookup
    touches them and shared with every process that maps the same file."""
    with safe_open(str(path), framework="pt", device="cpu") as f:
        return {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (not a dict)


def dense_topk(values: Tensor, indices: Tensor, num_classes: int) -> Tensor:
    """``(..., num_classes)`` float32 logits: ``values`` at ``indices``, ``-inf`` elsewhere (the
    dropped classes: probability 0 whatever the temperature)."""
    dense = torch.full((*values.shape[:-1], num_classes), -math.inf, device=values.device)
    return dense.scatter_(-1, indices.long(), values.float())


#: The largest table a lookup moves to the batches' device (1 GiB: CIFAR-100's 50,000 x 100
#: float32 logits are 20 MB; ImageNet-1k's 1.28M x 1000 are 5.1 GB and stay memory-mapped).
DEVICE_RESIDENT_BYTES = 1 << 30


class LogitTable:
    """One split's stored teacher logits, looked up by sample index.

    Either ``full`` ``(N, C)`` or ``values`` and ``indices`` ``(N, k)``. The tensors stay where
    they are (CPU, usually memory-mapped): a lookup gathers the batch's rows there and moves
    only those to the index's device, so a 5 GB table never lands in GPU memory or in each
    process's private memory. ``path``: the file they were mapped from; pickling (ddp_spawn)
    sends the path, and the receiving process maps the file again instead of getting a copy.
    """

    def __init__(
        self,
        num_classes: int,
        full: Tensor | None = None,
        values: Tensor | None = None,
        indices: Tensor | None = None,
        path: str | None = None,
        name: str = "",
    ) -> None:
        if (full is None) == (values is None or indices is None):
            raise ValueError("a LogitTable holds either full logits or top-k values and indices")
        self.num_classes, self.full, self.values, self.indices = num_classes, full, values, indices
        self.path, self.name = path, name

    @property
    def topk(self) -> int | None:
        """The classes kept per row (``None``: every class)."""
        return None if self.values is None else int(self.values.shape[-1])

    @property
    def rtol(self) -> float:
        """How far a stored logit may be from the teacher's, relative to the largest: float32
        keeps them exactly (up to kernel differences), float16 rounds to 11 significant bits."""
        stored = self.full if self.full is not None else self.values
        return 1e-4 if stored.dtype == torch.float32 else 2e-3  # type: ignore[union-attr]

    def __len__(self) -> int:
        return int((self.full if self.full is not None else self.values).shape[0])

    @property
    def nbytes(self) -> int:
        """The table's size in bytes (on disk and, were it loaded, in memory)."""
        parts = [t for t in (self.full, self.values, self.indices) if t is not None]
        return sum(t.numel() * t.element_size() for t in parts)

    def lookup(self, rows: Tensor) -> Tensor:
        """The ``(len(rows), C)`` float32 teacher logits of samples ``rows``, on ``rows``'s
        device (dropped classes of a top-k table at ``-inf``).

        A table of at most :data:`DEVICE_RESIDENT_BYTES` moves to ``rows``'s device at its first
        lookup there and stays: with the batches on a GPU (``data.on_device``), a host-side
        table would cost a round trip per step (the index to the host, the rows back: a sync).
        A larger one stays host-side, memory-mapped and shared by the node's processes."""
        where = (self.full if self.full is not None else self.values).device
        if rows.device != where and self.nbytes <= DEVICE_RESIDENT_BYTES:
            self.full, self.values, self.indices = (
                None if t is None else t.to(rows.device) for t in (self.full, self.values,
                                                                   self.indices)
            )  # fmt: skip
            where = rows.device
        index = rows.to(where)
        if self.full is not None:
            return self.full[index].to(rows.device).float()
        values, indices = self.values[index], self.indices[index]  # type: ignore[index]
        return dense_topk(values.to(rows.device), indices.to(rows.device), self.num_classes)

    def __getstate__(self) -> dict[str, Any]:
        if self.path is None:
            return dict(self.__dict__)
        return {**self.__dict__, "full": None, "values": None, "indices": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.path is not None and self.full is None and self.values is None:
            fresh = tables(open_tables(self.path), self.num_classes, self.path)[self.name]
            self.full, self.values, self.indices = fresh.full, fresh.values, fresh.indices


def tables(
    tensors: Mapping[str, Tensor | LogitTable], num_classes: int, path: str | None = None
) -> dict[str, LogitTable]:
    """One :class:`LogitTable` per split from stored tensors (``{split}``, or ``{split}_values``
    and ``{split}_indices``); tables given as tables are kept."""
    out: dict[str, LogitTable] = {}
    for name, t in tensors.items():
        if isinstance(t, LogitTable):
            out[name] = t
        elif name.endswith("_values"):
            split = name.removesuffix("_values")
            out[split] = LogitTable(num_classes, values=t, indices=tensors[f"{split}_indices"],
                                    path=path, name=split)  # fmt: skip
        elif not name.endswith("_indices"):
            out[name] = LogitTable(num_classes, full=t, path=path, name=name)
    return out
