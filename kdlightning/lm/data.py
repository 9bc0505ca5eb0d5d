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

Files are read as ``encoding`` (``data.encoding``, default UTF-8; a leading byte-order mark is
dropped). A byte that does not decode, a line that is not a JSON object, or one without the
expected fields stops the job with the file, the line and the fix; ``skip_bad_lines=True``
(``data.skip_bad_lines=true``) leaves such JSONL lines out instead and logs how many. A
``block_size`` longer than a split is refused at setup, with the split's length in tokens.
"""

from __future__ import annotations

import codecs
import glob
import json
import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from kdlightning.data.base import batch_as_is, make_loader
from kdlightning.files import fingerprint_files
from kdlightning.lm.blocks import Document, make_blocks, split_documents
from kdlightning.lm.tokenize import ByteTokenizer, Tokenizer, load_tokenizer

SPLITS = ("train", "val", "test")

log = logging.getLogger(__name__)


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

    def source_files(self) -> list[Path]:
        """The files the documents are read from; the job's cache keys cover what they hold."""
        return []

    def fingerprint(self) -> dict[str, Any]:
        """Count, size and digest of :meth:`source_files` (empty when there are none)."""
        files = self.source_files()
        return fingerprint_files(files) if files else {}

    def setup(self, stage: str | None = None) -> None:
        if self.sets:
            return
        docs = self.documents()
        parts = split_documents(len(docs), self.val_fraction, self.test_fraction, self.seed)
        split_docs = {split: [docs[i] for i in parts[split]] for split in SPLITS}
        self.check_block_size(split_docs)
        self.split_docs = split_docs
        for split in SPLITS:
            self.sets[split] = TokenBlocks(*make_blocks(self.split_docs[split], self.block_size))
            if len(self.sets[split]) == 0:
                raise ValueError(f"the {split} split has no block of text; add more documents")
        self.bytes_per_token = self.tokenizer.bytes_per_token(docs)

    def check_block_size(self, split_docs: dict[str, list[Document]]) -> None:
        """Refuse a block longer than a split: every block of it would be padding, and the
        models' context (and their attention) that long. Said before any block is built."""
        lengths = {split: sum(len(d) for d in split_docs[split]) for split in SPLITS}
        shortest = min(SPLITS, key=lambda split: lengths[split])
        if self.block_size > lengths[shortest]:
            sizes = ", ".join(f"{split} {lengths[split]}" for split in SPLITS)
            raise ValueError(
                f"data.block_size={self.block_size} is longer than the {shortest} split, which "
                f"holds {lengths[shortest]} tokens in {len(split_docs[shortest])} document(s) "
                f"(tokens per split: {sizes}): its blocks would be padding and the models' "
                f"context {self.block_size} positions long. Set data.block_size to at most "
                f"{lengths[shortest]} (typically 64 to 1024), or give the split more text "
                "(data.val_fraction / data.test_fraction)."
            )

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

    def source_files(self) -> list[Path]:
        import pydoc_data.topics

        return [Path(pydoc_data.topics.__file__)]  # this Python's own copy

    def documents(self) -> list[Document]:
        from pydoc_data.topics import topics  # ships with CPython: nothing to download

        names = sorted(topics)[: self.max_documents]
        return [Document.of(topics[name].encode("utf-8")) for name in names]


#: A character that ``errors="surrogateescape"`` put in place of a byte that did not decode.
_UNDECODED = re.compile("[\udc80-\udcff]")


def _encoding_fix(encoding: str) -> str:
    return (
        f"if the file is not {encoding}, set data.encoding to its encoding (e.g. "
        "data.encoding=latin-1 or data.encoding=cp1252), or convert it to UTF-8"
    )


def _decode_error(path: Path, raw: bytes, err: UnicodeDecodeError, encoding: str) -> str:
    """The message for a file that does not decode: which file, line and byte, and the fix."""
    line = raw[: err.start].decode(encoding, errors="replace").count("\n") + 1
    byte = raw[err.start : err.start + 1].hex()
    return (
        f"{path}, line {line}: byte 0x{byte} (offset {err.start}) cannot be decoded as "
        f"{encoding} ({err.reason}); {_encoding_fix(encoding)}"
    )


def read_text_file(path: Path, encoding: str = "utf-8") -> str:
    """A .txt file's text (one document), its byte-order mark dropped; ``ValueError`` naming
    the file, the line and ``data.encoding`` if it does not decode."""
    raw = path.read_bytes()
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as err:
        raise ValueError(_decode_error(path, raw, err, encoding)) from None
    return text.removeprefix("\ufeff")


class TextFilesDataModule(TextDataModule):
    """A user's local text: ``paths`` are files, folders (every .txt/.jsonl inside) or globs;
    or ``load_from_disk`` is a folder written by ``datasets.Dataset.save_to_disk``.

    ``encoding``: how the files are decoded (default UTF-8; the byte tokenizer then encodes the
    text as UTF-8, so bits per byte are per UTF-8 byte whatever the files' encoding).
    ``skip_bad_lines``: leave out the JSONL lines that do not decode, are not a JSON object or
    lack the fields, with a warning that counts them, instead of stopping at the first one.
    """

    def __init__(
        self,
        *args: Any,
        paths: Sequence[str] | str | None = None,
        tokenizer: str | None = None,
        load_from_disk: str | None = None,
        text_key: str = "text",
        prompt_key: str = "prompt",
        response_key: str = "response",
        encoding: str = "utf-8",
        skip_bad_lines: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, tokenizer=load_tokenizer(tokenizer), **kwargs)
        self.paths = [paths] if isinstance(paths, str) else list(paths or [])
        self.load_from_disk = load_from_disk
        self.keys = (text_key, prompt_key, response_key)
        try:
            codecs.lookup(str(encoding))
        except LookupError:
            raise ValueError(
                f"data.encoding={encoding!r} is not an encoding Python knows; use e.g. utf-8, "
                "latin-1, cp1252 or utf-16"
            ) from None
        self.encoding, self.skip_bad_lines = str(encoding), bool(skip_bad_lines)

    def source_files(self) -> list[Path]:
        if self.load_from_disk:
            folder = Path(self.load_from_disk).expanduser()
            return sorted(p for p in folder.rglob("*") if p.is_file())
        return self.files()

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

    def _expected(self) -> str:
        text_key, prompt_key, response_key = self.keys
        return (
            f"an object with a {text_key!r} field or {prompt_key!r} and {response_key!r} fields "
            f'holding strings, e.g. {{"{text_key}": "..."}}'
        )

    def _record(self, row: Any, where: str) -> Document:
        text_key, prompt_key, response_key = self.keys
        if not isinstance(row, dict):
            kind = {str: "string", list: "array", bool: "boolean", type(None): "null"}.get(
                type(row), "number"
            )
            raise ValueError(
                f"{where} is a JSON {kind} ({json.dumps(row)[:40]}), not an object: expected "
                f"{self._expected()}"
            )
        keys = [prompt_key, response_key] if prompt_key in row and response_key in row else None
        if keys is None and text_key in row:
            keys = [text_key]
        if keys is None:
            raise ValueError(
                f"{where} has neither {text_key!r} nor {prompt_key!r}+{response_key!r} (its "
                f"fields: {', '.join(map(repr, list(row)[:8])) or 'none'}); set "
                "data.text_key / data.prompt_key / data.response_key to its field names"
            )
        for key in keys:
            if not isinstance(row[key], str):
                raise ValueError(
                    f"{where}: field {key!r} is {json.dumps(row[key])[:40]}, not a string; "
                    f"expected {self._expected()}"
                )
        tokens = [self.tokenizer.encode(row[key]) for key in keys]
        return Document.prompt_response(*tokens) if len(tokens) == 2 else Document.of(tokens[0])

    def _jsonl_line(self, path: Path, n: int, line: str) -> Document:
        where = f"{path}, line {n}"
        bad = _UNDECODED.search(line)
        if bad:
            byte = ord(bad.group()) - 0xDC00
            raise ValueError(
                f"{where}: byte 0x{byte:02x} cannot be decoded as {self.encoding}; "
                f"{_encoding_fix(self.encoding)}; or set data.skip_bad_lines=true to leave "
                "such lines out"
            )
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{where} is not valid JSON ({err.msg}, column {err.colno}): each line of a "
                f".jsonl file must be {self._expected()}. Fix or delete the line, or set "
                "data.skip_bad_lines=true to leave bad lines out"
            ) from None
        return self._record(row, where)

    def _jsonl_documents(self, path: Path) -> list[Document]:
        """One document per non-blank line; bad lines raise, or are counted and left out."""
        raw = path.read_bytes()
        try:  # undecodable bytes kept as lone surrogates: the bad *line* is found below
            text = raw.decode(self.encoding, errors="surrogateescape")
        except UnicodeDecodeError as err:  # a byte surrogateescape cannot carry (e.g. UTF-16)
            raise ValueError(_decode_error(path, raw, err, self.encoding)) from None
        docs, bad = [], []
        for n, line in enumerate(text.removeprefix("\ufeff").split("\n"), 1):
            if not line.strip():
                continue
            try:
                docs.append(self._jsonl_line(path, n, line))
            except ValueError as err:
                if not self.skip_bad_lines:
                    raise
                bad.append(str(err))
        if bad and not docs:
            raise ValueError(
                f"every line of {path} is bad ({len(bad)} line(s)), so data.skip_bad_lines "
                f"leaves nothing; the first: {bad[0]}"
            )
        if bad:
            log.warning(
                "%s: skipped %d bad line(s) of %d (data.skip_bad_lines=true); the first: %s",
                path,
                len(bad),
                len(bad) + len(docs),
                bad[0],
            )
        return docs

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
                docs += self._jsonl_documents(path)
            else:
                text = read_text_file(path, self.encoding)
                docs.append(Document.of(self.tokenizer.encode(text)))
        return docs


def bits_per_byte(loss_nats_per_token: Tensor | float, bytes_per_token: float) -> Tensor | float:
    """A per-token loss in nats (a float or a tensor) as bits per UTF-8 byte (byte-level tokens:
    loss / ln 2)."""
    return loss_nats_per_token / math.log(2) / bytes_per_token
