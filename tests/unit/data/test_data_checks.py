"""Damaged data files stop the job before training, with the file's name and the fix.

Every case writes a tiny data set in the official format (tests/fake_files.py), damages one
file the way disks, downloads and copies do (truncation, garbage, wrong header), and checks
that the message names that file.
"""

from __future__ import annotations

import gzip
import io
import pickle  # CIFAR's own format, as tests/fake_files.py writes it
import re
from pathlib import Path

import numpy as np
import pytest
from fake_files import idx_bytes, write_cifar, write_idx_dataset, write_image_folder
from PIL import Image

from kdlightning.data import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    FashionMNISTDataModule,
    ImageFolderDataModule,
    MNISTDataModule,
)
from kdlightning.data.imagefolder import image_problem, load_rgb


def truncate(path: Path, keep: float = 0.5) -> None:
    """Keep the first ``keep`` share of the file: what an interrupted copy leaves."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def jpeg_bytes(seed: int = 0, size: int = 48) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG")
    return out.getvalue()


# --- image folders ------------------------------------------------------------------------------
def image_root(tmp_path: Path, per_class: int = 4) -> Path:
    write_image_folder(tmp_path / "train", classes=3, per_class=per_class, size=24)
    write_image_folder(tmp_path / "val", classes=3, per_class=2, size=24)
    return tmp_path


def image_module(root: Path, **kwargs: object) -> ImageFolderDataModule:
    return ImageFolderDataModule(
        root=str(root), image_size=16, val_size=2, batch_size=4, num_workers=0, **kwargs
    )


def test_a_garbage_png_stops_setup_naming_it(tmp_path: Path) -> None:
    root = image_root(tmp_path)
    bad = root / "train" / "class1" / "2.png"
    bad.write_bytes(b"\x89PNG this is no image" * 8)
    with pytest.raises(ValueError, match=r"1 of the 18 image files") as err:
        image_module(root).setup()
    message = str(err.value)
    assert str(bad) in message and "data.skip_bad_files=true" in message


@pytest.mark.parametrize("name", ["1.png", "1.jpg"])
def test_a_truncated_image_stops_setup_naming_it(tmp_path: Path, name: str) -> None:
    root = image_root(tmp_path)
    bad = root / "val" / "class2" / name  # the test folder is checked too
    if name.endswith(".jpg"):
        bad.write_bytes(jpeg_bytes())
    truncate(bad, 0.6)
    assert image_problem(str(bad)) is not None
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        image_module(root).setup()


def test_intact_jpegs_pass_also_with_bytes_after_the_end_marker(tmp_path: Path) -> None:
    plain, padded = tmp_path / "a.jpg", tmp_path / "b.jpeg"
    plain.write_bytes(jpeg_bytes(1))
    padded.write_bytes(jpeg_bytes(2) + b"\0" * 4096)  # some writers append data after the image
    assert image_problem(str(plain)) is None and image_problem(str(padded)) is None


def test_skip_bad_files_leaves_them_out_with_a_warning(tmp_path: Path) -> None:
    root = image_root(tmp_path)
    garbage = root / "train" / "class0" / "1.png"
    garbage.write_bytes(b"not an image")
    truncated = root / "val" / "class1" / "0.png"
    truncate(truncated)
    dm = image_module(root, skip_bad_files=True)
    with pytest.warns(UserWarning, match=r"left out \(data.skip_bad_files\)") as record:
        dm.setup()
    warned = "\n".join(str(w.message) for w in record)
    assert str(garbage) in warned and str(truncated) in warned
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (9, 2, 5)
    served = {path for path, _ in dm.train_set.dataset.samples + dm.test_set.dataset.samples}
    assert garbage not in {Path(p) for p in served} and str(truncated) not in served
    targets = dm.train_set.dataset.targets
    assert targets == [t for _, t in dm.train_set.dataset.samples] and targets.count(0) == 3
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        assert sum(len(y) for _, y, _ in loader) > 0  # every remaining file decodes


def test_many_bad_files_are_listed_ten_and_counted(tmp_path: Path) -> None:
    root = image_root(tmp_path, per_class=6)
    for c in range(3):
        for i in range(4):
            (root / "train" / f"class{c}" / f"{i}.png").write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"12 of the 24 image files") as err:
        image_module(root).setup()
    assert str(err.value).count("UnidentifiedImageError") == 10 and "... and 2 more" in str(
        err.value
    )


def test_a_class_whose_images_are_all_bad_is_an_error_even_when_skipping(tmp_path: Path) -> None:
    root = image_root(tmp_path, per_class=2)
    for i in range(2):
        (root / "train" / "class2" / f"{i}.png").write_bytes(b"junk")
    with (
        pytest.warns(UserWarning),
        pytest.raises(FileNotFoundError, match=r"holds no image files once the unreadable") as err,
    ):
        image_module(root, skip_bad_files=True).setup()
    assert str(root / "train" / "class2") in str(err.value)


def test_empty_class_folders_are_a_clear_error(tmp_path: Path) -> None:
    root = image_root(tmp_path)
    for p in (root / "train" / "class1").iterdir():
        p.unlink()
    (root / "train" / "class1" / "notes.txt").write_text("not an image extension")
    with pytest.raises(FileNotFoundError, match=r"1 of the 3 class folders .* holds no") as err:
        image_module(root).setup()
    assert f"{root / 'train' / 'class1'}." in str(err.value)

    for c in (0, 2):
        for p in (root / "train" / f"class{c}").iterdir():
            p.unlink()
    with pytest.raises(FileNotFoundError, match=r"no image files in the class folders") as err:
        image_module(root).setup()
    assert str(root / "train") in str(err.value) and ".jpg" in str(err.value)


def test_a_file_that_fails_to_decode_later_is_named(tmp_path: Path) -> None:
    # What the check cannot see (a JPEG garbled mid-stream) still fails with the file's name.
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"junk")
    with pytest.raises(OSError, match=re.escape(str(bad))):
        load_rgb(str(bad))


# --- (Fashion-)MNIST idx files --------------------------------------------------------------------
def fashion(tmp_path: Path, system: Path | None = None) -> FashionMNISTDataModule:
    return FashionMNISTDataModule(
        data_dir=str(tmp_path / "data"), val_size=4, system_dir=str(system) if system else None
    )


def staged(tmp_path: Path) -> tuple[FashionMNISTDataModule, Path]:
    """A data module whose idx files were staged from a (fake) package folder."""
    system = tmp_path / "system"
    write_idx_dataset(system, n_train=20, n_test=10)
    dm = fashion(tmp_path, system)
    dm.prepare_data()
    return dm, dm.raw_dir


def test_a_truncated_idx_file_is_named_with_the_sizes_and_the_fix(tmp_path: Path) -> None:
    dm, raw = staged(tmp_path)
    bad = raw / "train-images-idx3-ubyte"
    bad.write_bytes(bad.read_bytes()[:5000])
    with pytest.raises(
        ValueError, match=r"truncated: 5,000 bytes, the header promises 15,696"
    ) as err:
        dm.setup()
    message = str(err.value)
    assert str(bad) in message
    assert "apt-get install --reinstall dataset-fashion-mnist" in message
    assert f"staged again from {tmp_path / 'system'}" in message


def test_a_wrong_magic_number_is_named(tmp_path: Path) -> None:
    dm, raw = staged(tmp_path)
    bad = raw / "t10k-labels-idx1-ubyte"
    bad.write_bytes(b"\x1f\x8b\x08\x00" + bad.read_bytes()[4:])  # e.g. still gzipped
    with pytest.raises(
        ValueError, match=r"wrong magic number 0x1f8b0800, expected 0x00000801"
    ) as err:
        dm.setup()
    assert str(bad) in str(err.value)


def test_labels_that_do_not_match_the_images_are_named(tmp_path: Path) -> None:
    dm, raw = staged(tmp_path)
    labels = raw / "train-labels-idx1-ubyte"
    labels.write_bytes(idx_bytes(np.arange(19) % 10))  # 19 labels for 20 images
    with pytest.raises(ValueError, match=r"19 labels, but .* holds 20 images") as err:
        dm.setup()
    assert str(labels) in str(err.value) and str(raw / "train-images-idx3-ubyte") in str(err.value)
    assert "delete them" in str(err.value)

    labels.write_bytes(idx_bytes(np.array([3] * 19 + [200])))  # a flipped byte
    with pytest.raises(ValueError, match=r"label 200 at position 19, expected 0..9") as err:
        dm.setup()
    assert str(labels) in str(err.value)


def test_images_of_another_size_are_named(tmp_path: Path) -> None:
    raw = tmp_path / "data" / "MNIST" / "raw"
    write_idx_dataset(raw, n_train=20, n_test=10, gz=False)
    bad = raw / "t10k-images-idx3-ubyte"
    bad.write_bytes(idx_bytes(np.zeros((10, 32, 32))))
    dm = MNISTDataModule(data_dir=str(tmp_path / "data"), val_size=4)
    with pytest.raises(ValueError, match=r"images of 32x32 pixels, expected 28x28") as err:
        dm.setup()
    # No package to re-install MNIST from: the fix is a download.
    assert str(bad) in str(err.value) and "data.download=true" in str(err.value)


@pytest.mark.parametrize("damage", ["truncated", "not gzip"])
def test_a_damaged_gz_in_the_system_dir_is_named_and_leaves_nothing(
    tmp_path: Path, damage: str
) -> None:
    system = tmp_path / "system"
    write_idx_dataset(system, n_train=20, n_test=10)
    bad = system / "t10k-images-idx3-ubyte.gz"
    if damage == "truncated":
        truncate(bad, 0.7)
    else:
        bad.write_bytes(b"PK\x03\x04 a zip file, say")
    dm = fashion(tmp_path, system)
    with pytest.raises(ValueError, match=r"cannot unpack .*truncated or damaged") as err:
        dm.setup()
    assert str(bad) in str(err.value)
    assert "apt-get install --reinstall dataset-fashion-mnist" in str(err.value)
    # The files before it were staged; of the damaged one, neither a partial nor a whole copy.
    left = sorted(p.name for p in dm.raw_dir.iterdir())
    assert left == ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"]


def test_a_truncated_idx_stream_inside_an_intact_gz_is_caught_after_staging(
    tmp_path: Path,
) -> None:
    system = tmp_path / "system"
    write_idx_dataset(system, n_train=20, n_test=10)
    data = gzip.decompress((system / "train-labels-idx1-ubyte.gz").read_bytes())
    with gzip.open(system / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(data[:-3])
    dm = fashion(tmp_path, system)
    with pytest.raises(ValueError, match=r"truncated: 25 bytes, the header promises 28") as err:
        dm.setup()
    assert str(dm.raw_dir / "train-labels-idx1-ubyte") in str(err.value)


# --- CIFAR pickles ------------------------------------------------------------------------------
def test_a_truncated_cifar_batch_is_named_with_the_fix(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar-10", n_train=50, n_test=20)
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    truncate(bad)
    dm = CIFAR10DataModule(data_dir=str(tmp_path), val_size=10, check_md5=False)
    with pytest.raises(ValueError, match=r"cannot be read \(truncated or damaged\)") as err:
        dm.setup()
    message = str(err.value)
    assert f"{bad}: cannot be unpickled" in message and "data_batch_1" not in message
    assert "extract cifar-10-python.tar.gz" in message and "data.download=true" in message


def test_a_garbled_cifar_test_file_is_named(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar-100", n_train=50, n_test=20)
    bad = tmp_path / "cifar-100-python" / "test"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    dm = CIFAR100DataModule(data_dir=str(tmp_path), val_size=10, check_md5=False)
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        dm.setup()


def test_cifar_labels_out_of_range_are_named(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar-10", n_train=50, n_test=20)
    bad = tmp_path / "cifar-10-batches-py" / "test_batch"
    entry = pickle.loads(bad.read_bytes())
    entry["labels"][5] = 12
    bad.write_bytes(pickle.dumps(entry))
    dm = CIFAR10DataModule(data_dir=str(tmp_path), val_size=10, check_md5=False)
    with pytest.raises(ValueError, match=r"labels from 0 to 12, expected 0..9") as err:
        dm.setup()
    assert str(bad) in str(err.value)


def test_cifar_checksum_failures_name_the_files(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar-10", n_train=50, n_test=20)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    dm = CIFAR10DataModule(data_dir=str(tmp_path), val_size=10, check_md5=True)
    with pytest.raises(FileNotFoundError, match=r"missing: data_batch_4.*MD5 differs") as err:
        dm.setup()
    assert "data_batch_1" in str(err.value) and "data.check_md5=false" in str(err.value)
