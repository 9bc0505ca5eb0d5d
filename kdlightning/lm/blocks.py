"""Documents -> a seeded split by document -> fixed-length blocks with a loss mask.

    from kdlightning.lm.blocks import Document, split_documents, make_blocks
    docs = [Document.of(b"some text", scored=True)]
    parts = split_documents(len(docs), val_fraction=0.1, test_fraction=0.1, seed=0)
    x, y, mask = make_blocks([docs[i] for i in parts["train"]], block_size=128)

A block holds ``block_size + 1`` tokens of one document: inputs are the first ``block_size``,
targets the last ``block_size`` (position ``i`` predicts token ``i + 1``). ``mask`` is true where
the target is scored: false after the document's end (padding) and on prompt tokens of
instruction data (only the response is scored, as torchtune's and TRL's SFT data do).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

#: Token id written into padding (never scored: its mask is false).
PAD_ID = 0


@dataclass(frozen=True)
class Document:
    """Token ids of one document and, per token, whether predicting it is scored."""

    tokens: Tensor  # (n,) int64
    scored: Tensor  # (n,) bool

    @classmethod
    def of(cls, tokens: Sequence[int] | bytes, scored: bool = True) -> Document:
        ids = torch.tensor(list(tokens), dtype=torch.long)
        return cls(ids, torch.full((len(ids),), bool(scored)))

    @classmethod
    def prompt_response(
        cls, prompt: Sequence[int] | bytes, response: Sequence[int] | bytes
    ) -> Document:
        """Prompt tokens are context only; the response tokens are the ones scored."""
        p, r = cls.of(prompt, scored=False), cls.of(response, scored=True)
        return cls(torch.cat([p.tokens, r.tokens]), torch.cat([p.scored, r.scored]))

    def __len__(self) -> int:
        return len(self.tokens)


def split_documents(
    n: int, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[int]]:
    """A seeded partition of document indices ``0..n-1`` into train/val/test (each non-empty).

    Splitting by document, not by block, keeps a document's text out of the other splits:
    blocks of one page would otherwise leak its wording into validation.
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < float(value) < 1.0:
            raise ValueError(f"data.{name} must lie strictly between 0 and 1, got {value!r}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"data.val_fraction + data.test_fraction must be < 1, got {val_fraction} + "
            f"{test_fraction}"
        )
    if n < 3:
        raise ValueError(
            f"{n} document(s): at least 3 are needed for train, val and test; add text files "
            "or split long files into several documents"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).tolist()
    n_test = max(1, round(n * test_fraction))
    n_val = max(1, round(n * val_fraction))
    n_val = min(n_val, n - n_test - 1)
    return {
        "test": sorted(order[:n_test]),
        "val": sorted(order[n_test : n_test + n_val]),
        "train": sorted(order[n_test + n_val :]),
    }


def make_blocks(docs: Sequence[Document], block_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(inputs, targets, mask)``, each ``(blocks, block_size)``, from every document.

    Each document is cut into consecutive windows of ``block_size + 1`` tokens that overlap by
    one (so every token but the first is a target exactly once); the last window is padded with
    :data:`PAD_ID` and its padding masked out. A document of one token predicts nothing.
    """
    if int(block_size) < 1:
        raise ValueError(f"data.block_size must be >= 1, got {block_size!r}")
    width = int(block_size) + 1
    tokens, scored = [], []
    for doc in docs:
        for start in range(0, max(len(doc) - 1, 0), block_size):
            t = doc.tokens[start : start + width]
            s = doc.scored[start : start + width]
            pad = width - len(t)
            tokens.append(torch.cat([t, torch.full((pad,), PAD_ID, dtype=torch.long)]))
            scored.append(torch.cat([s, torch.zeros(pad, dtype=torch.bool)]))
    if not tokens:
        return (torch.zeros(0, block_size, dtype=torch.long),) * 2 + (
            torch.zeros(0, block_size, dtype=torch.bool),
        )
    t, s = torch.stack(tokens), torch.stack(scored)
    return t[:, :-1].contiguous(), t[:, 1:].contiguous(), s[:, 1:].contiguous()
