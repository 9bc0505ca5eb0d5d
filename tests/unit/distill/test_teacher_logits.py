"""Teacher logits computed once (kd.teacher_logits=cached): alignment, reuse, refusal. (Under
DDP: tests/e2e/test_ddp.py::test_torchrun_two_processes_share_the_given_run_dir.)"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import FAST, compose

from kdlightning.data import CIFAR10DataModule, DigitsDataModule
from kdlightning.distill.modules import DistillationModule
from kdlightning.distill.teacher import compute_teacher_logits
from kdlightning.job import run as train
from kdlightning.job.tasks.image import teacher_logits_mode
from kdlightning.models import MLP, SmallCNN


def test_stored_rows_are_the_teachers_outputs_in_sample_order() -> None:
    dm = DigitsDataModule(seed=1, eval_batch_size=37)  # a batch size that does not divide
    dm.setup()
    teacher = SmallCNN(10, (1, 8, 8), channels=[4, 8], hidden=16, dropout=0.5)
    logits = compute_teacher_logits(teacher, dm)
    assert not teacher.training  # eval mode: dropout off, so outputs are deterministic
    for split in ("train", "val", "test"):
        x = getattr(dm, f"{split}_set").tensors[0]
        with torch.no_grad():
            assert torch.allclose(logits[split], teacher(x), atol=1e-5)


def test_training_looks_up_the_right_rows_under_shuffling_drop_last_and_a_transfer_set(
    tmp_path: Path,
) -> None:
    dm = DigitsDataModule(batch_size=48, num_labeled=40, seed=0)
    dm.setup()
    dm.set_train_mode("transfer")
    teacher = SmallCNN(10, (1, 8, 8), channels=[4, 8], hidden=16, dropout=0.5)
    logits = compute_teacher_logits(teacher, dm)
    module = DistillationModule(teacher, MLP(10, (1, 8, 8), [16]), teacher_logits=logits,
                                verify_cached=True)  # fmt: skip
    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(module, datamodule=dm)  # verify_cached raises on the first misaligned row
    assert trainer.global_step == 2 * (len(dm.train_set) // 48)
    # and the check does fire when rows are misaligned
    shuffled = {k: v[torch.randperm(len(v))] for k, v in logits.items()}
    bad = DistillationModule(teacher, MLP(10, (1, 8, 8), [16]), teacher_logits=shuffled,
                             verify_cached=True)  # fmt: skip
    with pytest.raises(RuntimeError, match="misaligned"):
        trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, default_root_dir=tmp_path)  # fmt: skip
        trainer.fit(bad, datamodule=dm)


def test_modes_auto_cached_online_and_the_refusal_under_augmentation(tmp_path: Path) -> None:
    digits = DigitsDataModule()
    cifar = CIFAR10DataModule(data_dir=str(tmp_path), augment=True)
    plain_cifar = CIFAR10DataModule(data_dir=str(tmp_path), augment=False)
    assert teacher_logits_mode(compose(["kd.teacher_logits=auto"]), digits) == "cached"
    assert teacher_logits_mode(compose(["kd.teacher_logits=auto"]), cifar) == "online"
    assert teacher_logits_mode(compose(["kd.teacher_logits=cached"]), plain_cifar) == "cached"
    assert teacher_logits_mode(compose(["kd.teacher_logits=online"]), digits) == "online"
    with pytest.raises(ValueError, match=r"randomly augmented.*kd.teacher_logits=online"):
        teacher_logits_mode(compose(["kd.teacher_logits=cached"]), cifar)
    with pytest.raises(ValueError, match=r"kd.teacher_logits='sometimes' is not one of"):
        teacher_logits_mode(compose(["kd.teacher_logits=sometimes"]), digits)


def _job(tmp_path: Path, name: str, *overrides: str) -> dict:
    out = tmp_path / name
    cfg = compose([*FAST, f"paths.log_dir={tmp_path / 'logs'}", "logger=none", *overrides], out)
    return train.run(cfg, out)


def test_cached_equals_online_and_a_sweep_reuses_the_stored_logits(tmp_path: Path) -> None:
    online = _job(tmp_path, "online", "kd.teacher_logits=online")
    first = _job(tmp_path, "cached", "kd.teacher_logits=cached")
    second = _job(tmp_path, "cached_t2", "kd.teacher_logits=cached", "kd.temperature=2")
    assert online["distilled"]["teacher_logits"] == {"mode": "online"}
    info1, info2 = first["distilled"]["teacher_logits"], second["distilled"]["teacher_logits"]
    assert info1["mode"] == "cached" and info1["cache"]["hit"] is False
    assert info2["cache"]["hit"] is True and info2["cache"]["key"] == info1["cache"]["key"]
    assert info1["seconds"] >= 0 and first["distilled"]["fit_seconds"] > 0
    # the same teacher outputs, looked up instead of recomputed: the same student, step for step
    for key in ("val/acc", "test/acc", "val/kd_loss", "test/teacher_acc"):
        assert first["distilled"][key] == pytest.approx(online["distilled"][key], abs=1e-6)


def test_a_stored_table_for_other_data_is_refused_naming_rows_and_samples() -> None:
    from kdlightning.distill.teacher import check_logit_rows

    tables = {"train_values": torch.zeros(5, 3, 2), "val": torch.zeros(4, 10)}
    check_logit_rows(tables, {"train": 5, "val": 4}, "entry")
    with pytest.raises(ValueError, match=r"hold 5 rows for the train split, which has 6 samples"):
        check_logit_rows(tables, {"train": 6, "val": 4}, "entry")


def test_auto_is_online_in_a_run_that_sees_a_few_batches() -> None:
    digits = DigitsDataModule()
    assert teacher_logits_mode(compose(["kd.teacher_logits=auto"]), digits) == "cached"
    fast = compose(["kd.teacher_logits=auto", *FAST])  # limit_train_batches=3
    assert teacher_logits_mode(fast, digits) == "online"
    assert teacher_logits_mode(compose(["kd.teacher_logits=cached", *FAST]), digits) == "cached"


def test_the_logit_pass_reports_its_progress_per_split() -> None:
    dm = DigitsDataModule(batch_size=256)
    dm.setup("fit")
    seen: list[tuple[int, str]] = []

    def progress(batches, total, desc):
        seen.append((total, desc))
        return batches

    compute_teacher_logits(MLP(10, (1, 8, 8), [8]), dm, progress=progress)
    assert [d for _, d in seen] == [f"teacher logits ({s})" for s in ("train", "val", "test")]
    assert all(total >= 1 for total, _ in seen)
