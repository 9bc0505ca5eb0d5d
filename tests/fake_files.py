"""Tiny data files in the official on-disk formats, for loading through the real readers.

write_idx_dataset(folder, n_train=30, n_test=10)       # (Fashion-)MNIST idx files, gzipped
write_cifar(root, "cifar-10", n_train=50, n_test=20)   # CIFAR python pickles
write_image_folder(root / "train", classes=3, per_class=4, size=40)
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image


def idx_bytes(array: np.ndarray) -> bytes:
    """The idx format: 0, 0, dtype code 0x08 (ubyte), rank, big-endian int32 dims, then data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_dataset(
    folder: Path, n_train: int = 30, n_test: int = 10, gz: bool = True, seed: int = 0
) -> dict[str, np.ndarray]:
    """The four (Fashion-)MNIST idx files of random 28x28 images; returns the arrays."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(n_test, dtype=np.uint8) % 10,
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        data = idx_bytes(array)
        if gz:
            with gzip.open(folder / f"{name}.gz", "wb") as f:
                f.write(data)
        else:
            (folder / name).write_bytes(data)
    return arrays


def write_cifar(root: Path, which: str, n_train: int = 50, n_test: int = 20, seed: int = 0) -> None:
    """``cifar-10-batches-py`` (5 train batches) or ``cifar-100-python`` pickles under ``root``."""
    rng = np.random.default_rng(seed)
    classes = 10 if which == "cifar-10" else 100

    def batch(n: int) -> dict:
        data = rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)
        labels = [int(i % classes) for i in range(n)]
        key = "labels" if classes == 10 else "fine_labels"
        return {"data": data, key: labels}

    def dump(path: Path, obj: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(obj))

    if classes == 10:
        folder = root / "cifar-10-batches-py"
        per = n_train // 5
        for i in range(1, 6):
            dump(folder / f"data_batch_{i}", batch(per))
        dump(folder / "test_batch", batch(n_test))
        dump(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(10)]})
    else:
        folder = root / "cifar-100-python"
        dump(folder / "train", batch(n_train))
        dump(folder / "test", batch(n_test))
        dump(folder / "meta", {"fine_label_names": [f"c{i}" for i in range(100)]})


def write_image_folder(folder: Path, classes: int = 3, per_class: int = 4, size: int = 40) -> None:
    """``folder/<class>/<i>.png`` RGB images of random pixels."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        (folder / f"class{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size, size + 3, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"class{c}" / f"{i}.png")
