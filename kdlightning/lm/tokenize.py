"""Tokenizers for the text data modules: UTF-8 bytes (the default) or a local Hugging Face one.

from kdlightning.lm.tokenize import ByteTokenizer, load_tokenizer
tok = ByteTokenizer()                       # vocabulary 256, nothing to download
tok.decode(tok.encode("héllo"))             # 'héllo'
tok = load_tokenizer("/models/my-tokenizer")  # AutoTokenizer from a local folder
tok = load_tokenizer("Qwen/Qwen2.5-0.5B")      # or a hub id (downloaded once, then cached)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class Tokenizer(Protocol):
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def bytes_per_token(self, docs: Sequence[Any]) -> float: ...


class ByteTokenizer:
    """Token = one UTF-8 byte: vocabulary 256, so bits per byte is the loss in bits per token."""

    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def bytes_per_token(self, docs: Sequence[Any]) -> float:
        return 1.0


class HFTokenizer:
    """A Hugging Face tokenizer from a local folder (``local_files_only``) or a hub id."""

    def __init__(self, path: str) -> None:
        try:
            from transformers import AutoTokenizer
        except ImportError as err:
            raise ImportError(
                "data.tokenizer needs the transformers package: pip install 'kdlightning[lm]'"
            ) from err
        from kdlightning.lm.hf import resolve_source

        try:
            source, local = resolve_source(path, "data.tokenizer")
        except FileNotFoundError:
            raise FileNotFoundError(
                f"data.tokenizer={path!r} does not exist; give the local folder of a saved "
                "tokenizer (tokenizer.save_pretrained(DIR)), a hub id, or null for bytes"
            ) from None
        self.tok = AutoTokenizer.from_pretrained(source, local_files_only=local)
        self.vocab_size = len(self.tok)

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tok.decode([int(i) for i in ids]))

    def bytes_per_token(self, docs: Sequence[Any]) -> float:
        """UTF-8 bytes per token over ``docs``: what turns nats per token into bits per byte."""
        tokens = sum(len(d.tokens) for d in docs)
        text_bytes = sum(len(self.decode(d.tokens.tolist()).encode("utf-8")) for d in docs)
        return text_bytes / max(tokens, 1)


def load_tokenizer(path: str | None) -> ByteTokenizer | HFTokenizer:
    """Bytes for ``None``, else the Hugging Face tokenizer saved in the folder ``path``."""
    return ByteTokenizer() if path in (None, "", "bytes") else HFTokenizer(str(path))
