"""Every config in conf/ composes, and everything it describes instantiates; the layout of
conf/ (one model group for both roles, no duplicated files, run folders per task, the optional
machine-local config) keeps the command-line names users type."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import datetime
from pathlib import Path

import hydra.core.utils
import lightning as L
import pytest
import torch
import yaml
from conftest import CONF_DIR, REPO_ROOT, compose, config_options
from fake_files import write_image_folder
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from kdlightning.data.base import ClassificationDataModule
from kdlightning.job.build import (
    make_callbacks,
    make_loggers,
    make_trainer,
    optimizer_factories,
)
from kdlightning.job.resolvers import RUN_ID, register_resolvers
from kdlightning.job.tasks import task_for
from kdlightning.lm.data import TextDataModule
from kdlightning.models import CIFAR_MODELS

# Every group, so a config added later is covered without touching this file. hydra/ configures
# Hydra itself; local/ holds only a README in the repository (its yaml files are git-ignored).
GROUPS = sorted(
    p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name not in {"hydra", "local"}
)


def test_the_groups_the_design_asks_for_exist() -> None:
    wanted = {"data", "model", "teacher", "student", "kd", "optim", "trainer", "logger",
              "callbacks", "paths", "experiment", "debug"}  # fmt: skip
    assert wanted <= set(GROUPS)
    assert (CONF_DIR / "hydra" / "default.yaml").is_file()
    assert (CONF_DIR / "local" / "README.md").is_file()


def test_default_config_values() -> None:
    cfg = compose()
    assert cfg.data._target_.endswith("DigitsDataModule")
    assert cfg.kd.temperature == 2.0 and cfg.kd.alpha == 0.5  # chosen on validation
    assert cfg.data.num_labeled == 100  # the default job is the transfer-set case
    assert cfg.trainer.accelerator == "cpu"
    assert cfg.task == "distill"
    assert cfg.teacher.checkpoint is None
    assert cfg.teacher.get("pretrained", False) is False


def _data_modules(tmp_path: Path) -> list[ClassificationDataModule]:
    return [instantiate(_compose_filled([f"data={name}"], tmp_path).data)
            for name in config_options("data")]  # fmt: skip


# Groups that are not in train.yaml's defaults list are added with "+group=option"; the model
# group is placed into the roles by conf/teacher/ and conf/student/, here on a key of its own.
OPTIONAL_GROUPS = {"sweep": "+sweep", "model": "+model@probe"}


def _select(group: str, option: str) -> str:
    return f"{OPTIONAL_GROUPS.get(group, group)}={option}"


def _fill_missing(cfg, tmp_path: Path) -> list[str]:
    """Overrides for the values a config leaves for the user (``???``), e.g. data.root."""
    missing = OmegaConf.missing_keys(cfg)
    extra = []
    if "data.root" in missing:  # imagefolder: a tiny folder of class folders
        write_image_folder(tmp_path / "images" / "train")
        write_image_folder(tmp_path / "images" / "val")
        extra.append(f"data.root={tmp_path / 'images'}")
        missing.discard("data.root")
    for key in sorted(k for k in missing if k.endswith(".name_or_path")):  # teacher=hf, ...
        extra.append(f"{key}={_tiny_hf_model(tmp_path)}")
        missing.discard(key)
    assert not missing, f"no test value for the mandatory keys {sorted(missing)}"
    return extra


def _compose_filled(overrides: list[str], tmp_path: Path, output_dir: Path | None = None):
    """The composed config, with test values for what it leaves to the user (if anything)."""
    cfg = compose(overrides, output_dir)
    extra = _fill_missing(cfg, tmp_path)
    return compose([*overrides, *extra], output_dir) if extra else cfg


def _tiny_hf_model(tmp_path: Path) -> Path:
    """A saved random GPT-2 that fits the byte-level text data (vocabulary 256, 128 tokens)."""
    folder = tmp_path / "hf_model"
    if not folder.is_dir():
        transformers = pytest.importorskip("transformers")
        config = transformers.GPT2Config(vocab_size=256, n_positions=128, n_layer=1, n_embd=8,
                                         n_head=2)  # fmt: skip
        transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_composes_and_resolves(group: str, tmp_path: Path) -> None:
    options = config_options(group)
    assert options, f"conf/{group} is empty"
    for option in options:
        cfg = _compose_filled([_select(group, option)], tmp_path, output_dir=tmp_path)
        OmegaConf.resolve(cfg)  # every interpolation resolves


@pytest.mark.parametrize("name", config_options("data"))
def test_data_configs_instantiate(name: str, tmp_path: Path) -> None:
    dm = instantiate(_compose_filled([f"data={name}"], tmp_path).data)
    if isinstance(dm, TextDataModule):  # language models: a vocabulary and a block size
        assert dm.vocab_size >= 2 and dm.block_size >= 1
        return
    assert isinstance(dm, ClassificationDataModule)
    assert dm.num_classes >= 2 and len(dm.input_shape) >= 1


def _builds_for_some_data_set(model_cfg, modules, what: str) -> None:
    errors = []
    for dm in modules:
        try:
            model = task_for(dm).build(model_cfg, dm, what)  # images or language models
        except ValueError as err:
            errors.append(str(err))
            continue
        assert isinstance(model, torch.nn.Module)
        return
    pytest.fail(f"{what} builds for no data set: {errors}")


@pytest.mark.parametrize("role", ["teacher", "student"])
def test_model_configs_build_for_some_data_set(role: str, tmp_path: Path) -> None:
    modules = _data_modules(tmp_path)
    for option in config_options(role):
        cfg = _compose_filled([f"{role}={option}"], tmp_path)
        _builds_for_some_data_set(cfg[role].model, modules, f"{role}={option}")


def test_every_model_family_builds_and_is_used_by_a_role(tmp_path: Path) -> None:
    modules = _data_modules(tmp_path)
    used = set()
    for role in ("teacher", "student"):
        for option in config_options(role):
            compose([f"{role}={option}"])  # sets Hydra's config, as a job would see it
            used.add(HydraConfig.get().runtime.choices[f"model@{role}.model"])
    for option in config_options("model"):
        cfg = _compose_filled([_select("model", option)], tmp_path)
        _builds_for_some_data_set(cfg.probe, modules, option)
    assert used == set(config_options("model")), "a model family no teacher/student file uses"


@pytest.mark.parametrize("name", config_options("optim"))
def test_optim_configs_instantiate(name: str) -> None:
    cfg = compose([f"optim={name}"])
    factories = optimizer_factories(cfg)
    opt = factories["optimizer"]([torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(opt, torch.optim.Optimizer)
    if factories["scheduler"] is not None:
        factories["scheduler"](opt)


@pytest.mark.parametrize("name", config_options("trainer"))
def test_trainer_configs_instantiate(name: str, tmp_path: Path) -> None:
    cfg = compose([f"trainer={name}"], output_dir=tmp_path)
    if cfg.trainer.get("accelerator") in {"gpu", "cuda"} and not torch.cuda.is_available():
        OmegaConf.resolve(cfg)  # composes; building needs a GPU this machine lacks
        return
    if "fsdp" in str(cfg.trainer.get("strategy", "")) and not torch.cuda.is_available():
        return
    assert isinstance(make_trainer(cfg, "teacher", tmp_path), L.Trainer)


@pytest.mark.parametrize("name", config_options("logger"))
def test_logger_configs_instantiate(name: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose([f"logger={name}"], output_dir=tmp_path)
    loggers = make_loggers(cfg, "teacher")
    assert len(loggers) == len(cfg.logger)


@pytest.mark.parametrize("name", config_options("callbacks"))
def test_callback_configs_instantiate(name: str, tmp_path: Path) -> None:
    cfg = compose([f"callbacks={name}"], output_dir=tmp_path)
    callbacks = make_callbacks(cfg, tmp_path)
    assert len(callbacks) == len(cfg.callbacks)
    for cb in callbacks:
        if hasattr(cb, "dirpath") and cb.dirpath is not None:
            assert str(cb.dirpath).startswith(str(tmp_path))


@pytest.mark.parametrize("name", config_options("experiment"))
def test_experiments_build_their_models_for_their_data(name: str) -> None:
    cfg = compose([f"experiment={name}"])
    dm = instantiate(cfg.data)
    for role in ("teacher", "student"):
        task_for(dm).build(cfg[role].model, dm, role)


# --- the command-line names of models, and the nodes they stood for before conf/model/ -------

_TORCHVISION = {"_target_": "kdlightning.models.torchvision_model", "name": "resnet18",
                "weights": None}  # fmt: skip
_TIMM = {"_target_": "kdlightning.models.timm_model", "name": "resnet18", "pretrained_file": None}

# The composed teacher / student node of each name, as the one-file-per-role configs made them.
EXPECTED_ROLE_NODES = {
    "teacher=cnn": {"checkpoint": None, "model": {"_target_": "kdlightning.models.SmallCNN",
                    "channels": [32, 64, 128], "hidden": 256, "dropout": 0.2}},
    "teacher=mlp": {"checkpoint": None, "model": {"_target_": "kdlightning.models.MLP",
                    "hidden_sizes": [512, 256], "dropout": 0.2}},
    "teacher=cnn1d": {"checkpoint": None, "model": {"_target_": "kdlightning.models.CNN1D",
                      "channels": [64, 64, 64], "kernel_size": 5}},
    "teacher=torchvision": {"checkpoint": None, "pretrained": False, "model": _TORCHVISION},
    "teacher=timm": {"checkpoint": None, "pretrained": False, "model": _TIMM},
    "student=mlp": {"model": {"_target_": "kdlightning.models.MLP", "hidden_sizes": [32]}},
    "student=cnn": {"model": {"_target_": "kdlightning.models.SmallCNN", "channels": [8, 16],
                              "hidden": 32}},
    "student=mlp_mnist1d": {"model": {"_target_": "kdlightning.models.MLP",
                                      "hidden_sizes": [100, 100]}},
    "student=torchvision": {"model": _TORCHVISION},
    "student=timm": {"model": _TIMM},
}  # fmt: skip

# The CIFAR zoo: conf/teacher/<name>.yaml and conf/student/<name>.yaml were one file per name
# and role; now role=cifar role.model.name=<name>, through kdlightning.models.cifar_model.
ZOO = ["resnet20", "resnet56", "resnet110", "resnet8x4", "resnet32x4", "wrn_16_2", "wrn_40_2",
       "vgg8", "vgg13"]  # fmt: skip


@pytest.mark.parametrize("override", sorted(EXPECTED_ROLE_NODES))
def test_model_names_compose_the_same_nodes_as_before(override: str) -> None:
    role = override.split("=")[0]
    node = OmegaConf.to_container(compose([override])[role])
    assert node == EXPECTED_ROLE_NODES[override]


def test_default_teacher_and_student_are_unchanged() -> None:
    cfg = compose()
    assert OmegaConf.to_container(cfg.teacher) == EXPECTED_ROLE_NODES["teacher=cnn"]
    assert OmegaConf.to_container(cfg.student) == EXPECTED_ROLE_NODES["student=mlp"]


@pytest.mark.parametrize("role", ["teacher", "student"])
def test_cifar_zoo_names_through_the_cifar_family(role: str) -> None:
    assert sorted(ZOO) == sorted(CIFAR_MODELS), "the zoo changed: update ZOO and the docs"
    default = {"teacher": "resnet32x4", "student": "resnet8x4"}[role]
    cfg = compose([f"{role}=cifar"])
    assert OmegaConf.to_container(cfg[role].model) == {
        "_target_": "kdlightning.models.cifar_model", "name": default}  # fmt: skip
    for name in ZOO:
        node = compose([f"{role}=cifar", f"{role}.model.name={name}"])[role]
        assert OmegaConf.to_container(node.model) == {
            "_target_": "kdlightning.models.cifar_model", "name": name}  # fmt: skip
        assert node.get("checkpoint", None) is None


@pytest.mark.parametrize("name", ZOO)
def test_cifar_family_builds_the_same_network_as_the_old_zoo_target(name: str) -> None:
    """role=cifar role.model.name=X is the model the removed ``_target_: ...cifar.X`` built."""
    node = compose(["teacher=cifar", f"teacher.model.name={name}"]).teacher.model
    kwargs = {"num_classes": 100, "input_shape": [3, 32, 32]}
    new = instantiate(node, **kwargs)
    old = instantiate({"_target_": f"kdlightning.models.cifar.{name}"}, **kwargs)
    assert type(new) is type(old)
    assert {k: v.shape for k, v in new.state_dict().items()} == {
        k: v.shape for k, v in old.state_dict().items()
    }


def test_old_zoo_names_are_gone_with_a_message_that_lists_cifar() -> None:
    with pytest.raises(Exception, match=r"(?s)Could not find 'teacher/resnet32x4'.*cifar"):
        compose(["teacher=resnet32x4"])


# --- no duplication in conf/ ----------------------------------------------------------------


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True)


def _target_nodes(value) -> list[dict]:
    """Every mapping with a ``_target_`` inside a parsed YAML document."""
    if isinstance(value, dict):
        own = [value] if "_target_" in value else []
        return own + [n for v in value.values() for n in _target_nodes(v)]
    if isinstance(value, list):
        return [n for v in value for n in _target_nodes(v)]
    return []


def duplicated_bodies(conf_dir: Path) -> list[tuple[str, str]]:
    """Pairs of files in ``conf_dir`` with the same body (parsed YAML, comments ignored), or
    that spell out the same ``_target_`` node (what teacher/X.yaml and student/X.yaml did)."""
    seen: dict[str, str] = {}
    pairs = []
    for path in sorted(conf_dir.rglob("*.yaml")):
        rel = str(path.relative_to(conf_dir))
        doc = yaml.safe_load(path.read_text())
        keys = {_canonical(doc)} | {_canonical(n) for n in _target_nodes(doc)}
        pairs += [(rel, seen[k]) for k in sorted(keys) if k in seen]
        seen.update(dict.fromkeys(keys, rel))
    return pairs


def test_no_two_config_files_have_the_same_body() -> None:
    # two empty files (logger/none.yaml is {}) count as a repeat too
    assert duplicated_bodies(CONF_DIR) == []


def test_each_model_target_is_written_in_one_file() -> None:
    owners: dict[str, list[str]] = {}
    for path in sorted(CONF_DIR.rglob("*.yaml")):
        for line in path.read_text().splitlines():
            if any(f"_target_: kdlightning.{m}." in line for m in ("models", "lm.gpt", "lm.hf")):
                target = line.split("_target_:")[1].strip()
                owners.setdefault(target, []).append(str(path.relative_to(CONF_DIR)))
    assert owners, "no model _target_ in conf/"
    assert {t: f for t, f in owners.items() if len(f) > 1} == {}
    assert {f for files in owners.values() for f in files} == {
        f"model/{name}.yaml" for name in config_options("model")
    }


# --- run folders ----------------------------------------------------------------------------


def _compose_with_hydra(overrides: list[str], conf_dir: Path = CONF_DIR):
    """The composed config with its hydra node, set as Hydra's, as a job would see it."""
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        cfg = hydra_compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.cwd = str(REPO_ROOT)
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.mark.parametrize("task", ["distill", "classify"])
def test_run_folders_are_per_task_and_the_cache_is_shared(task: str, tmp_path: Path) -> None:
    cfg = _compose_with_hydra([f"task={task}", f"paths.log_dir={tmp_path}"])
    run = Path(cfg.hydra.run.dir).relative_to(tmp_path)
    sweep = Path(cfg.hydra.sweep.dir).relative_to(tmp_path)
    assert run.parts[:2] == (task, "runs") and len(run.parts) == 3
    assert sweep.parts[:2] == (task, "multiruns") and len(sweep.parts) == 3
    assert run.name == sweep.name  # one time stamp and id per composed config
    assert cfg.paths.cache_dir == str(tmp_path / "cache")  # shared by distill and classify


class _FrozenClock(datetime):
    @classmethod
    def now(cls, tz=None):
        return datetime(2026, 1, 2, 3, 4, 5)


def test_two_runs_started_in_the_same_second_get_different_folders(monkeypatch) -> None:
    monkeypatch.setattr(hydra.core.utils, "datetime", _FrozenClock)  # Hydra's ${now:...}
    register_resolvers()
    register_resolvers()  # idempotent
    assert OmegaConf.has_resolver(RUN_ID)
    dirs = []
    for _ in range(2):
        cfg = _compose_with_hydra([])
        dirs.append((cfg.hydra.run.dir, cfg.hydra.sweep.dir))
    (run_a, sweep_a), (run_b, sweep_b) = dirs
    assert Path(run_a).name.startswith("2026-01-02_03-04-05_")
    assert Path(run_b).name.startswith("2026-01-02_03-04-05_")
    assert run_a != run_b and sweep_a != sweep_b


def test_jobs_of_one_multirun_share_its_folder() -> None:
    """Hydra copies the launching config's resolver cache into each job's config."""
    master = _compose_with_hydra(["hydra.mode=MULTIRUN"])
    sweep_dir = master.hydra.sweep.dir
    job = _compose_with_hydra(["seed=1"])
    OmegaConf.copy_cache(from_config=master, to_config=job)
    HydraConfig.instance().set_config(job)
    assert job.hydra.sweep.dir == sweep_dir


# --- optional local config ------------------------------------------------------------------


@pytest.fixture()
def conf_copy(tmp_path: Path) -> Path:
    """A copy of conf/ without any local/*.yaml the developer's checkout may hold."""
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    for stray in (conf / "local").glob("*.yaml"):
        stray.unlink()
    return conf


def test_without_a_local_config_nothing_changes(conf_copy: Path) -> None:
    cfg = _compose_with_hydra([], conf_copy)
    assert cfg.hydra.runtime.choices["local"] == "default"  # asked for, optional, absent
    assert cfg.seed == 0 and cfg.paths.data_dir == str(REPO_ROOT / "data")


def test_local_config_is_read_after_the_experiment_and_before_the_command_line(
    conf_copy: Path,
) -> None:
    (conf_copy / "local" / "default.yaml").write_text(
        "# @package _global_\n"
        "paths:\n  data_dir: /datasets/here\n"
        "data:\n  num_workers: 7\n"
        "trainer:\n  max_epochs: 5\n"
    )
    cfg = _compose_with_hydra([], conf_copy)
    assert cfg.paths.data_dir == "/datasets/here" and cfg.data.num_workers == 7
    assert cfg.trainer.max_epochs == 5
    # over an experiment's value (mnist1d: 40 epochs), under the command line
    cfg = _compose_with_hydra(["experiment=mnist1d"], conf_copy)
    assert cfg.trainer.max_epochs == 5 and cfg.data._target_.endswith("MNIST1DDataModule")
    cfg = _compose_with_hydra(["experiment=mnist1d", "trainer.max_epochs=2"], conf_copy)
    assert cfg.trainer.max_epochs == 2
    # debug comes after it
    cfg = _compose_with_hydra(["debug=fast"], conf_copy)
    assert cfg.trainer.max_epochs == 2  # debug/fast's


def test_local_configs_are_git_ignored_but_the_readme_is_not() -> None:
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout")

    def ignored(rel: str) -> bool:
        proc = subprocess.run(
            ["git", "check-ignore", "-q", "--no-index", rel], cwd=REPO_ROOT, check=False
        )
        return proc.returncode == 0

    assert ignored("conf/local/default.yaml")
    assert not ignored("conf/local/README.md")


# --- every Lightning Trainer argument as trainer.<arg>= (conf/trainer/default.yaml) -------------


def _trainer_yaml() -> tuple[dict, dict]:
    """(the job's choices, the part listed with Lightning's defaults) of trainer/default.yaml"""
    text = (CONF_DIR / "trainer" / "default.yaml").read_text()
    ours, marker, lightnings = text.partition("# --- Lightning's defaults")
    assert marker, "conf/trainer/default.yaml lost its '# --- Lightning's defaults' section"
    return yaml.safe_load(ours), yaml.safe_load(lightnings.partition("\n")[2])


def test_the_trainer_config_lists_every_argument_of_lightnings_trainer() -> None:
    """So that a Lightning user's trainer.fast_dev_run=true works without a +; compared with
    the installed Lightning, so the list cannot go stale."""
    import inspect

    from kdlightning.job.keys import SET_BY_THE_JOB

    ours, lightnings = _trainer_yaml()
    listed = (set(ours) | set(lightnings)) - {"_target_"}
    by_the_job = {k.split(".", 1)[1] for k in SET_BY_THE_JOB}
    assert listed == set(inspect.signature(L.Trainer).parameters) - by_the_job
    assert not set(ours) & set(lightnings)


def test_the_trainer_config_has_lightnings_defaults_where_the_job_chooses_none() -> None:
    import inspect

    params = inspect.signature(L.Trainer).parameters
    _, lightnings = _trainer_yaml()
    differ = {k: (v, params[k].default) for k, v in lightnings.items() if v != params[k].default}
    assert not differ, f"not Lightning's defaults (value, Lightning's): {differ}"


def test_a_lightning_user_sets_any_trainer_argument_without_a_plus() -> None:
    cfg = compose(
        ["trainer.fast_dev_run=true", "trainer.limit_train_batches=3",
         "trainer.gradient_clip_val=1.0", "trainer.accumulate_grad_batches=2"]
    )  # fmt: skip
    assert cfg.trainer.fast_dev_run is True and cfg.trainer.limit_train_batches == 3
    trainer = instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
    assert trainer.fast_dev_run and trainer.accumulate_grad_batches == 2
