"""Deep mutual learning (kdlightning.distill.mutual): the loss against a loop, training,
checkpoints, the job."""

from __future__ import annotations

import functools
import math
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from conftest import compose, read_json, run_job

from kdlightning.data import DigitsDataModule
from kdlightning.distill.mutual import (
    DML,
    MutualLearningModule,
    check_num_students,
    mutual_terms,
)
from kdlightning.job.config import ConfigError, check_config
from kdlightning.job.tasks.image import build_cohort
from kdlightning.models import MLP


def _loop_terms(logits: list[torch.Tensor], y: torch.Tensor, t: float) -> list[tuple]:
    """The paper's eq. 10, sample by sample and class by class in plain Python floats."""
    k, (n, c) = len(logits), logits[0].shape
    rows = [x.tolist() for x in logits]

    def softmax(v: list[float], temp: float) -> list[float]:
        e = [math.exp(a / temp) for a in v]
        return [a / sum(e) for a in e]

    out = []
    for i in range(k):
        labeled = [b for b in range(n) if y[b] >= 0]
        ce = sum(-math.log(softmax(rows[i][b], 1.0)[int(y[b])]) for b in labeled)
        ce /= max(1, len(labeled))
        kl = 0.0
        for j in range(k):
            if j == i:
                continue
            for b in range(n):
                p, q = softmax(rows[j][b], t), softmax(rows[i][b], t)
                kl += t * t * sum(p[a] * (math.log(p[a]) - math.log(q[a])) for a in range(c)) / n
        dml = kl / (k - 1)
        out.append((ce + dml, ce, dml))
    return out


@pytest.mark.parametrize("k", [2, 3])
def test_each_students_loss_is_the_papers_equation_with_unlabeled_samples(k: int) -> None:
    g = torch.Generator().manual_seed(k)
    logits = [torch.randn(5, 4, generator=g, dtype=torch.float64) * 2 for _ in range(k)]
    y = torch.tensor([2, -1, 0, -1, 3])  # -1: unlabeled, no cross-entropy, the KL still applies
    terms = mutual_terms(logits, y, temperature=2.0)
    assert len(terms) == k
    for got, want in zip(terms, _loop_terms(logits, y, 2.0), strict=True):
        for g_term, w_term in zip(got, want, strict=True):
            assert g_term.item() == pytest.approx(w_term, rel=1e-5)
    # a batch with no label at all: cross-entropy 0, not NaN
    none = mutual_terms(logits, torch.full((5,), -1), temperature=2.0)
    assert all(t.ce.item() == 0.0 and t.dml.item() > 0 for t in none)


def test_peers_enter_as_constants() -> None:
    a, b = (torch.randn(4, 3, requires_grad=True) for _ in range(2))
    terms = mutual_terms([a, b], torch.tensor([0, 1, 2, 0]))
    grad_b = torch.autograd.grad(terms[0].loss, [a, b], allow_unused=True)[1]
    assert grad_b is None  # student 0's loss does not move student 1
    with pytest.raises(ValueError, match="at least 2"):
        mutual_terms([a], torch.tensor([0, 1, 2, 0]))


def _students(k: int = 2) -> list[torch.nn.Module]:
    torch.manual_seed(0)
    return [MLP(10, (1, 8, 8), [16]) for _ in range(k)]


def test_a_few_steps_lower_each_students_loss_and_move_every_student(tmp_path: Path) -> None:
    dm = DigitsDataModule(batch_size=64, num_labeled=100, seed=0)
    dm.setup()
    dm.set_train_mode("transfer")
    fast = functools.partial(torch.optim.AdamW, lr=1e-2)
    module = MutualLearningModule(_students(), temperature=1.0, optimizer=fast)
    x, y, _ = next(iter(dm.loader(dm.indexed("train", "transfer"), train=False, shard=False)))
    before_w = [{k: v.clone() for k, v in s.state_dict().items()} for s in module.students]
    with torch.no_grad():
        before = mutual_terms([s(x) for s in module.students], y)
    trainer = L.Trainer(max_steps=30, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(module, datamodule=dm)
    with torch.no_grad():
        after = mutual_terms([s(x) for s in module.students], y)
    for i, (b, a) in enumerate(zip(before, after, strict=True)):
        assert a.loss < 0.9 * b.loss, (i, b.loss, a.loss)
        moved = [
            k
            for k, v in module.students[i].state_dict().items()
            if not torch.equal(v, before_w[i][k])
        ]
        assert moved, f"student {i} did not change"
    logged = trainer.logged_metrics
    assert {"train/loss", "train/ce_loss", "train/dml_loss", "train/loss_1"} <= {
        k.removesuffix("_step").removesuffix("_epoch") for k in logged}  # fmt: skip
    # one optimizer over the whole cohort
    params = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert params == {id(p) for p in module.students.parameters()}


def test_checkpoints_hold_every_student_and_load_back(tmp_path: Path) -> None:
    module = MutualLearningModule(_students(3), temperature=2.0)
    trainer = L.Trainer(max_steps=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    dm = DigitsDataModule(batch_size=32)
    trainer.fit(module, datamodule=dm)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=True)["state_dict"]
    assert {k.split(".")[1] for k in state if k.startswith("students.")} == {"0", "1", "2"}
    fresh = [MLP(10, (1, 8, 8), [16]) for _ in range(3)]
    loaded = MutualLearningModule.load_from_checkpoint(path, students=fresh, weights_only=True)
    assert loaded.temperature == 2.0 and loaded.students[0] is fresh[0]
    for a, b in zip(module.students, loaded.students, strict=True):
        for key, value in a.state_dict().items():
            assert torch.equal(value, b.state_dict()[key]), key
    with pytest.raises(ValueError, match="at least 2 students"):
        MutualLearningModule(fresh[:1])
    with pytest.raises(ValueError, match="distinct"):
        MutualLearningModule([fresh[0], fresh[0]])


def test_student_0_starts_from_the_baselines_weights_and_the_peers_do_not() -> None:
    cfg = SimpleNamespace(seed=3)
    job = SimpleNamespace(cfg=cfg, build=lambda role: MLP(10, (1, 8, 8), [16]))
    cohort = build_cohort(job, 3)  # type: ignore[arg-type]
    L.seed_everything(3)
    baseline = MLP(10, (1, 8, 8), [16])  # what baseline_stage builds after seed_everything(seed)
    pairs = zip(cohort[0].parameters(), baseline.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    for peer in cohort[1:]:
        assert not torch.equal(next(peer.parameters()), next(baseline.parameters()))
    assert not torch.equal(next(cohort[1].parameters()), next(cohort[2].parameters()))


def test_config_refuses_a_cohort_of_one() -> None:
    check_config(compose(["kd=dml"]))
    with pytest.raises(ConfigError, match=r"kd.num_students=1.*at least 2"):
        check_config(compose(["kd=dml", "kd.num_students=1"]))
    for bad in ("abc", 2.5, None):
        with pytest.raises(ValueError, match=r"kd\.num_students"):
            check_num_students(bad)
    assert check_num_students("3") == 3


def test_the_dml_method_checks_its_arguments_and_builds_the_cohorts_module() -> None:
    method = DML(temperature=2.0, num_students=3, alpha=None)
    students = [torch.nn.Linear(4, 3) for _ in range(3)]
    module = method.module(students, num_classes=3)
    assert isinstance(module, MutualLearningModule) and module.temperature == 2.0
    assert list(module.students) == students
    with pytest.raises(ValueError, match="was given 2 students"):
        method.module(students[:2], num_classes=3)
    with pytest.raises(ValueError, match=r"^num_students=1: deep mutual learning needs"):
        DML(temperature=1.0, num_students=1, alpha=None)
    # kd.alpha exists only to be null (experiment=cifar100_dml unsets the recipe's 0.9 with it)
    with pytest.raises(ConfigError, match=r"kd\.alpha=0\.5: deep mutual learning has no alpha"):
        check_config(compose(["kd=dml", "kd.alpha=0.5"]))
    with pytest.raises(ConfigError, match=r"kd\.temperature=0: temperature must be"):
        check_config(compose(["kd=dml", "kd.temperature=0"]))


@pytest.mark.slow
def test_the_job_ships_student_0_of_the_cohort(tmp_path: Path) -> None:
    results, out = run_job(tmp_path, "kd=dml", "kd.num_students=3", "data.num_labeled=100")
    distilled = results["distilled"]
    dml = distilled["dml"]
    assert dml["num_students"] == 3 and len(dml["test_acc"]) == 3
    assert dml["test_acc"][0] == distilled["test/acc"]
    assert {"val/acc_1", "val/acc_2", "val/agreement"} <= set(distilled)
    on_disk = read_json(out / "results.json")
    assert on_disk["distilled"]["test/acc"] == distilled["test/acc"]
    assert on_disk["summary"]["method"] == "dml"
    # student.pt is student 0's state dict: the student config's keys, no "students." prefix
    shipped = torch.load(out / "student.pt", weights_only=True)
    ckpt = torch.load(distilled["checkpoint"], weights_only=True)["state_dict"]
    for key, value in shipped.items():
        assert torch.equal(value, ckpt[f"students.0.{key}"]), key
