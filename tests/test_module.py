"""DistillationModule / ClassifierModule: a frozen teacher, the optimizer, checkpoints, metrics."""

from __future__ import annotations

import functools
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from kdlightning import ClassifierModule, DistillationModule


def teacher_net() -> nn.Module:
    # BatchNorm and Dropout: both would change the teacher if it ever left eval mode.
    return nn.Sequential(
        nn.Flatten(), nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(32, 3),
    )  # fmt: skip


def student_net() -> nn.Module:
    layers = [nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)]
    return nn.Sequential(*layers)


def loaders(n: int = 48) -> tuple[DataLoader, DataLoader]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 4, 4, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    ds = TensorDataset(x, y)
    return DataLoader(ds, batch_size=8, shuffle=True), DataLoader(ds, batch_size=16)


def trainer(tmp_path: Path, **kw) -> L.Trainer:
    opts = dict(
        max_epochs=2, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0,
    )  # fmt: skip
    opts.update(kw)
    return L.Trainer(**opts)


def clone_state(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def test_teacher_is_bit_identical_after_fit_even_after_train(tmp_path: Path) -> None:
    teacher, student = teacher_net(), student_net()
    before = clone_state(teacher)
    module = DistillationModule(teacher, student, temperature=2.0, alpha=0.5)
    module.train()  # what callbacks and user code do
    assert not teacher.training and all(not m.training for m in teacher.modules())
    assert student.training
    student_before = clone_state(student)
    train_dl, val_dl = loaders()
    trainer(tmp_path).fit(module, train_dl, val_dl)
    module.train()
    assert not teacher.training
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, before[key]), f"teacher tensor {key} moved"
    assert any(not torch.equal(v, student_before[k]) for k, v in student.state_dict().items())
    assert all(not p.requires_grad for p in teacher.parameters())


def test_optimizer_holds_exactly_the_student_parameters() -> None:
    teacher, student = teacher_net(), student_net()
    module = DistillationModule(
        teacher, student, optimizer=functools.partial(torch.optim.SGD, lr=0.1)
    )
    opt = module.configure_optimizers()
    assert isinstance(opt, torch.optim.SGD)
    in_opt = {id(p) for group in opt.param_groups for p in group["params"]}
    assert in_opt == {id(p) for p in student.parameters()}
    assert opt.param_groups[0]["lr"] == 0.1


def test_default_optimizer_and_scheduler_factory() -> None:
    module = DistillationModule(
        teacher_net(),
        student_net(),
        scheduler=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1),
    )
    conf = module.configure_optimizers()
    assert isinstance(conf["optimizer"], torch.optim.AdamW)
    assert conf["optimizer"].param_groups[0]["lr"] == pytest.approx(1e-3)
    assert isinstance(conf["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.StepLR)


def test_checkpoint_holds_the_student_only_and_reloads(tmp_path: Path) -> None:
    teacher, student = teacher_net(), student_net()
    module = DistillationModule(teacher, student, temperature=3.0, alpha=0.7)
    train_dl, val_dl = loaders()
    t = trainer(tmp_path, max_epochs=1)
    t.fit(module, train_dl, val_dl)
    path = tmp_path / "kd.ckpt"
    t.save_checkpoint(path)

    ckpt = torch.load(path, weights_only=False)
    keys = list(ckpt["state_dict"])
    assert keys and all(k.startswith("student.") for k in keys)
    assert "teacher" not in ckpt["hyper_parameters"]
    # the teacher is not pickled anywhere in the file
    assert "teacher" not in str(ckpt.get("hyper_parameters"))

    fresh_teacher, fresh_student = teacher_net(), student_net()
    fresh_teacher.load_state_dict(teacher.state_dict())
    reloaded = DistillationModule.load_from_checkpoint(
        path, teacher=fresh_teacher, student=fresh_student
    )
    assert reloaded.temperature == 3.0 and reloaded.alpha == 0.7
    for k, v in student.state_dict().items():
        assert torch.equal(fresh_student.state_dict()[k], v)
    # the live teacher was kept, not overwritten by anything from the file
    for k, v in teacher.state_dict().items():
        assert torch.equal(fresh_teacher.state_dict()[k], v)


def test_reload_with_a_different_student_fails_strictly(tmp_path: Path) -> None:
    module = DistillationModule(teacher_net(), student_net())
    t = trainer(tmp_path, max_epochs=1)
    train_dl, val_dl = loaders()
    t.fit(module, train_dl, val_dl)
    path = tmp_path / "kd.ckpt"
    t.save_checkpoint(path)
    other = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    with pytest.raises(RuntimeError, match=r"Missing key|Unexpected key"):
        DistillationModule.load_from_checkpoint(path, teacher=teacher_net(), student=other)


def test_logged_metric_keys(tmp_path: Path) -> None:
    module = DistillationModule(teacher_net(), student_net())
    train_dl, val_dl = loaders()
    t = trainer(tmp_path, max_epochs=1)
    t.fit(module, train_dl, val_dl)
    logged = set(t.logged_metrics)
    assert {"train/loss_epoch", "train/kd_loss_epoch", "train/ce_loss_epoch"} <= logged
    assert {"val/acc", "val/teacher_acc", "val/agreement", "val/kd_loss", "val/loss"} <= logged
    (test,) = t.test(module, val_dl, verbose=False)
    assert set(test) == {
        f"test/{k}" for k in ("acc", "teacher_acc", "agreement", "kd_loss", "loss")
    }


def test_eval_metrics_match_hand_computation(tmp_path: Path) -> None:
    teacher, student = teacher_net(), student_net()
    module = DistillationModule(teacher, student, temperature=2.0)
    _, val_dl = loaders()
    (res,) = trainer(tmp_path).test(module, val_dl, verbose=False)
    teacher.eval()
    student.eval()
    x, y = val_dl.dataset.tensors
    with torch.no_grad():
        s, te = student(x), teacher(x)
    assert res["test/acc"] == pytest.approx((s.argmax(1) == y).float().mean().item(), abs=1e-6)
    assert res["test/teacher_acc"] == pytest.approx((te.argmax(1) == y).float().mean().item())
    agree = (s.argmax(1) == te.argmax(1)).float().mean().item()
    assert res["test/agreement"] == pytest.approx(agree, abs=1e-6)


def test_teacher_forward_has_no_graph() -> None:
    module = DistillationModule(teacher_net(), student_net())
    out = module.teacher_logits(torch.randn(4, 1, 4, 4))
    assert not out.requires_grad


@pytest.mark.parametrize(("kw", "match"), [({"temperature": 0}, "temperature"),
                                           ({"alpha": 2}, "alpha")])  # fmt: skip
def test_bad_hyperparameters_fail_at_construction(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DistillationModule(teacher_net(), student_net(), **kw)


def test_classifier_module_trains_and_logs(tmp_path: Path) -> None:
    model = student_net()
    module = ClassifierModule(model, optimizer=functools.partial(torch.optim.SGD, lr=0.5))
    assert module.num_classes == 3
    train_dl, val_dl = loaders()
    t = trainer(tmp_path, max_epochs=3)
    t.fit(module, train_dl, val_dl)
    assert {"train/loss_epoch", "train/acc", "val/loss", "val/acc"} <= set(t.logged_metrics)
    ckpt = torch.load(t.checkpoint_callback.best_model_path, weights_only=False)
    assert all(k.startswith("model.") for k in ckpt["state_dict"])
