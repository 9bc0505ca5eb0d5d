"""Files written whole or not at all, and their checksums: the one copy of each, for every layer
(the job's results and cache, figures, data staging, export).

    with atomic_path(out / "student.pt") as tmp:   # a temporary name beside the target
        torch.save(state, tmp)                     # renamed into place only if this succeeds
    atomic_write(out / "results.json", text)
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (same folder, same suffix, hidden, per process); renamed
    onto ``path`` when the block succeeds, removed when it raises. A reader - another job, a
    DDP rank, a resumed run - sees the old file or the whole new one, never half of it."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint_files(paths: list[Path]) -> dict[str, object]:
    """What a set of data files holds: their count, total size and one BLAKE2b digest over each
    file's name, size and bytes (in the order given). Cheap enough for every start (about 1 GB/s
    on one core); a file replaced under the same name gives another digest."""
    digest = hashlib.blake2b(digest_size=16)
    total = 0
    for path in paths:
        size = path.stat().st_size
        total += size
        digest.update(f"{path.name}\0{size}\0".encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return {"files": len(paths), "bytes": total, "blake2b": digest.hexdigest()}
