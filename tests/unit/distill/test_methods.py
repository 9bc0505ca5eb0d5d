"""kdlightning.distill.methods behind ``kd=<method>``: configs (each names its class), start-up
errors, the builder (kdlightning.job.build.build_method), the composition of each method's loss,
a short training run per method with a frozen teacher, and one whole job."""

from __future__ import annotations

import functools
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import CONF_DIR, compose, run_job
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from kdlightning import DistillationModule
from kdlightning.data import DigitsDataModule
from kdlightning.distill.functional import dist_loss, dkd_loss, kd_loss, standardize_logits
from kdlightning.distill.methods import KD, Method, MethodOutput
from kdlightning.job.build import build_method, method_class
from kdlightning.job.cache import cache_key
from kdlightning.job.config import ConfigError, check_config
from kdlightning.job.tasks.image import teacher_logits_mode


def kd_file(method: str, **changes: object) -> DictConfig:
    cfg = OmegaConf.load(CONF_DIR / "kd" / f"{method}.yaml")
    return OmegaConf.merge(cfg, changes)


#: The image-classification methods: the conf/kd files whose class is in
#: kdlightning.distill.methods (a new method's file is picked up here by itself).
METHODS = sorted(
    p.stem for p in (CONF_DIR / "kd").glob("*.yaml")
    if str(OmegaConf.load(p).get("_target_", "")).startswith("kdlightning.distill.methods.")
)  # fmt: skip
NUM_TRAIN = 256  # digits_loaders' training split: the size CRD's memory banks are built for


@pytest.fixture(scope="module")
def models_cfg() -> DictConfig:
    """teacher=cnn, student=cnn as the job composes them (the conf/kd layer paths' target)."""
    return compose(["student=cnn"])


def build(cfg: DictConfig, role: str) -> nn.Module:
    return instantiate(cfg[role].model, num_classes=10, input_shape=[1, 8, 8], _convert_="all")


# --- configs and start-up errors -----------------------------------------------------------------
@pytest.mark.parametrize("method", [*METHODS, "dml"])
def test_every_kd_file_composes_and_passes_the_checks(method: str) -> None:
    cfg = compose([f"kd={method}", "student=cnn"])
    assert cfg.kd.method == method
    check_config(cfg)


#: Every conf/kd file: the image methods, deep mutual learning, the language-model methods.
ALL_KD = sorted(p.stem for p in (CONF_DIR / "kd").glob("*.yaml"))


@pytest.mark.parametrize("method", ALL_KD)
def test_each_kd_file_names_its_class_and_holds_every_default(method: str) -> None:
    """The YAML is the only source of the hyperparameters: every constructor argument that the
    job does not supply is in the file, and the class has no default for it."""
    import inspect

    kd = kd_file(method)
    cls = method_class(kd)
    assert cls.name == method == kd.method
    assert issubclass(cls, Method) == (method in METHODS)
    if not cls.needs_features:  # feature methods probe models: built in the tests below
        build_method(kd, num_train=NUM_TRAIN)
    for key, param in inspect.signature(cls).parameters.items():
        if key in ("teacher", "student", "input_shape", "num_train"):
            continue
        assert key in kd, f"conf/kd/{method}.yaml lacks {key}"
        assert param.default is inspect.Parameter.empty, f"{cls.__name__}({key}=...) has a default"


def test_the_builder_sets_aside_the_job_keys_and_names_bad_keys() -> None:
    method = build_method(kd_file("kd", temperature=3.0, teacher_logits="cached"))
    assert isinstance(method, KD) and method.temperature == 3.0 and method.kd_weight == 0.5
    with pytest.raises(ValueError, match=r"^kd\.alpha=2: alpha must lie in \[0, 1\]"):
        build_method(kd_file("kd", alpha=2))
    with pytest.raises(ValueError, match=r"kd\.gamma is not a setting of kd=kd \(KD takes: "):
        build_method(kd_file("kd", gamma=1.0))
    without = kd_file("dkd")
    del without["beta"]
    with pytest.raises(ValueError, match=r"kd.method=dkd needs kd.beta; set kd.beta=\.\.\."):
        build_method(without)
    with pytest.raises(ValueError, match=r"no kd\._target_"):
        build_method({"method": "kd", "temperature": 2.0, "alpha": 0.5})
    # the class's own error, outside the job: the argument's name without "kd."
    with pytest.raises(ValueError, match=r"^temperature=0: temperature must be a finite"):
        KD(temperature=0, alpha=0.5, standardize=False)


def test_the_default_is_vanilla_kd_with_the_chosen_values() -> None:
    kd = compose([]).kd
    assert (kd.method, kd.temperature, kd.alpha, kd.standardize) == ("kd", 2.0, 0.5, False)


def test_an_unknown_method_fails_at_start_up_naming_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as info:
        check_config(compose(["kd.method=fitnets"]))
    assert "kd.method='fitnets' is not a known" in str(info.value)
    assert all(m in str(info.value) for m in [*METHODS, "dml"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["kd=at", "kd.teacher_logits=cached"], "kd.teacher_logits=cached with kd=at"),
        (["kd=at"], "the student (MLP) has no module 'features.3'"),  # default student=mlp
        (["kd=rkd", "kd.teacher_layers=[poool]"], "closest: pool"),
        (["kd=fitnet", "kd.student_layers=[features.7]", "kd.teacher_layers=[features.3]"],
         "the student's map is smaller than the teacher's ((2, 2) < (4, 4))"),
        (["kd=fitnet", "kd.student_layers=[pool]", "kd.teacher_layers=[head.1]"],
         "no connector maps one to the other"),
        (["kd=at", "kd.student_layers=[head.1,features.7]"], "attention transfer needs feature"),
        (["kd=at", "kd.student_layers=[features.3]"], "pair up in order"),
        (["kd=dkd", "kd.beta=-1"], "kd.beta=-1 must be a finite number >= 0"),
        (["kd=pkt", "kd.alpha=1.5"], "kd.alpha=1.5: alpha must lie in [0, 1]"),
        (["kd=at", "kd.p=0"], "kd.p=0 must be a finite number > 0"),
        (["kd=dkd", "kd.standardize=maybe"], "kd.standardize='maybe' must be true or false"),
        (["kd=fitnet", "kd.student_layers=[]"], "must be a non-empty list of module paths"),
    ],
)  # fmt: skip
def test_bad_method_settings_stop_the_job_before_any_training(
    overrides: list[str], message: str
) -> None:
    student = [] if "features.3'" in message else ["student=cnn"]
    with pytest.raises(ConfigError) as info:
        check_config(compose([*overrides, *student]))
    assert message in str(info.value)


def test_feature_methods_get_the_teacher_online_and_refuse_cached_logits() -> None:
    digits = DigitsDataModule()  # no augmentation: auto would cache a logit method's teacher
    assert teacher_logits_mode(compose(["kd=kd", "kd.teacher_logits=auto"]), digits) == "cached"
    assert teacher_logits_mode(compose(["kd=at", "kd.teacher_logits=auto"]), digits, True) == (
        "online"
    )
    with pytest.raises(ValueError, match=r"kd.teacher_logits=cached with kd=at: at reads"):
        teacher_logits_mode(compose(["kd=at", "kd.teacher_logits=cached"]), digits, True)


def test_teacher_and_baseline_cache_keys_do_not_depend_on_the_method() -> None:
    one, other = compose(["kd=kd"]), compose(["kd=fitnet", "kd.beta=7"])
    for stage in ("teacher", "baseline"):
        assert cache_key(one, stage) == cache_key(other, stage)


def test_sweep_over_methods_with_the_temperature_alpha_grid_composes() -> None:
    cfg = compose(["kd=dkd", "+sweep=temperature_alpha"])
    assert cfg.kd.method == "dkd" and cfg.kd.beta == 8.0


# --- the losses each method composes -------------------------------------------------------------
def logits_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(8, 10, generator=g), 3 * torch.randn(8, 10, generator=g)
    y = torch.randint(0, 10, (8,), generator=g)
    y[5:] = -1  # a transfer set: three unlabeled samples
    return s, t, y


def test_logit_methods_compose_their_papers_terms() -> None:
    s, t, y = logits_batch()
    ce = F.cross_entropy(s[:5], y[:5])
    out: MethodOutput = build_method(kd_file("kd"))(s, t, y)
    assert out.loss.item() == pytest.approx((0.5 * kd_loss(s, t, 2.0) + 0.5 * ce).item(), rel=1e-6)

    # DKD: CE weight 1, warm-up 1/20 in the first epoch, 3/20 in the third; unlabeled samples
    # decoupled around the teacher's top-1 class
    y_dkd = torch.where(y >= 0, y, t.argmax(1))
    dkd = dkd_loss(s, t, y_dkd, 1.0, 8.0, 4.0)
    method = build_method(kd_file("dkd"))
    assert method(s, t, y).loss.item() == pytest.approx((ce + dkd / 20).item(), rel=1e-6)
    out = method(s, t, y, epoch=2)
    assert out.loss.item() == pytest.approx((ce + 3 * dkd / 20).item(), rel=1e-6)
    assert set(out.terms) == {"dkd_loss", "ce_loss"}

    out = build_method(kd_file("dist"))(s, t, y)
    assert out.loss.item() == pytest.approx((ce + dist_loss(s, t)).item(), rel=1e-6)

    z_s, z_t = standardize_logits(s), standardize_logits(t)
    out = build_method(kd_file("ls_kd"))(s, t, y)
    expected = 0.1 * ce + 9 * kd_loss(z_s, z_t, 2.0)  # CE on the raw logits, KD on z-scores
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    out = build_method(kd_file("dkd", standardize=True, warmup_epochs=0))(s, t, y)
    assert out.loss.item() == pytest.approx((ce + dkd_loss(z_s, z_t, y_dkd)).item(), rel=1e-6)


def test_feature_methods_are_built_from_the_layer_shapes(models_cfg: DictConfig) -> None:
    teacher, student = build(models_cfg, "teacher"), build(models_cfg, "student")
    fitnet = build_method(kd_file("fitnet"), teacher, student, (1, 8, 8))
    conv, bn = fitnet.connectors[0]  # (16, 4, 4) -> (64, 4, 4): 1x1 conv + BatchNorm
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, bn.num_features) == (
        16, 64, (1, 1), 64)  # fmt: skip
    same = build_method(kd_file("fitnet", teacher_layers=["features.6"]), student, student,
                        (1, 8, 8))  # fmt: skip
    assert isinstance(same.connectors[0], nn.Identity)
    vec = build_method(kd_file("fitnet", student_layers=["head.1"], teacher_layers=["head.1"]),
                       teacher, student, (1, 8, 8))  # fmt: skip
    assert isinstance(vec.connectors[0], nn.Linear) and vec.connectors[0].out_features == 256
    at = build_method(kd_file("at"), teacher, student, (1, 8, 8))
    assert at.student_layers == ("features.3", "features.7") and not list(at.parameters())
    with pytest.raises(ValueError, match="build it with the teacher"):
        build_method(kd_file("pkt"))
    with pytest.raises(ValueError, match="build it with num_train"):
        build_method(kd_file("crd"), teacher, student, (1, 8, 8))


# --- a short training run per method -------------------------------------------------------------
def digits_loaders() -> tuple[DataLoader, DataLoader]:
    x, y = load_digits(return_X_y=True)
    x = torch.tensor((x - x.mean()) / x.std(), dtype=torch.float32).reshape(-1, 1, 8, 8)[:320]
    y = torch.tensor(y)[:320]
    y_train = y.clone()
    y_train[::2] = -1  # half the training set unlabeled: the transfer-set path of every method
    train = TensorDataset(x[:256], y_train[:256], torch.arange(256))
    val = TensorDataset(x[256:], y[256:], torch.arange(64))
    g = torch.Generator().manual_seed(0)
    return DataLoader(train, 32, shuffle=True, drop_last=True, generator=g), DataLoader(val, 64)


def clone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class StepLosses(L.Callback):
    """The training loss of every step, as the method computed it."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


@pytest.mark.parametrize("method", list(METHODS))
def test_each_method_trains_the_student_and_leaves_the_teacher_alone(
    method: str, models_cfg: DictConfig, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    teacher, student = build(models_cfg, "teacher"), build(models_cfg, "student")
    kd = kd_file(method, warmup_epochs=0) if method == "dkd" else kd_file(method)
    module = DistillationModule(
        teacher, student, method=build_method(kd, teacher, student, (1, 8, 8), NUM_TRAIN),
        optimizer=functools.partial(torch.optim.AdamW, lr=3e-3),
    )  # fmt: skip
    train_dl, val_dl = digits_loaders()
    teacher_before, steps = clone_state(teacher), StepLosses()
    trainer = L.Trainer(
        max_steps=24, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0,
        limit_val_batches=1, callbacks=[steps],
    )  # fmt: skip
    trainer.fit(module, train_dl, val_dl)
    # CRD: from the second epoch on (8 steps of 32 of the 256 samples), when every row of its
    # memory banks holds an embedding instead of its random start, its loss has something to fall to
    start = 8 if method == "crd" else 0
    first, last = sum(steps.losses[start : start + 4]) / 4, sum(steps.losses[-4:]) / 4
    assert len(steps.losses) == 24 and last < first, f"{method}: loss {first:.4f} -> {last:.4f}"
    for key, value in teacher.state_dict().items():  # bit-identical, BatchNorm buffers included
        assert torch.equal(value, teacher_before[key]), f"teacher {key} moved under {method}"
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    logged = set(trainer.logged_metrics)
    assert {"train/loss_epoch", "train/ce_loss_epoch", "val/kd_loss", "val/acc"} <= logged
    name = {"kd": "kd", "ls_kd": "kd", "fitnet": "hint", "rkd": "rkd_angle"}.get(method, method)
    assert f"train/{name}_loss_epoch" in logged

    # the optimizer holds the student's and the method's parameters (connectors), never the
    # teacher's; the checkpoint holds the student and the connectors, never the teacher
    opt = module.configure_optimizers()
    in_opt = {id(p) for group in opt.param_groups for p in group["params"]}
    own = [*student.parameters(), *module.method.parameters()]
    assert in_opt == {id(p) for p in own}
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    keys = set(torch.load(path, weights_only=True)["state_dict"])
    method_keys = {k for k in keys if k.startswith("method.")}
    assert keys - method_keys == {f"student.{k}" for k in student.state_dict()}
    assert method_keys == {f"method.{k}" for k in module.method.state_dict()}
    assert bool(method_keys) == (method in ("fitnet", "crd"))  # connectors; heads and banks


def test_a_checkpoint_reloads_the_connectors(models_cfg: DictConfig, tmp_path: Path) -> None:
    teacher, student = build(models_cfg, "teacher"), build(models_cfg, "student")
    method = build_method(kd_file("fitnet"), teacher, student, (1, 8, 8))
    module = DistillationModule(teacher, student, method=method)
    with torch.no_grad():
        for p in method.parameters():
            p.add_(1.0)
    trainer = L.Trainer(max_steps=0, logger=False, enable_progress_bar=False,
                        default_root_dir=tmp_path)  # fmt: skip
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    fresh_student = build(models_cfg, "student")
    fresh = build_method(kd_file("fitnet"), teacher, fresh_student, (1, 8, 8))
    DistillationModule.load_from_checkpoint(
        tmp_path / "m.ckpt", teacher=teacher, student=fresh_student, method=fresh,
        weights_only=True,
    )  # fmt: skip
    for (k, v), w in zip(method.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(v, w), k


def test_cached_teacher_logits_are_refused_for_a_feature_method(models_cfg: DictConfig) -> None:
    teacher, student = build(models_cfg, "teacher"), build(models_cfg, "student")
    method = build_method(kd_file("pkt"), teacher, student, (1, 8, 8))
    with pytest.raises(ValueError, match=r"use kd\.teacher_logits=online"):
        DistillationModule(teacher, student, method=method,
                           teacher_logits={"train": torch.zeros(4, 10)})  # fmt: skip


# --- the whole job -------------------------------------------------------------------------------
def test_the_job_distills_with_a_feature_method(tmp_path: Path) -> None:
    results, out = run_job(tmp_path, "kd=fitnet", "student=cnn")
    assert results["summary"]["method"] == "fitnet"
    assert results["distilled"]["teacher_logits"]["mode"] == "online"  # auto -> online
    # student.pt: the deployable student alone, loadable strictly into a fresh one
    cfg = compose(["student=cnn"])
    state = torch.load(out / "student.pt", weights_only=True)
    build(cfg, "student").load_state_dict(state, strict=True)
    (best,) = (out / "distilled" / "checkpoints").glob("best*.ckpt")
    keys = torch.load(best, weights_only=True)["state_dict"]
    assert any(k.startswith("method.connectors.") for k in keys)
    assert not any(k.startswith("teacher.") for k in keys)
