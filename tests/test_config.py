"""Every config in conf/ composes, and everything it describes instantiates."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import CONF_DIR, compose, config_options
from fake_files import write_image_folder
from hydra.utils import instantiate
from omegaconf import OmegaConf

from kdlightning.data.base import ClassificationDataModule
from kdlightning.stages import build_model, make_callbacks, make_loggers, make_trainer
from kdlightning.train import _optim

GROUPS = sorted(
    p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name not in {"hydra"}
)  # every group, so a config added later is covered without touching this file


def test_the_groups_the_design_asks_for_exist() -> None:
    wanted = {"data", "teacher", "student", "kd", "optim", "trainer", "logger", "callbacks",
              "paths", "experiment", "debug"}  # fmt: skip
    assert wanted <= set(GROUPS)
    assert (CONF_DIR / "hydra" / "default.yaml").is_file()


def test_default_config_values() -> None:
    cfg = compose()
    assert cfg.data._target_.endswith("DigitsDataModule")
    assert cfg.kd.temperature == 4.0 and cfg.kd.alpha == 0.9
    assert cfg.trainer.accelerator == "cpu"
    assert cfg.teacher.checkpoint is None


def _data_modules(tmp_path: Path) -> list[ClassificationDataModule]:
    out = []
    for name in config_options("data"):
        cfg = compose([f"data={name}"])
        cfg = compose([f"data={name}", *_fill_missing(cfg, tmp_path)])
        out.append(instantiate(cfg.data))
    return out


# Groups that are not in train.yaml's defaults list are added with "+group=option".
OPTIONAL_GROUPS = {"sweep"}


def _select(group: str, option: str) -> str:
    return f"{'+' if group in OPTIONAL_GROUPS else ''}{group}={option}"


def _fill_missing(cfg, tmp_path: Path) -> list[str]:
    """Overrides for the values a config leaves for the user (``???``), e.g. data.root."""
    missing = OmegaConf.missing_keys(cfg)
    extra = []
    if "data.root" in missing:  # imagefolder: a tiny folder of class folders
        write_image_folder(tmp_path / "images" / "train")
        write_image_folder(tmp_path / "images" / "val")
        extra.append(f"data.root={tmp_path / 'images'}")
        missing.discard("data.root")
    assert not missing, f"no test value for the mandatory keys {sorted(missing)}"
    return extra


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_composes_and_resolves(group: str, tmp_path: Path) -> None:
    options = config_options(group)
    assert options, f"conf/{group} is empty"
    for option in options:
        cfg = compose([_select(group, option)], output_dir=tmp_path)
        cfg = compose([_select(group, option), *_fill_missing(cfg, tmp_path)], tmp_path)
        OmegaConf.resolve(cfg)  # every interpolation resolves


@pytest.mark.parametrize("name", config_options("data"))
def test_data_configs_instantiate(name: str, tmp_path: Path) -> None:
    cfg = compose([f"data={name}"])
    dm = instantiate(compose([f"data={name}", *_fill_missing(cfg, tmp_path)]).data)
    assert isinstance(dm, ClassificationDataModule)
    assert dm.num_classes >= 2 and len(dm.input_shape) >= 1


@pytest.mark.parametrize("role", ["teacher", "student"])
def test_model_configs_build_for_some_data_set(role: str, tmp_path: Path) -> None:
    modules = _data_modules(tmp_path)
    for option in config_options(role):
        cfg = compose([f"{role}={option}"])
        errors = []
        for dm in modules:
            try:
                model = build_model(cfg[role].model, dm, role)
            except ValueError as err:
                errors.append(str(err))
                continue
            assert isinstance(model, torch.nn.Module)
            break
        else:
            pytest.fail(f"{role}={option} builds for no data set: {errors}")


@pytest.mark.parametrize("name", config_options("optim"))
def test_optim_configs_instantiate(name: str) -> None:
    cfg = compose([f"optim={name}"])
    factories = _optim(cfg)
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
        build_model(cfg[role].model, dm, role)
