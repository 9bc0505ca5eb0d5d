"""CRD (kdlightning/distill/methods/crd.py): its memory banks keyed by sample index, the
negatives it draws, the checkpoint (a resumed run continues exactly), the transfer set and the
whole job. The loss itself: tests/unit/distill/test_losses_methods.py; two processes:
tests/e2e/test_methods_ddp.py."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import CONF_DIR, compose, run_job
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from kdlightning import DistillationModule
from kdlightning.distill.functional import crd_loss
from kdlightning.distill.methods import CRD
from kdlightning.job.build import build_method

N = 64  # training samples: the banks' rows


def models() -> tuple[nn.Module, nn.Module]:
    cfg = compose(["student=cnn"])  # teacher=cnn, student=cnn: conf/kd/crd.yaml's layers
    return tuple(  # type: ignore[return-value]
        instantiate(cfg[r].model, num_classes=10, input_shape=[1, 8, 8], _convert_="all")
        for r in ("teacher", "student")
    )


def crd(teacher: nn.Module, student: nn.Module, **changes: object) -> CRD:
    kd = OmegaConf.merge(OmegaConf.load(CONF_DIR / "kd" / "crd.yaml"), changes)
    method = build_method(kd, teacher, student, (1, 8, 8), N)
    assert isinstance(method, CRD)
    return method


def feats(method: CRD, b: int = 8, seed: int = 0) -> tuple[list, list]:
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(b, method.embed_student.in_features, 1, 1, generator=g)
    return [s], [torch.randn(b, method.embed_teacher.in_features, 1, 1, generator=g)]


def test_the_yaml_builds_the_papers_setting_capped_to_the_data() -> None:
    method = crd(*models())
    assert (method.beta, method.nce_t, method.nce_m, method.kd_weight) == (0.8, 0.07, 0.5, 0.0)
    assert method.nce_k == N - 1  # 16384 negatives asked, the other 63 samples exist
    assert method.embed_student.out_features == method.embed_teacher.out_features == 128
    assert method.bank_student.shape == method.bank_teacher.shape == (N, 128)
    assert (method.student_layers, method.teacher_layers) == (("pool",), ("pool",))
    assert crd(*models(), nce_k=5).nce_k == 5


def test_negatives_are_other_samples_from_a_seeded_stream() -> None:
    method = crd(*models(), nce_k=40)
    index = torch.arange(0, N, 4)
    first = method.negatives(index)
    assert first.shape == (len(index), 40) and method.draws == 1
    assert (first != index[:, None]).all() and first.min() >= 0 and first.max() < N
    second = method.negatives(index)
    assert not torch.equal(first, second)  # a new draw every step
    method.draws = 0  # the same position in the stream: the same draw (resume, DDP ranks)
    assert torch.equal(method.negatives(index), first)


def test_a_step_scores_the_banks_then_moves_the_batchs_rows() -> None:
    method = crd(*models(), nce_k=10)
    s_feats, t_feats = feats(method)
    index = torch.tensor([3, 9, 17, 20, 33, 41, 50, 63])
    before_s, before_t = method.bank_student.clone(), method.bank_teacher.clone()
    stream = method.draws
    _, terms = method.feature_terms(s_feats, t_feats, index)

    # the loss: the functional one on the rows as they were before the step
    s = F.normalize(method.embed_student(s_feats[0].flatten(1)), dim=1)
    t = F.normalize(method.embed_teacher(t_feats[0].flatten(1)), dim=1)
    method.draws = stream
    rows = torch.cat([index[:, None], method.negatives(index)], dim=1)
    want = crd_loss(s, t, before_s, before_t, rows, 0.07)
    assert terms["crd_loss"].item() == pytest.approx(want.loss.item(), rel=1e-6)
    assert torch.equal(method.normalizers, want.normalizers)  # Z from the first batch

    # the batch's rows: normalize(m * old + (1 - m) * new); every other row unchanged
    moved = F.normalize(0.5 * before_s[index] + 0.5 * s.detach(), dim=1)
    assert torch.allclose(method.bank_student[index], moved, atol=1e-6)
    assert torch.allclose(method.bank_teacher[index], F.normalize(
        0.5 * before_t[index] + 0.5 * t.detach(), dim=1), atol=1e-6)  # fmt: skip
    others = torch.ones(N, dtype=torch.bool)
    others[index] = False
    assert torch.equal(method.bank_student[others], before_s[others])
    assert torch.equal(method.bank_teacher[others], before_t[others])

    z = method.normalizers.clone()  # Z stays what the first batch set
    method.feature_terms(*feats(method, seed=1), index)
    assert torch.equal(method.normalizers, z)


def test_crd_needs_the_sample_index_and_one_layer_per_model() -> None:
    method = crd(*models())
    with pytest.raises(ValueError, match=r"crd keys its memory banks by sample: it needs"):
        method.feature_terms(*feats(method), None)
    with pytest.raises(ValueError, match=r"^kd\.student_layers=\['pool', 'features\.6'\]: CRD"):
        crd(*models(), student_layers=["pool", "features.6"],
            teacher_layers=["pool", "features.6"])  # fmt: skip
    bad = [("nce_k", 0, "kd.nce_k=0 must be an integer >= 1"),
           ("nce_t", 0, "kd.nce_t=0 must be a finite number > 0"),
           ("nce_m", 1.5, "kd.nce_m=1.5 must be a finite number in [0, 1]"),
           ("feat_dim", 2.5, "kd.feat_dim=2.5 must be an integer >= 1")]  # fmt: skip
    for key, value, message in bad:
        with pytest.raises(ValueError, match=re.escape(message)):
            crd(*models(), **{key: value})


# --- training: the transfer set, the checkpoint, resume ------------------------------------------
def loaders(unlabeled: bool = True) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (N,), generator=g)
    if unlabeled:
        y[::2] = -1  # a transfer set: half the samples have no label, all have an index
    return DataLoader(TensorDataset(x, y, torch.arange(N)), batch_size=16)  # no shuffle


def module(seed: int = 0) -> DistillationModule:
    """The same teacher (a resumed job reloads the trained one); the student, its heads, banks
    and negatives' stream from ``seed``."""
    torch.manual_seed(0)
    teacher, _ = models()
    torch.manual_seed(seed)
    _, student = models()
    method = crd(teacher, student)
    sgd = functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9)
    return DistillationModule(teacher, student, method=method, optimizer=sgd)


def fit(m: DistillationModule, root: Path, epochs: int, ckpt: str | None = None) -> L.Trainer:
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=root, limit_val_batches=0,
        num_sanity_val_steps=0, enable_checkpointing=False,
    )  # fmt: skip
    trainer.fit(m, loaders(), ckpt_path=ckpt, weights_only=True)  # as the job resumes
    return trainer


def trained_state(m: DistillationModule) -> dict:
    return {k: v.clone() if torch.is_tensor(v) else v for k, v in m.state_dict().items()
            if not k.startswith("teacher.")}  # fmt: skip


def test_checkpoint_holds_the_banks_and_a_resumed_run_continues_exactly(tmp_path: Path) -> None:
    whole = module()
    fit(whole, tmp_path / "whole", epochs=2)

    first = module()
    trainer = fit(first, tmp_path / "first", epochs=1)
    ckpt = tmp_path / "epoch1.ckpt"
    trainer.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    for key in ("bank_student", "bank_teacher", "normalizers", "_extra_state",
                "embed_student.weight", "embed_teacher.weight"):  # fmt: skip
        assert f"method.{key}" in state, key
    assert state["method._extra_state"]["draws"] == 4  # 4 steps, one draw each
    assert bool((state["method.normalizers"] > 0).all())

    resumed = module(seed=1)  # other initial weights, banks and stream: all come from the file
    fit(resumed, tmp_path / "resumed", epochs=2, ckpt=str(ckpt))
    want, got = trained_state(whole), trained_state(resumed)
    assert want.keys() == got.keys()
    for key, value in want.items():
        if torch.is_tensor(value):
            assert torch.equal(value, got[key]), key
        else:
            assert value == got[key], key


def test_the_job_distills_with_crd_on_the_transfer_set(tmp_path: Path) -> None:
    results, out = run_job(tmp_path, "kd=crd", "student=cnn")  # data.num_labeled=100
    assert results["summary"]["method"] == "crd"
    assert results["distilled"]["teacher_logits"]["mode"] == "online"  # auto -> online
    (best,) = (out / "distilled" / "checkpoints").glob("best*.ckpt")
    state = torch.load(best, weights_only=True)["state_dict"]
    dm = instantiate(compose(["student=cnn"]).data)
    dm.setup("fit")
    assert state["method.bank_student"].shape == (len(dm.train_set), 128)  # every sample's row
    assert not any(k.startswith("teacher.") for k in state)
