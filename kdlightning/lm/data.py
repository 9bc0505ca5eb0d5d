"""Text data modules for causal language models: batches of ``(inputs, targets, mask, index)``.

    from kdlightning.lm.data import PyDocsDataModule, TextFilesDataModule
    dm = PyDocsDataModule(block_size=128, batch_size=32, seed=0)   # data=pydocs, no download
    dm.setup()
    x, y, mask, index = next(iter(dm.train_dataloader()))          # (32, 128) each, index (32,)
    dm = TextFilesDataModule(paths=["notes/", "chat.jsonl"])        # data=text_files

``data=pydocs`` is the Python standard library's own documentation (``pydoc_data.topics``, about
465 KB in every CPython), split by document with the seed, as bytes (vocabulary 256): no
tokenizer and no download. ``data=text_files`` reads local ``.txt`` (one document per file) and
``.jsonl`` files (one per line: ``{"text": ...}``, or ``{"prompt": ..., "response": ...}`` where
only the response is scored), or a data set saved with ``datasets``' ``save_to_disk``
(``load_from_disk=DIR``); ``tokenizer=PATH`` takes any local Hugging Face tokenizer. Nothing
here downloads. Blocks and masks: ``kdlightning.lm.blocks``.
"""

from __future__ import annotations

import glob
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from kdlightning.data.base import batch_as_is, make_loader
from kdlightning.lm.blocks import Document, make_blocks, split_documents
from kdlightning.lm.tokenize import ByteTokenizer, Tokenizer, load_tokenizer

SPLITS = ("train", "val", "test")


class TokenBlocks(Dataset):
    """``(inputs, targets, mask)`` blocks served whole-batch as ``(x, y, mask, index)``."""

    def __init__(self, x: Tensor, y: Tensor, mask: Tensor) -> None:
        self.x, self.y, self.mask = x, y, mask

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[Tensor, ...]:
        return self.x[i], self.y[i], self.mask[i], torch.tensor(i)

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, ...]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.x[idx], self.y[idx], self.mask[idx], idx


class TextDataModule(L.LightningDataModule):
    """Base of the text data modules: subclasses return their documents from :meth:`documents`.

    ``vocab_size`` and ``block_size`` size the models; ``bytes_per_token`` (UTF-8 bytes per
    scored token, 1 for bytes) turns a loss in nats per token into bits per byte.
    """

    def __init__(
        self,
        block_size: int = 128,
        batch_size: int = 32,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        seed: int = 0,
        num_workers: int = 0,
        pin_memory: bool = False,
        eval_batch_size: int | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("block_size", block_size), ("batch_size", batch_size)):
            if int(value) < 1:
                raise ValueError(f"data.{name} must be >= 1, got {value!r}")
        self.block_size, self.batch_size = int(block_size), int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.val_fraction, self.test_fraction = float(val_fraction), float(test_fraction)
        self.seed, self.num_workers, self.pin_memory = int(seed), int(num_workers), bool(pin_memory)
        self.tokenizer: Tokenizer = tokenizer or ByteTokenizer()
        self.vocab_size = self.tokenizer.vocab_size
        self.bytes_per_token = 1.0
        self.sets: dict[str, TokenBlocks] = {}
        self.split_docs: dict[str, list[Document]] = {}

    def documents(self) -> list[Document]:
        raise NotImplementedError  # each data module reads its own source

    def setup(self, stage: str | None = None) -> None:
        if self.sets:
            return
        docs = self.documents()
        parts = split_documents(len(docs), self.val_fraction, self.test_fraction, self.seed)
        for split in SPLITS:
            self.split_docs[split] = [docs[i] for i in parts[split]]
            self.sets[split] = TokenBlocks(*make_blocks(self.split_docs[split], self.block_size))
            if len(self.sets[split]) == 0:
                raise ValueError(f"the {split} split has no block of text; add more documents")
        self.bytes_per_token = self.tokenizer.bytes_per_token(docs)

    def split(self, split: str) -> TokenBlocks:
        if split not in self.sets:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before asking for data")
        return self.sets[split]

    def prompt(self, n_tokens: int = 32) -> Tensor:
        """The first ``n_tokens`` of the first validation document: a prompt for samples."""
        self.setup()
        return self.split_docs["val"][0].tokens[:n_tokens]

    def loader(self, dataset: Dataset, *, train: bool, shard: bool = True) -> DataLoader:
        """Seeded shuffling when training (same order for every stage of a seed); evaluation
        sharded without padding under DDP, so every block is scored exactly once."""
        return make_loader(
            self, dataset, train=train, shard=shard, seed=self.seed, collate_fn=batch_as_is
        )

    def train_dataloader(self) -> DataLoader:
        return self.loader(self.split("train"), train=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.split("val"), train=False)

    def test_dataloader(self) -> DataLoader:
        return self.loader(self.split("test"), train=False)


class PyDocsDataModule(TextDataModule):
    """The standard library's documentation topics (``pydoc_data.topics``), one document each,
    as UTF-8 bytes. ``max_documents`` keeps the first N topics in sorted order (tests)."""

    def __init__(self, *args: Any, max_documents: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_documents = None if max_documents is None else int(max_documents)

    def documents(self) -> list[Document]:
        from pydoc_data.topics import topics  # ships with CPython: nothing to download

        names = sorted(topics)[: self.max_documents]
        return [Document.of(topics[name].encode("utf-8")) for name in names]


class TextFilesDataModule(TextDataModule):
    """A user's local text: ``paths`` are files, folders (every .txt/.jsonl inside) or globs;
    or ``load_from_disk`` is a folder written by ``datasets.Dataset.save_to_disk``."""

    def __init__(
        self,
        *args: Any,
        paths: Sequence[str] | str | None = None,
        tokenizer: str | None = None,
        load_from_disk: str | None = None,
        text_key: str = "text",
        prompt_key: str = "prompt",
        response_key: str = "response",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, tokenizer=load_tokenizer(tokenizer), **kwargs)
        self.paths = [paths] if isinstance(paths, str) else list(paths or [])
        self.load_from_disk = load_from_disk
        self.keys = (text_key, prompt_key, response_key)

    def files(self) -> list[Path]:
        """Every .txt/.jsonl file named by ``paths``, sorted; a path matching nothing raises."""
        found: list[Path] = []
        for entry in self.paths:
            path = Path(entry).expanduser()
            if path.is_dir():
                hits = sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".jsonl"))
            else:
                hits = [Path(p) for p in sorted(glob.glob(str(path)))]
            if not hits:
                raise FileNotFoundError(
                    f"data.paths entry {entry!r} matches no .txt or .jsonl file; give files, "
                    "folders or globs that exist"
                )
            found += hits
        return found

    def _record(self, row: dict[str, Any], where: str) -> Document:
        text_key, prompt_key, response_key = self.keys
        enc = self.tokenizer.encode
        if prompt_key in row and response_key in row:
            return Document.prompt_response(enc(str(row[prompt_key])), enc(str(row[response_key])))
        if text_key in row:
            return Document.of(enc(str(row[text_key])))
        raise ValueError(
            f"{where} has neither {text_key!r} nor {prompt_key!r}+{response_key!r}; set "
            "data.text_key / data.prompt_key / data.response_key to its field names"
        )

    def documents(self) -> list[Document]:
        if not self.paths and not self.load_from_disk:  # LMJob sets the data up at start-up
            raise ValueError(
                "data=text_files needs data.paths=[file.txt,folder/,data.jsonl] or "
                "data.load_from_disk=DIR"
            )
        if self.load_from_disk:
            try:
                from datasets import load_from_disk  # optional: only for prepared data sets
            except ImportError as err:
                raise ImportError(
                    "data.load_from_disk needs the datasets package: pip install datasets"
                ) from err

            rows = load_from_disk(str(Path(self.load_from_disk).expanduser()))
            return [self._record(dict(r), f"{self.load_from_disk} row {i}")
                    for i, r in enumerate(rows)]  # fmt: skip
        docs = []
        for path in self.files():
            if path.suffix == ".jsonl":
                for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                    if line.strip():
                        docs.append(self._record(json.loads(line), f"{path}:{n}"))
            else:
                docs.append(Document.of(self.tokenizer.encode(path.read_text(encoding="utf-8"))))
        return docs


def bits_per_byte(loss_nats_per_token: Tensor | float, bytes_per_token: float) -> Tensor | float:
    """A per-token loss in nats (a float or a tensor) as bits per UTF-8 byte (byte-level tokens:
    loss / ln 2)."""
    return loss_nats_per_token / math.log(2) / bytes_per_token
