"""DistillationModule / ClassifierModule: a frozen teacher, cached teacher logits, the optimizer,
checkpoints, metrics, unlabeled samples."""

from __future__ import annotations

import functools
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from kdlightning import ClassifierModule, DistillationModule
from kdlightning.data.base import UNLABELED
from kdlightning.distill.functional import distillation_terms


def teacher_net() -> nn.Module:
    # BatchNorm and Dropout: both would change the teacher if it ever left eval mode.
    return nn.Sequential(
        nn.Flatten(), nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(32, 3),
    )  # fmt: skip


def student_net() -> nn.Module:
    layers = [nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)]
    return nn.Sequential(*layers)


def loaders(n: int = 48, indexed: bool = True) -> tuple[DataLoader, DataLoader]:
    """Batches of ``(x, y, index)`` as kdlightning's data modules serve them, or plain
    ``(x, y)`` as a user's own loaders may (``indexed=False``)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 4, 4, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    ds = TensorDataset(x, y, torch.arange(n)) if indexed else TensorDataset(x, y)
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
    x, y, _ = val_dl.dataset.tensors
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
    train_dl, val_dl = loaders(indexed=False)  # plain (x, y) batches work as well
    t = trainer(tmp_path, max_epochs=3)
    t.fit(module, train_dl, val_dl)
    assert {"train/loss_epoch", "train/acc", "val/loss", "val/acc"} <= set(t.logged_metrics)
    ckpt = torch.load(t.checkpoint_callback.best_model_path, weights_only=False)
    assert all(k.startswith("model.") for k in ckpt["state_dict"])


def test_plain_batches_without_an_index_distill_with_the_live_teacher(tmp_path: Path) -> None:
    module = DistillationModule(teacher_net(), student_net())
    train_dl, val_dl = loaders(indexed=False)
    t = trainer(tmp_path, max_epochs=1)
    t.fit(module, train_dl, val_dl)
    assert "val/teacher_acc" in t.logged_metrics


class MustNotRun(nn.Module):
    """A teacher whose logits were computed beforehand: running it is a bug."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 3)  # parameters, as a real teacher has

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the teacher ran although its logits were given")


def record_logs(module: L.LightningModule, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Call steps outside a Trainer: ``self.log`` stores into the returned dict instead."""
    logged: dict = {}
    monkeypatch.setattr(module, "log", lambda name, value, **kw: logged.__setitem__(name, value))
    return logged


def test_cached_teacher_logits_are_looked_up_by_index_and_the_teacher_never_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 48
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(n, 1, 4, 4, generator=g), torch.randint(0, 3, (n,), generator=g)
    # Rows carry indices in another order than their positions: a lookup by position in the
    # batch (or in the data set) instead of by the index the batch carries gets other rows.
    index = torch.randperm(n, generator=g)
    table = torch.zeros(n, 3)
    table[index] = 5.0 * F.one_hot(y, 3).float()  # a teacher that is right on every sample
    logits = {"train": table, "val": table.clone(), "test": table.clone()}
    module = DistillationModule(MustNotRun(), student_net(), temperature=2.0, alpha=0.5,
                                teacher_logits=logits)  # fmt: skip
    ds = TensorDataset(x, y, index)
    train_dl, eval_dl = DataLoader(ds, batch_size=8, shuffle=True), DataLoader(ds, batch_size=16)
    t = trainer(tmp_path, max_epochs=1)
    t.fit(module, train_dl, eval_dl)  # training_step and validation_step: no teacher call
    assert t.logged_metrics["val/teacher_acc"] == 1.0
    (res,) = t.test(module, eval_dl, verbose=False)
    assert res["test/teacher_acc"] == 1.0
    # the cached logits are non-persistent buffers: never saved with the student
    ckpt = torch.load(t.checkpoint_callback.best_model_path, weights_only=False)
    assert ckpt["state_dict"] and all(k.startswith("student.") for k in ckpt["state_dict"])

    # one training step by hand: the loss is the KD loss against the looked-up rows
    record_logs(module, monkeypatch)
    module.student.eval()  # BatchNorm on running statistics: the same output twice
    rows = torch.tensor([5, 0, 17, 33])
    batch = (x[rows], y[rows], index[rows])
    loss = module.training_step(batch, 0)
    with torch.no_grad():
        expected = distillation_terms(module.student(x[rows]), table[index[rows]], y[rows],
                                      2.0, 0.5).loss  # fmt: skip
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match=r"\(inputs, targets, index\)"):
        module.training_step((x[rows], y[rows]), 0)  # no index: nothing to look up


def test_unlabeled_samples_get_the_distillation_term_only(monkeypatch: pytest.MonkeyPatch) -> None:
    module = DistillationModule(teacher_net(), student_net(), temperature=2.0, alpha=0.5)
    logged = record_logs(module, monkeypatch)
    module.student.eval()
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(8, 1, 4, 4, generator=g), torch.randint(0, 3, (8,), generator=g)

    unlabeled = torch.full_like(y, UNLABELED)
    loss = module.training_step((x, unlabeled, torch.arange(8)), 0)
    assert torch.isfinite(loss) and logged["train/ce_loss_step"].item() == 0.0
    # alpha * KD + (1 - alpha) * 0: the distillation term alone carries the step
    assert loss.item() == pytest.approx(0.5 * logged["train/kd_loss_step"].item(), rel=1e-6)
    loss.backward()
    grads = [p.grad for p in module.student.parameters()]
    assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)

    # half labeled: the cross-entropy is the mean over the labeled half only
    mixed = y.clone()
    mixed[4:] = UNLABELED
    module.training_step((x, mixed, torch.arange(8)), 0)
    with torch.no_grad():
        ce = F.cross_entropy(module.student(x[:4]), y[:4])
    assert logged["train/ce_loss_step"].item() == pytest.approx(ce.item(), rel=1e-5)


@pytest.mark.parametrize(
    ("module_path", "yaml_name"),
    [("kdlightning.distill.modules.DistillationModule", "kd"),
     ("kdlightning.lm.module.LMDistillationModule", "forward_kl")],
)  # fmt: skip
def test_python_api_defaults_are_the_yaml_defaults(module_path: str, yaml_name: str) -> None:
    # One default per hyperparameter (issue 17): a module built in Python without an argument
    # distills as the job with conf/kd/<name>.yaml does.
    import importlib
    import inspect

    from conftest import REPO_ROOT
    from omegaconf import OmegaConf

    module_name, cls_name = module_path.rsplit(".", 1)
    cls = getattr(importlib.import_module(module_name), cls_name)
    yaml = OmegaConf.load(REPO_ROOT / "conf" / "kd" / f"{yaml_name}.yaml")
    params = inspect.signature(cls).parameters
    # set aside by the job's builder: a source (YAML) vs the tensors (Python); the method's name
    # vs the method itself (None: KD from temperature and alpha)
    job_level = {"teacher_logits", "teacher_topk", "method"}
    shared = [k for k in params if k in yaml and k not in job_level
              and params[k].default is not inspect.Parameter.empty]  # fmt: skip
    assert {"temperature", "alpha"} <= set(shared)
    for key in shared:
        assert params[key].default == yaml[key], (cls_name, key, params[key].default, yaml[key])
