"""conf/experiment/: composition (the published CIFAR recipe, written once in cifar100_base) and
a few steps of each on tiny files in the official formats."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, run_job
from conftest import compose as compose_job
from fake_files import write_cifar, write_idx_dataset
from omegaconf import OmegaConf

from kdlightning.distill.hooks import check_paths
from kdlightning.distill.modules import DistillationModule
from kdlightning.distill.mutual import MutualLearningModule
from kdlightning.job.build import build_method
from kdlightning.job.config import check_config
from kdlightning.models import cifar_model
from kdlightning.models.cifar import CIFAR_MODELS

CIFAR_EXPERIMENTS = {
    "cifar100_resnet32x4_resnet8x4": ("resnet32x4", "resnet8x4"),
    "cifar100_wrn40_2_wrn16_2": ("wrn_40_2", "wrn_16_2"),
}


def composed(*overrides: str):
    """The job's config (conftest.compose: each override list composed once per process)."""
    return compose_job(list(overrides))


def _assert_published_recipe(cfg) -> None:
    """SGD lr 0.05, momentum 0.9, wd 5e-4, lr x0.1 at 150/180/210, 240 epochs, batch 64,
    T = 4, alpha = 0.9 (RepDistiller / CRD)."""
    assert cfg.data._target_ == "kdlightning.data.CIFAR100DataModule"
    opt, sched = cfg.optim.optimizer, cfg.optim.scheduler
    assert opt._target_ == "torch.optim.SGD"
    assert (opt.lr, opt.momentum, opt.weight_decay) == (0.05, 0.9, 0.0005)
    assert sched._target_ == "torch.optim.lr_scheduler.MultiStepLR"
    assert list(sched.milestones) == [150, 180, 210] and sched.gamma == 0.1
    assert cfg.data.batch_size == 64 and cfg.trainer.max_epochs == 240
    assert cfg.data.pin_memory is True and cfg.trainer.accelerator == "auto"
    assert (cfg.kd.temperature, cfg.kd.alpha) == (4.0, 0.9)


@pytest.mark.parametrize("name", sorted(CIFAR_EXPERIMENTS))
def test_cifar100_experiments_use_the_published_recipe(name: str) -> None:
    cfg = composed(f"experiment={name}")
    _assert_published_recipe(cfg)
    teacher, student = CIFAR_EXPERIMENTS[name]
    for role, model in (("teacher", teacher), ("student", student)):
        assert OmegaConf.to_container(cfg[role].model) == {
            "_target_": "kdlightning.models.cifar_model", "name": model}  # fmt: skip
    assert cfg.teacher.checkpoint is None


def test_cifar100_base_runs_any_zoo_pair_with_the_same_recipe() -> None:
    cfg = composed("experiment=cifar100_base")
    _assert_published_recipe(cfg)
    assert (cfg.teacher.model.name, cfg.student.model.name) == ("resnet32x4", "resnet8x4")
    cfg = composed("experiment=cifar100_base", "teacher.model.name=resnet56",
                   "student.model.name=resnet20")  # fmt: skip
    _assert_published_recipe(cfg)
    assert (cfg.teacher.model.name, cfg.student.model.name) == ("resnet56", "resnet20")


def test_the_cifar_recipe_is_written_once() -> None:
    """The named CIFAR-100 experiments add nothing but their pair to cifar100_base."""
    conf = REPO_ROOT / "conf" / "experiment"
    for name, (teacher, student) in CIFAR_EXPERIMENTS.items():
        own = OmegaConf.load(conf / f"{name}.yaml")
        assert list(own.defaults) == ["cifar100_base"]
        del own["defaults"]
        assert OmegaConf.to_container(own) == {
            "teacher": {"model": {"name": teacher}},
            "student": {"model": {"name": student}},
        }


def test_cpu_experiments_compose() -> None:
    # every value the experiments used to restate (teacher, optim, kd) is still what they get
    default_optim = OmegaConf.to_container(composed().optim)
    dg = composed("experiment=digits_cnn_student")
    assert dg.data._target_ == "kdlightning.data.DigitsDataModule"
    assert OmegaConf.to_container(dg.teacher.model) == {
        "_target_": "kdlightning.models.SmallCNN", "channels": [32, 64, 128], "hidden": 256,
        "dropout": 0.2}  # fmt: skip
    assert OmegaConf.to_container(dg.student.model) == {
        "_target_": "kdlightning.models.SmallCNN", "channels": [8, 16], "hidden": 32}  # fmt: skip
    assert (dg.kd.temperature, dg.kd.alpha) == (6.0, 0.9)

    fm = composed("experiment=fashion_mnist")
    assert fm.data._target_ == "kdlightning.data.FashionMNISTDataModule"
    assert OmegaConf.to_container(fm.teacher.model) == {
        "_target_": "kdlightning.models.SmallCNN", "channels": [32, 64, 128], "hidden": 256,
        "dropout": 0.2}  # fmt: skip
    assert OmegaConf.to_container(fm.student.model) == {
        "_target_": "kdlightning.models.MLP", "hidden_sizes": [16]}  # fmt: skip
    assert fm.trainer.max_epochs == 30
    assert fm.data.seed == 0  # one teacher serves every seed: the split does not move

    m1 = composed("experiment=mnist1d")
    assert m1.data._target_ == "kdlightning.data.MNIST1DDataModule"
    assert OmegaConf.to_container(m1.teacher.model) == {
        "_target_": "kdlightning.models.CNN1D",
        "channels": [64, 64, 64],
        "kernel_size": 5,
    }
    assert OmegaConf.to_container(m1.student.model) == {
        "_target_": "kdlightning.models.MLP", "hidden_sizes": [100, 100]}  # fmt: skip
    assert m1.trainer.max_epochs == 40

    for cfg in (fm, m1):
        assert OmegaConf.to_container(cfg.optim) == default_optim
        assert cfg.optim.optimizer._target_ == "torch.optim.AdamW"
        assert (cfg.optim.optimizer.lr, cfg.optim.optimizer.weight_decay) == (0.003, 0.0001)
        assert (cfg.kd.temperature, cfg.kd.alpha) == (4.0, 0.9)
    assert composed().task == "distill"


# The runs below need no separate process: each composes experiment=... in-process, exactly
# as the command line would, and runs the job with kdlightning.job.run.run (tests/conftest.py).
# The CIFAR zoo models are the slow ones; the small experiments run in the quick unit run too.
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CIFAR_EXPERIMENTS))
def test_cifar100_experiments_run_a_few_steps_on_fake_pickles(tmp_path: Path, name: str) -> None:
    write_cifar(tmp_path / "data", "cifar-100", n_train=40, n_test=8)
    results, _ = run_job(
        tmp_path, f"experiment={name}", "baseline=false", "trainer.accelerator=cpu",
        "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1", "data.batch_size=4", "data.val_size=8",
        "data.num_workers=0", "data.pin_memory=false", "data.check_md5=false",
        f"data.data_dir={tmp_path / 'data'}", "benchmark.batch_size=2", "benchmark.repeats=1",
    )  # fmt: skip
    assert {"teacher", "distilled", "summary"} <= set(results)
    assert "baseline" not in results
    assert results["teacher"]["params"] > results["distilled"]["params"]
    # CIFAR augments its training images: the teacher must run on every batch, not be cached
    assert results["distilled"]["teacher_logits"]["mode"] == "online"


def test_fashion_mnist_experiment_runs_on_idx_files_without_download(tmp_path: Path) -> None:
    debian = tmp_path / "debian"
    write_idx_dataset(debian, n_train=120, n_test=20)
    results, _ = run_job(
        tmp_path, "experiment=fashion_mnist", "data.val_size=20", "data.batch_size=16",
        f"data.data_dir={tmp_path / 'data'}", f"data.system_dir={debian}",
    )  # fmt: skip
    assert {"teacher", "baseline", "distilled"} <= set(results)
    assert (tmp_path / "data" / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file()
    # the experiment's student: one hidden layer of 16 units on 28x28 inputs, 10 classes
    assert results["distilled"]["params"] == 28 * 28 * 16 + 16 + 16 * 10 + 10


def test_fashion_mnist_full_composes_the_chosen_recipe() -> None:
    # issue 22's search chose KD (T = 2, alpha = 0.6, 100 epochs) into the MLP-16 on the clean
    # images (docs/results.md)
    ff = composed("experiment=fashion_mnist_full")
    assert ff.data._target_ == "kdlightning.data.FashionMNISTDataModule"
    data = ff.data
    assert (data.augment, data.crop_padding, data.hflip, data.seed) == (False, 2, True, 0)
    assert OmegaConf.to_container(ff.student.model) == {
        "_target_": "kdlightning.models.MLP", "hidden_sizes": [16]}  # fmt: skip
    assert (ff.kd.method, ff.kd.temperature, ff.kd.alpha) == ("kd", 2.0, 0.6)
    assert (ff.kd.teacher_logits, ff.kd.mix, ff.trainer.max_epochs) == ("auto", "none", 100)
    # consistent teaching, one override away: the teacher's logits then come online
    from types import SimpleNamespace

    from kdlightning.job.tasks.image import teacher_logits_mode

    def data(cfg):  # what teacher_logits_mode reads of a data module
        return SimpleNamespace(augments=bool(cfg.data.augment))

    assert teacher_logits_mode(ff, data(ff)) == "cached"
    for override in ("data.augment=true", "kd.mix=mixup"):
        cfg = composed("experiment=fashion_mnist_full", override)
        assert teacher_logits_mode(cfg, data(cfg)) == "online", override
    # student=cnn replaces the MLP student whole (no hidden_sizes left over for SmallCNN)
    cnn = composed("experiment=fashion_mnist_full", "student=cnn")
    assert OmegaConf.to_container(cnn.student.model) == {
        "_target_": "kdlightning.models.SmallCNN", "channels": [8, 16], "hidden": 32}  # fmt: skip


def test_fashion_mnist_full_runs_with_mixing_on_idx_files(tmp_path: Path) -> None:
    debian = tmp_path / "debian"
    write_idx_dataset(debian, n_train=120, n_test=20)
    results, _ = run_job(
        tmp_path, "experiment=fashion_mnist_full", "kd.mix=cutmix", "data.val_size=20",
        "data.batch_size=16", "trainer.max_epochs=1", "trainer.limit_train_batches=1",
        f"data.data_dir={tmp_path / 'data'}", f"data.system_dir={debian}",
    )  # fmt: skip
    assert {"teacher", "baseline", "distilled"} <= set(results)
    distilled = results["distilled"]
    assert distilled["teacher_logits"]["mode"] == "online"
    assert distilled["mix"] == {"mode": "cutmix", "alpha": 1.0}


def test_mnist1d_experiment_runs(tmp_path: Path) -> None:
    results, _ = run_job(tmp_path, "experiment=mnist1d", "data.num_samples=400", "data.val_size=40",
                         "kd.teacher_logits=cached")  # fmt: skip
    teacher, distilled = results["teacher"], results["distilled"]
    assert teacher["teacher/val_acc"] == teacher["val/acc"]
    assert teacher["params"] > distilled["params"]
    # the 1-D teacher's logits, cached and looked up by sample index, are the teacher's own
    assert distilled["teacher_logits"]["mode"] == "cached"
    assert distilled["test/teacher_acc"] == pytest.approx(teacher["test/acc"], abs=1e-6)


# --- one CIFAR-100 experiment per distillation method (conf/experiment/cifar100_<method>.yaml) ---
CIFAR_METHODS = ("kd", "dkd", "dist", "ls_kd", "fitnet", "at", "rkd", "pkt", "crd", "dml")
PUBLISHED_PAIRS = (("resnet32x4", "resnet8x4"), ("wrn_40_2", "wrn_16_2"))


def _pair(teacher: str, student: str) -> list[str]:
    return [f"teacher.model.name={teacher}", f"student.model.name={student}"]


@pytest.mark.parametrize("method", CIFAR_METHODS)
def test_cifar100_method_experiments_keep_the_recipe_and_pass_validation(method: str) -> None:
    """Each method's experiment is cifar100_base's recipe with that method's settings, and its
    config checks pass for both published pairs (layer paths, hyperparameters)."""
    for teacher, student in PUBLISHED_PAIRS:
        cfg = compose_job([f"experiment=cifar100_{method}", *_pair(teacher, student)])
        assert cfg.kd.method == method
        assert (cfg.teacher.model.name, cfg.student.model.name) == (teacher, student)
        assert cfg.optim.optimizer.lr == 0.05 and cfg.trainer.max_epochs == 240
        assert cfg.data._target_ == "kdlightning.data.CIFAR100DataModule"
        check_config(cfg)
    # the recipe's KD alpha never leaks into a method that gives alpha another meaning or none
    alpha = cfg.kd.get("alpha")
    assert alpha == {"kd": 0.9, "dkd": 1.0, "dist": 1.0, "ls_kd": 9.0, "dml": None}.get(method, 0.0)


def test_cifar100_feature_layers_exist_in_every_zoo_model() -> None:
    models = {name: cifar_model(name, 100) for name in CIFAR_MODELS}
    conf = REPO_ROOT / "conf" / "experiment"
    for method in ("fitnet", "at"):
        table = OmegaConf.load(conf / f"cifar100_{method}.yaml").cifar_layers
        assert set(table) == set(CIFAR_MODELS), method  # every zoo model has its layers
        for name, paths in table.items():
            check_paths(models[name], list(paths), role=name)
    for name, model in models.items():  # rkd, pkt and crd: the pooled embedding
        check_paths(model, ["pool"], role=name)


@pytest.mark.slow
@pytest.mark.parametrize("method", CIFAR_METHODS)
def test_cifar100_method_experiments_train_a_step(method: str) -> None:
    """One training step of each method's module, built from its experiment's config (the
    full job on fake pickles: test_cifar100_experiments_run_a_few_steps_on_fake_pickles)."""
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    # the pair matters to the feature methods' layers only: the others take the first pair
    feature = ("fitnet", "at", "rkd", "pkt", "crd")
    pairs = PUBLISHED_PAIRS if method in feature else PUBLISHED_PAIRS[:1]
    for teacher_name, student_name in pairs:
        cfg = compose_job([f"experiment=cifar100_{method}", *_pair(teacher_name, student_name)])
        torch.manual_seed(0)
        teacher, student = cifar_model(teacher_name, 100), cifar_model(student_name, 100)
        if method == "dml":
            peer = cifar_model(student_name, 100)
            module = MutualLearningModule([student, peer], cfg.kd.temperature)
        else:
            method_module = build_method(cfg.kd, teacher, student, (3, 32, 32), num_train=4)
            module = DistillationModule(teacher, student, method=method_module)
        module.train()
        with warnings.catch_warnings():  # self.log outside a Trainer: a warning, no effect
            warnings.simplefilter("ignore")
            loss = module.training_step((x, y, torch.arange(4)), 0)
        assert torch.isfinite(loss) and loss > 0, (method, teacher_name, float(loss))
        loss.backward()
        grads = [p.grad for p in student.parameters()]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
