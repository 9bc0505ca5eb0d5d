"""kdlightning.distributed in-process: what a DDP child runs, and the rank-0 guard."""

from __future__ import annotations

import json
import sys

import pytest

from kdlightning import distributed


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


def test_single_process_is_global_zero_and_track_is_a_no_op_outside_a_job() -> None:
    assert distributed.is_global_zero()
    trainer = object()
    assert distributed.track(trainer) is trainer  # type: ignore[arg-type]
    assert distributed._trainers is None


def test_slurm_launcher_asks_one_task_per_device_on_each_node() -> None:
    # Lightning's SLURMEnvironment insists on tasks per node == devices, nodes == num_nodes.
    from conftest import REPO_ROOT
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
