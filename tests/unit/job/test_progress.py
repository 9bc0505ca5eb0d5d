"""Long work shows progress, routine work is quiet (kdlightning.job.progress, .progress_bar,
tracking.drop_anonymous). A real sweep's ``job k/N`` lines: tests/e2e/test_cli.py."""

from __future__ import annotations

import logging
import pickle
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import compose
from hydra.errors import InstantiationException
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from kdlightning.job import progress
from kdlightning.job.build import make_callbacks, make_trainer
from kdlightning.job.progress_bar import StageInProgressBar
from kdlightning.job.tracking import drop_anonymous

BASIC = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def write_multirun(folder: Path, sweeper: dict, task: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"hydra": {"sweeper": sweeper, "overrides": {"task": task}}}
    OmegaConf.save(OmegaConf.create(cfg), folder / "multirun.yaml")
    return folder


def test_sweep_size_counts_the_basic_sweepers_jobs(tmp_path: Path) -> None:
    folder = write_multirun(
        tmp_path / "a", {"_target_": BASIC, "params": {"kd.alpha": "0.5,0.9"}},
        ["kd.temperature=2,4,8", "debug=fast", "kd=kd"],
    )  # fmt: skip
    assert progress.sweep_size(str(folder)) == 6
    folder = write_multirun(tmp_path / "b", {"_target_": BASIC, "params": None}, ["seed=0,1,2"])
    assert progress.sweep_size(str(folder)) == 3


def test_sweep_size_of_other_sweepers_is_their_trial_count_or_unknown(tmp_path: Path) -> None:
    optuna = write_multirun(tmp_path / "o", {"_target_": "x.Optuna", "n_trials": 20}, [])
    assert progress.sweep_size(str(optuna)) == 20
    assert progress.sweep_size(str(write_multirun(tmp_path / "u", {"_target_": "x.Y"}, []))) is None
    assert progress.sweep_size(str(tmp_path / "no-such-sweep")) is None


def test_job_label_counts_from_one() -> None:
    assert progress.job_label(0, 4) == "job 1/4"
    assert progress.job_label(3, None) == "job 4"


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 2)

    def training_step(self, batch: list[torch.Tensor], _: int) -> torch.Tensor:
        loss = nn.functional.cross_entropy(self.layer(batch[0]), batch[1])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit_tiny(tmp_path: Path, callbacks: list) -> tuple[L.Trainer, Tiny]:
    stage = tmp_path / "teacher"  # kdlightning.job.build.make_trainer: <run dir>/<stage>
    trainer = L.Trainer(
        max_epochs=1, callbacks=[TQDMProgressBar(), *callbacks], default_root_dir=str(stage),
        logger=CSVLogger(str(tmp_path), name="logs", version="teacher"),
        enable_model_summary=False, enable_checkpointing=False, accelerator="cpu",
    )  # fmt: skip
    data = TensorDataset(torch.randn(8, 2), torch.randint(0, 2, (8,)))
    module = Tiny()
    trainer.fit(module, DataLoader(data, batch_size=4))
    return trainer, module


def test_v_num_is_the_whole_stage_name(tmp_path: Path) -> None:
    trainer, module = fit_tiny(tmp_path / "with", [StageInProgressBar()])
    bar = trainer.progress_bar_callback
    assert bar.get_metrics(trainer, module)["v_num"] == "teacher"
    pickle.loads(pickle.dumps(bar))  # ddp_spawn pickles the callbacks with the Trainer
    trainer, module = fit_tiny(tmp_path / "without", [])
    assert trainer.progress_bar_callback.get_metrics(trainer, module)["v_num"] == "cher"


def test_the_default_callbacks_include_it() -> None:
    assert compose([]).callbacks.stage_in_progress_bar._target_.endswith("StageInProgressBar")


def _bars(tmp_path: Path, *overrides: str) -> tuple[list[L.Callback], L.Trainer]:
    cfg = compose(["trainer.accelerator=cpu", "logger=none", *overrides])
    trainer = make_trainer(cfg, "teacher", tmp_path)
    return [c for c in make_callbacks(cfg, tmp_path) if isinstance(c, ProgressBar)], trainer


def test_the_job_bar_redraws_every_20_batches_and_steps_aside_when_the_bar_is_off(
    tmp_path: Path,
) -> None:
    (bar,), trainer = _bars(tmp_path)
    assert type(bar) is TQDMProgressBar and bar.refresh_rate == 20
    assert type(trainer.progress_bar_callback) is TQDMProgressBar  # not Lightning's Rich
    (bar,), _ = _bars(tmp_path, "callbacks.progress_bar.refresh_rate=1")
    assert bar.refresh_rate == 1
    # Lightning refuses a bar callback with enable_progress_bar=False: the job leaves it out
    bars, trainer = _bars(tmp_path, "trainer.enable_progress_bar=false")
    assert bars == [] and trainer.progress_bar_callback is None
    # null: Lightning chooses its own bar
    bars, trainer = _bars(tmp_path, "callbacks.progress_bar=null")
    assert bars == [] and trainer.progress_bar_callback is not None
    # with the bar off, a callback whose _target_ does not import fails as it does with it on
    cfg = compose(["trainer.enable_progress_bar=false", "+callbacks.mine._target_=no.such.Cb"])
    with pytest.raises(InstantiationException, match=r"no\.such\.Cb"):
        make_callbacks(cfg, tmp_path)


def test_limited_tells_a_run_on_part_of_the_data() -> None:
    assert progress.limited(compose(["debug=fast"]).trainer)
    assert progress.limited({"fast_dev_run": True}) and progress.limited({"overfit_batches": 2})
    assert progress.limited({"limit_train_batches": 0.25})
    assert not progress.limited(compose([]).trainer)
    assert not progress.limited({"limit_train_batches": 1.0})


def test_iterate_without_a_terminal_is_the_items_themselves() -> None:
    assert list(progress.iterate(iter(range(5)), 5, "teacher logits (train)")) == [0, 1, 2, 3, 4]
    assert list(progress.iterate([1, 2], 2, "x", enabled=False)) == [1, 2]


def test_quiet_drops_the_litlogger_tip_and_the_onnx_info_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    progress.quiet()
    progress.quiet()  # twice: one filter
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    assert sum(isinstance(f, progress._DropLitloggerTip) for f in rank_zero.filters) == 1

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord(rank_zero.name, logging.INFO, __file__, 1, msg, None, None)

    tip, other = record("💡 Tip: try installing [litlogger]"), record("GPU available: False")
    assert not rank_zero.filter(tip) and rank_zero.filter(other)
    for name in ("onnxscript.rewriter", "onnx_ir.passes.common.unused_removal"):
        assert not logging.getLogger(name).isEnabledFor(logging.INFO)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        progress.quiet()
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", stacklevel=1)
    assert not caught


def test_wandb_loggers_lose_the_anonymous_setting_nobody_made(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import WandbLogger

    wandb_logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="p")
    assert "anonymous" in wandb_logger._wandb_init  # what Lightning hands to wandb.init
    assert "anonymous" not in drop_anonymous(wandb_logger)._wandb_init
    asked = WandbLogger(save_dir=str(tmp_path), offline=True, anonymous=True)
    assert drop_anonymous(asked)._wandb_init["anonymous"] == "allow"  # a user's choice stays
    csv = CSVLogger(str(tmp_path))
    assert drop_anonymous(csv) is csv
