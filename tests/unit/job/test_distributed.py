"""kdlightning.job.distributed in-process: what a DDP child runs, the rank-0 guard, and what
job_scope does around a job (its DDP children are fakes here; test_ddp.py runs real ones)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import REPO_ROOT, compose

from kdlightning.job import distributed


def test_child_of_a_sweep_job_runs_that_job_once(monkeypatch: pytest.MonkeyPatch) -> None:
    job = {
        "overrides": ["kd.temperature=4", "trainer=ddp"],
        "run_dir": "/r/multi/1",
        "job_name": "train",
    }
    monkeypatch.setenv(distributed.JOB_ENV, json.dumps(job))
    monkeypatch.setenv("LOCAL_RANK", "1")
    # What Lightning's launcher gives the child: the parent's argv plus its own run dir.
    argv = ["train.py", "-m", "-cn", "train", "kd.temperature=2,4", "trainer=ddp",
            'hydra.run.dir="/r/runs/now"', "hydra.job.name=train_ddp_process_1"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    distributed._adopt_parent_job()
    assert sys.argv == [
        "train.py", "-cn", "train", "kd.temperature=4", "trainer=ddp",
        'hydra.run.dir="/r/multi/1"', "hydra.output_subdir=null", "hydra.job.name=train_rank1",
    ]  # fmt: skip


@pytest.mark.parametrize("env", [{}, {"LOCAL_RANK": "0"}, {"LOCAL_RANK": "1"}])
def test_other_processes_keep_their_command_line(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    # No job published (torchrun ranks, plain runs), or rank 0 itself: argv is left alone.
    monkeypatch.delenv(distributed.JOB_ENV, raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if env.get("LOCAL_RANK") == "0":
        monkeypatch.setenv(distributed.JOB_ENV, json.dumps({"overrides": [], "run_dir": "/x"}))
    argv = ["train.py", "-m", "kd.temperature=2,4"]
    monkeypatch.setattr(sys, "argv", list(argv))
    distributed._adopt_parent_job()
    assert sys.argv == argv


def test_config_flags_keep_config_choice_only() -> None:
    argv = ["-m", "a=1", "--config-name", "x", "-cd=/c", "b=2", "-cp", "p", "c=3"]
    assert distributed._config_flags(argv) == ["--config-name", "x", "-cd=/c", "-cp", "p"]


def test_single_process_is_global_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert distributed.is_global_zero()


@pytest.fixture()
def hydra_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A composed single-run job (Hydra's runtime config set), with no launcher around it."""
    for key in (*distributed._LAUNCH_ENV, distributed.JOB_ENV, "RANK", "SUBMITIT_EXECUTOR"):
        monkeypatch.delenv(key, raising=False)
    compose(["kd.temperature=2", f"hydra.run.dir={tmp_path}"], output_dir=tmp_path)
    return tmp_path


def fake_trainer(*procs: subprocess.Popen) -> Any:
    """What job_scope reads of a Trainer: the Popen children of its strategy's launcher."""
    return SimpleNamespace(strategy=SimpleNamespace(launcher=SimpleNamespace(procs=list(procs))))


def child(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code])


def test_job_scope_publishes_the_job_and_restores_the_environment(hydra_job: Path) -> None:
    with distributed.job_scope() as trainers:
        assert trainers == []  # the job appends the Trainers it makes
        job = json.loads(os.environ[distributed.JOB_ENV])
        assert job["overrides"] == ["kd.temperature=2"] and job["run_dir"] == str(hydra_job)
        first_token = job["token"]
        assert distributed.job_token() == first_token
        # what Lightning's launcher and process-group set-up export while the job runs
        os.environ.update(LOCAL_RANK="0", WORLD_SIZE="2", MASTER_PORT="12910")
    for key in (*distributed._LAUNCH_ENV, distributed.JOB_ENV):
        assert key not in os.environ, key  # the next job of a sweep starts afresh
    with distributed.job_scope():
        # a rerun of the job: its ranks can tell its cache decisions from the last run's
        assert distributed.job_token() != first_token


def test_job_scope_waits_for_the_ddp_children_and_reports_a_failed_one(hydra_job: Path) -> None:
    with distributed.job_scope() as trainers:
        ok = child("import time; time.sleep(0.5)")
        trainers.append(fake_trainer(ok))
    assert ok.returncode == 0  # waited for, not killed
    failed = pytest.raises(RuntimeError, match=r"1 DDP child process\(es\) failed")
    with failed, distributed.job_scope() as trainers:
        trainers.append(fake_trainer(child("raise SystemExit(3)")))


def test_a_failed_job_kills_its_ddp_children(hydra_job: Path) -> None:
    # Rank 0 failed: a child would wait forever in its next collective operation. The job's own
    # error is what ends it (the killed child's status is a consequence, not the cause).
    start = time.monotonic()
    with pytest.raises(ValueError, match="rank 0 failed"), distributed.job_scope() as trainers:
        stuck = child("import time; time.sleep(120)")
        trainers.append(fake_trainer(stuck))
        raise ValueError("rank 0 failed")
    assert stuck.returncode is not None and stuck.returncode < 0  # killed by a signal
    assert time.monotonic() - start < 60


def test_torchrun_ranks_without_a_shared_run_dir_are_refused(
    hydra_job: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # torchrun exports WORLD_SIZE; each rank composing its own timestamped dir would scatter
    # the job: refused unless the command line names the directory.
    monkeypatch.setenv("WORLD_SIZE", "2")
    compose(["kd.temperature=2"], output_dir=hydra_job)
    with pytest.raises(RuntimeError, match=r"pass the same hydra.run.dir=<dir>"):
        distributed.job_scope().__enter__()
    compose(["kd.temperature=2", f"hydra.run.dir={hydra_job}"], output_dir=hydra_job)
    with distributed.job_scope() as trainers:
        assert trainers == []


def test_slurm_launcher_asks_one_task_per_device_on_each_node() -> None:
    # Lightning's SLURMEnvironment insists on tasks per node == devices, nodes == num_nodes.
    from hydra import compose, initialize_config_dir

    overrides = ["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"]
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.nodes) == (4, 4, 2)


def test_is_global_zero_reads_the_launchers_rank_before_any_process_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert not distributed.is_global_zero()
    monkeypatch.setenv("RANK", "0")  # the global rank wins over the per-node one
    assert distributed.is_global_zero()
    monkeypatch.setenv("RANK", "3")
    assert not distributed.is_global_zero()
