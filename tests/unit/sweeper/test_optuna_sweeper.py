"""The Optuna sweeper (hydra_plugins/kdl_optuna_sweeper/sweeper.py) driving a tiny task function,
no training: Optuna's ask/tell through a launcher, failed trials, the results file, and one real
in-process Hydra multirun (``hydra/sweeper=optuna`` found as a plugin, the basic launcher)."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from hydra_plugins.kdl_optuna_sweeper.sweeper import OptunaSweeper
from kdlightning.job.errors import ConfigError

SPACE = {"x": "interval(0, 10)", "k": "choice(a, b)"}


def objective(x: float, k: str) -> float:
    """Best at x = 3 with k = b (0.0); the sweeper maximizes it."""
    return -((x - 3.0) ** 2) - (0.0 if k == "b" else 5.0)


class FakeLauncher:
    """Runs each job's overrides through ``task`` in this process, as a launcher would."""

    def __init__(self, task: Any) -> None:
        self.task, self.batches, self.first_nums = task, [], []

    def launch(self, batch: list[list[str]], initial_job_idx: int) -> list[JobReturn]:
        self.batches.append(batch)
        self.first_nums.append(initial_job_idx)
        returns = []
        for overrides in batch:
            ret = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED)
            args = dict(o.split("=", 1) for o in overrides)
            try:
                ret.return_value = self.task(args)
            except Exception as err:  # Hydra's run_job keeps a job's exception in its return
                ret.return_value, ret.status = err, JobStatus.FAILED
            returns.append(ret)
        return returns


def sweeper_for(tmp_path: Path, task: Any, **kwargs: Any) -> tuple[OptunaSweeper, FakeLauncher]:
    settings = {"n_trials": 8, "n_jobs": 1, "direction": "maximize", "params": SPACE}
    settings |= kwargs
    sampler = {"_target_": "optuna.samplers.TPESampler", "seed": 0, "n_startup_trials": 3}
    sweeper = OptunaSweeper(sampler=sampler, **settings)
    sweeper.config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    sweeper.hydra_context = type("Context", (), {"config_loader": None})()
    sweeper.launcher = FakeLauncher(task)
    sweeper.validate_batch_is_legal = lambda batch: None  # no config to compose here
    return sweeper, sweeper.launcher


def fake_task(args: dict[str, str]) -> float:
    return objective(float(args["x"]), args["k"])


def test_ask_tell_in_batches_and_the_results_file(tmp_path: Path) -> None:
    sweeper, launcher = sweeper_for(tmp_path, fake_task, n_trials=5, n_jobs=2)
    returns = sweeper.sweep(["seed=7"])
    assert [len(b) for b in launcher.batches] == [2, 2, 1]
    # the job numbers are the trial numbers: folder n is trial n
    assert launcher.first_nums == [0, 2, 4]
    jobs = [job for batch in launcher.batches for job in batch]
    assert all(job[0] == "seed=7" and len(job) == 3 for job in jobs)
    values = [r.return_value for batch in returns for r in batch]
    saved = OmegaConf.load(tmp_path / "optimization_results.yaml")
    assert saved.name == "optuna" and saved.best_value == max(values)
    best = jobs[values.index(max(values))]
    assert f"x={saved.best_params.x!r}" in best and f"k={saved.best_params.k}" in best
    assert (tmp_path / "multirun.yaml").is_file()


def test_the_sampler_seed_repeats_the_trials_and_tpe_gets_close(tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):
        sweeper, launcher = sweeper_for(tmp_path / name, fake_task, n_trials=20)
        sweeper.sweep([])
        runs.append(launcher.batches)
    assert runs[0] == runs[1]
    best = OmegaConf.load(tmp_path / "a" / "optimization_results.yaml")
    # 20 TPE trials on a 1-D parabola (plus a choice) end near its top (random: about -0.3)
    assert best.best_params.k == "b" and best.best_value > -0.5


def test_failed_trials_are_told_as_failed_and_the_study_goes_on(tmp_path: Path) -> None:
    calls = []

    def flaky(args: dict[str, str]) -> Any:
        calls.append(args)
        n = len(calls)
        if n == 1:
            raise RuntimeError("diverged")
        if n == 2:
            return math.nan
        if n == 3:
            return None
        return fake_task(args)

    sweeper, _ = sweeper_for(tmp_path, flaky, n_trials=6)
    sweeper.sweep([])
    saved = OmegaConf.load(tmp_path / "optimization_results.yaml")
    assert len(calls) == 6 and saved.failed_this_run == 3 and saved.best_trial >= 3


def test_all_trials_failing_raises_the_first_error(tmp_path: Path) -> None:
    def broken(args: dict[str, str]) -> float:
        raise ConfigError("kd.alpha=2: alpha must lie in [0, 1]")

    sweeper, _ = sweeper_for(tmp_path, broken, n_trials=3)
    with pytest.raises(ConfigError, match="alpha must lie"):
        sweeper.sweep([])
    assert not (tmp_path / "optimization_results.yaml").exists()


def test_bad_settings_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"hydra\.sweeper\.direction='maximise'"):
        OptunaSweeper(sampler=None, direction="maximise", n_trials=2, n_jobs=1)
    with pytest.raises(ConfigError, match=r"hydra\.sweeper\.n_trials=0"):
        OptunaSweeper(sampler=None, direction="maximize", n_trials=0, n_jobs=1)


def test_nothing_to_search_says_how(tmp_path: Path) -> None:
    sweeper, _ = sweeper_for(tmp_path, fake_task, params=None)
    with pytest.raises(ConfigError, match="nothing to search"):
        sweeper.sweep(["seed=1"])


APP = """
import hydra

@hydra.main(version_base="1.3", config_path=CONF, config_name="app")
def app(cfg):
    if cfg.x > 9:
        raise ValueError("x too large")
    return -((cfg.x - 3.0) ** 2)
"""


def test_a_real_hydra_multirun_finds_the_plugin(tmp_path: Path, monkeypatch) -> None:
    """``hydra/sweeper=optuna`` from the ConfigStore, the basic launcher, one folder per trial."""
    from hydra.core.global_hydra import GlobalHydra

    (tmp_path / "app.yaml").write_text("x: 0.0\n")
    (tmp_path / "tiny_app.py").write_text(f"CONF = {str(tmp_path)!r}\n" + APP)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    import tiny_app

    sweep_dir = tmp_path / "sweep"
    monkeypatch.setattr(sys, "argv", [
        "tiny_app.py", "-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=4",
        "hydra.sweeper.direction=maximize", "hydra.sweeper.sampler.seed=1",
        "x=interval(0, 10)", f"hydra.sweep.dir={sweep_dir}", "hydra/job_logging=disabled",
    ])  # fmt: skip
    GlobalHydra.instance().clear()
    try:
        tiny_app.app()
    finally:
        GlobalHydra.instance().clear()
        sys.modules.pop("tiny_app", None)
    saved = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    folders = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir())
    assert folders == ["0", "1", "2", "3"]
    xs = [float(OmegaConf.load(sweep_dir / n / ".hydra/overrides.yaml")[0].split("=")[1])
          for n in folders]  # fmt: skip
    assert saved.best_value == max(-((x - 3.0) ** 2) for x in xs if x <= 9)
    assert OmegaConf.load(sweep_dir / "multirun.yaml").hydra.sweeper.n_trials == 4


@pytest.mark.slow  # Optuna creates its SQLite schema (SQLAlchemy, alembic): 2-6 s
def test_a_stored_study_is_continued_by_a_second_run(tmp_path: Path) -> None:
    """``storage`` + ``study_name``: the second run adds its trials to the first run's study,
    and its job numbers go on from there (folder n is still trial n)."""
    stored = {"storage": f"sqlite:///{tmp_path / 'optuna.db'}", "study_name": "kd"}
    first, _ = sweeper_for(tmp_path / "a", fake_task, n_trials=3, **stored)
    first.sweep([])
    second, launcher = sweeper_for(tmp_path / "b", fake_task, n_trials=2, **stored)
    second.sweep([])
    assert launcher.first_nums == [3, 4]
    saved = OmegaConf.load(tmp_path / "b" / "optimization_results.yaml")
    assert saved.n_trials == 5
