"""Stale data is never reused: the cache keys cover what the data files hold, so files replaced
under the same path (same names, same sizes) give other keys (issue 19, item 5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import compose
from fake_files import idx_bytes, write_idx_dataset, write_image_folder
from PIL import Image

from kdlightning.data import FashionMNISTDataModule, ImageFolderDataModule
from kdlightning.files import fingerprint_files
from kdlightning.job.cache import cache_key, logits_key_inputs
from kdlightning.models import MLP


def test_a_file_rewritten_with_the_same_size_changes_the_fingerprint(tmp_path: Path) -> None:
    a = tmp_path / "a.bin"
    a.write_bytes(b"\x00" * 1000)
    before = fingerprint_files([a])
    a.write_bytes(b"\x00" * 999 + b"\x01")
    after = fingerprint_files([a])
    assert before["bytes"] == after["bytes"] == 1000 and before["files"] == 1
    assert before["blake2b"] != after["blake2b"]


def test_an_image_folder_with_replaced_images_gets_another_cache_key(tmp_path: Path) -> None:
    root = tmp_path / "images"
    write_image_folder(root / "train", per_class=6)
    write_image_folder(root / "val", per_class=2)

    def keys() -> tuple[str, str]:
        dm = ImageFolderDataModule(root=str(root), image_size=16, val_size=3)
        cfg = compose(["data=imagefolder", f"data.root={root}"])
        files = dm.fingerprint()
        assert files["files"] == 3 * 6 + 3 * 2
        teacher = MLP(3, (3, 16, 16), [4])
        return cache_key(cfg, "teacher", files), str(logits_key_inputs(cfg, teacher, files))

    before = keys()
    image = root / "train" / "class0" / "0.png"
    pixels = np.asarray(Image.open(image)).copy()
    Image.fromarray(255 - pixels).save(image)  # another picture, same name and size
    after = keys()
    assert before[0] != after[0] and before[1] != after[1]


def test_fashion_mnist_with_changed_labels_gets_another_cache_key(tmp_path: Path) -> None:
    raw = tmp_path / "FashionMNIST" / "raw"
    arrays = write_idx_dataset(raw, gz=False)

    def key() -> str:
        dm = FashionMNISTDataModule(data_dir=str(tmp_path), val_size=10, system_dir=None)
        return cache_key(compose(["data=fashion_mnist"]), "teacher", dm.fingerprint())

    before = key()
    changed = (arrays["train-labels-idx1-ubyte"] + 1) % 10  # same count, same file size
    (raw / "train-labels-idx1-ubyte").write_bytes(idx_bytes(changed))
    assert key() != before
