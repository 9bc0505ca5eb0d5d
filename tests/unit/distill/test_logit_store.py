"""kdlightning.distill.logit_store: stored layouts, memory-mapped lookups, the top-k teacher's
loss against an explicit recomputation, and the start-up checks of kd.logits_topk/_dtype."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import compose

from kdlightning.data import DigitsDataModule
from kdlightning.distill.functional import kd_loss
from kdlightning.distill.logit_store import (
    LogitTable,
    check_dtype,
    check_topk,
    open_tables,
    save_tables,
    tables,
    to_layout,
)
from kdlightning.distill.modules import DistillationModule
from kdlightning.distill.teacher import compute_teacher_logits
from kdlightning.job.cache import DamagedEntry, load_entry, store_entry
from kdlightning.job.config import check_config
from kdlightning.job.errors import ConfigError
from kdlightning.models import MLP, SmallCNN


def _explicit_topk_kd(s: torch.Tensor, t: torch.Tensor, k: int, temp: float) -> torch.Tensor:
    """T^2 * mean_n sum_{j in top-k(t_n)} q_j (log q_j - log softmax(s_n / T)_j), with q the
    teacher's softmax at T renormalized over its k largest logits: written out, sample by
    sample, independently of the dense -inf reconstruction the module uses."""
    total = torch.zeros(())
    for s_n, t_n in zip(s, t, strict=True):
        kept = torch.argsort(t_n, descending=True)[:k]
        w = torch.exp(t_n[kept] / temp)
        q = w / w.sum()
        log_p_s = s_n / temp - torch.logsumexp(s_n / temp, dim=0)
        total = total + (q * (torch.log(q) - log_p_s[kept])).sum()
    return temp * temp * total / s.shape[0]


@pytest.mark.parametrize(("k", "temp"), [(1, 1.0), (3, 2.0), (5, 4.0)])
def test_topk_kd_loss_and_gradient_match_the_explicit_recomputation(k: int, temp: float) -> None:
    g = torch.Generator().manual_seed(k)
    s = torch.randn(6, 10, generator=g, dtype=torch.float64).float().requires_grad_(True)
    t = 3 * torch.randn(6, 10, generator=g)
    table = tables(to_layout({"train": t}, topk=k), num_classes=10)["train"]
    rows = torch.arange(6)
    got = kd_loss(s, table.lookup(rows), temp)
    (grad,) = torch.autograd.grad(got, s)
    s2 = s.detach().clone().requires_grad_(True)
    want = _explicit_topk_kd(s2, t, k, temp)
    (want_grad,) = torch.autograd.grad(want, s2)
    assert got.item() == pytest.approx(want.item(), rel=1e-5, abs=1e-6)
    assert torch.allclose(grad, want_grad, atol=1e-6)
    # the dropped classes get no mass: not a "rest" bucket (the student's grad there is T*p_s/N)
    dropped = table.lookup(rows) == -math.inf
    assert dropped.sum() == 6 * (10 - k)
    p_s = F.softmax(s.detach() / temp, dim=-1)
    assert torch.allclose(grad[dropped], (temp * p_s / 6)[dropped], atol=1e-6)


def test_top_c_is_the_full_teacher_and_rows_are_in_sample_order() -> None:
    t, s = torch.randn(7, 4), torch.randn(7, 4)
    full = tables(to_layout({"val": t}), 4)["val"]
    top = tables(to_layout({"val": t}, topk=4), 4)["val"]
    rows = torch.tensor([6, 0, 3])
    assert torch.equal(full.lookup(rows), t[rows])
    assert torch.allclose(top.lookup(rows), t[rows])
    assert kd_loss(s[rows], top.lookup(rows), 2.0) == pytest.approx(
        kd_loss(s[rows], t[rows], 2.0).item(), rel=1e-6
    )
    assert top.topk == 4 and full.topk is None and len(top) == 7


def test_layouts_sizes_and_dtypes() -> None:
    t = torch.randn(100, 1000)
    assert to_layout({"train": t})["train"].dtype == torch.float32
    half = to_layout({"train": t}, dtype="float16")["train"]
    assert half.dtype == torch.float16 and torch.allclose(half.float(), t, rtol=1e-3, atol=1e-4)
    top = to_layout({"train": t}, dtype="float16", topk=5)
    assert top["train_values"].shape == (100, 5) and top["train_indices"].dtype == torch.int16
    layouts = {"f32": to_layout({"train": t}), "f16": {"train": half}, "top5": top}
    sizes = {name: tables(x, 1000)["train"].nbytes for name, x in layouts.items()}
    assert sizes == {"f32": 400_000, "f16": 200_000, "top5": 100 * 5 * (2 + 2)}


def test_a_saved_store_is_mapped_back_and_pickles_as_its_path(tmp_path: Path) -> None:
    t = torch.randn(50, 10)
    path = tmp_path / "logits.safetensors"
    save_tables(to_layout({"train": t, "val": t[:5]}, topk=3), path)
    stored = tables(open_tables(path), 10, str(path))
    rows = torch.tensor([4, 49, 0])
    assert torch.equal(stored["train"].lookup(rows).topk(3).values, t[rows].topk(3).values)
    blob = pickle.dumps(stored["train"])
    assert len(blob) < 2000  # the path, not the 50 x 3 values and indices
    again = pickle.loads(blob)
    assert torch.equal(again.lookup(rows), stored["train"].lookup(rows))
    in_ram = LogitTable(10, full=t)
    assert torch.equal(pickle.loads(pickle.dumps(in_ram)).lookup(rows), t[rows])


def test_a_safetensors_cache_entry_is_checksummed_and_a_tampered_one_refused(
    tmp_path: Path,
) -> None:
    entry = tmp_path / "logits" / "abc"
    entry.parent.mkdir(parents=True)
    stored = to_layout({"train": torch.randn(8, 3)}, dtype="float16")
    store_entry(entry, stored, {}, {"kind": "logits"}, fmt="safetensors")
    assert not (entry / "tensors.pt").exists()
    tensors, _, meta = load_entry(entry)
    assert torch.equal(tensors["train"], stored["train"]) and "tensors.safetensors" in meta["files"]
    blob = bytearray((entry / "tensors.safetensors").read_bytes())
    blob[-1] ^= 1
    (entry / "tensors.safetensors").write_bytes(bytes(blob))
    with pytest.raises(DamagedEntry, match=r"tensors\.safetensors does not match its checksum"):
        load_entry(entry)


def test_verify_cached_passes_on_aligned_topk_float16_rows_and_fires_on_shuffled(
    tmp_path: Path,
) -> None:
    dm = DigitsDataModule(batch_size=64, num_labeled=40, seed=0)
    dm.setup()
    dm.set_train_mode("transfer")
    teacher = SmallCNN(10, (1, 8, 8), channels=[4, 8], hidden=16, dropout=0.5)
    logits = to_layout(compute_teacher_logits(teacher, dm), dtype="float16", topk=3)

    def fit(stored: dict[str, torch.Tensor]) -> None:
        module = DistillationModule(teacher, MLP(10, (1, 8, 8), [16]), verify_cached=True,
                                    teacher_logits=tables(stored, 10))  # fmt: skip
        L.Trainer(max_steps=3, logger=False, enable_checkpointing=False, limit_val_batches=2,
                  enable_progress_bar=False, default_root_dir=tmp_path).fit(module, dm)  # fmt: skip

    fit(logits)  # verify_cached raises on the first misaligned row
    perm = torch.randperm(len(logits["train_values"]))
    shuffled = {**logits, "train_values": logits["train_values"][perm],
                "train_indices": logits["train_indices"][perm]}  # fmt: skip
    with pytest.raises(RuntimeError, match="misaligned"):
        fit(shuffled)


@pytest.mark.parametrize("k", [0, -2, True, 2.5, "3"])
def test_a_bad_topk_is_named_with_the_fix(k: object) -> None:
    with pytest.raises(ValueError, match=r"kd.logits_topk=.* must be a positive integer"):
        check_topk(k)


def test_topk_above_the_class_count_and_an_unknown_dtype_are_refused() -> None:
    assert check_topk(10, 10) == 10 and check_topk(None, 10) is None
    with pytest.raises(ValueError, match=r"kd.logits_topk=11 exceeds the data's 10 classes"):
        check_topk(11, 10)
    with pytest.raises(ValueError, match=r"kd.logits_dtype='float8' is not one of float32"):
        check_dtype("float8")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["kd.logits_topk=3", "kd.teacher_logits=online"], r"kd.teacher_logits=online runs"),
        (["kd=dkd", "kd.logits_topk=3"], r"kd.logits_topk=3 with kd=dkd: the top-k teacher"),
        (["kd.logits_topk=3", "kd.standardize=true"], r"and kd.standardize=true"),
        (["kd.logits_topk=0"], r"kd.logits_topk=0 must be a positive integer"),
        (["kd.logits_dtype=bf16"], r"kd.logits_dtype='bf16' is not one of"),
    ],
)
def test_the_config_check_refuses_topk_where_it_cannot_work(
    overrides: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        check_config(compose(overrides))


def test_the_config_check_accepts_topk_and_float16() -> None:
    check_config(compose(["kd.logits_topk=5", "kd.logits_dtype=float16"]))


def test_a_topk_above_the_class_count_stops_the_job_before_the_teacher(tmp_path: Path) -> None:
    from conftest import run_job

    with pytest.raises(ValueError, match=r"kd.logits_topk=11 exceeds the data's 10 classes"):
        run_job(tmp_path, "kd.logits_topk=11")
    assert not (tmp_path / "job" / "teacher").exists()


def test_a_small_table_moves_to_the_batches_device_a_large_one_stays(monkeypatch) -> None:
    """With batches on a GPU (data.on_device), a host-side table would cost a host round trip per
    step; a table up to DEVICE_RESIDENT_BYTES moves at its first lookup there. The "meta"
    device stands in for a GPU (shapes and devices, no data)."""
    from kdlightning.distill import logit_store

    logits = torch.randn(6, 4)
    small = logit_store.LogitTable(4, full=logits.clone())
    rows = torch.tensor([3, 0], device="meta")
    out = small.lookup(rows)
    assert out.device.type == "meta" and out.shape == (2, 4)
    assert small.full.device.type == "meta"  # stays there for the next lookups
    monkeypatch.setattr(logit_store, "DEVICE_RESIDENT_BYTES", logits.numel() * 4 - 1)
    large = logit_store.LogitTable(4, full=logits.clone())
    torch.testing.assert_close(large.lookup(torch.tensor([3, 0])), logits[[3, 0]])
    with pytest.raises((NotImplementedError, RuntimeError)):  # the rows must come to the host
        large.lookup(rows)  # (a meta index cannot: on a GPU it is the copy the small one avoids)
    assert large.full.device.type == "cpu"
