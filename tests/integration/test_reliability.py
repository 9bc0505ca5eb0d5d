"""Faults a user or a cluster causes: bad values, divergence, signals, strict results files."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import FAST, compose, read_json, start_train, wait_for_path

from kdlightning.distill.modules import DivergenceError
from kdlightning.job import run as train
from kdlightning.job.claim import RunRefused, claim_run_dir
from kdlightning.job.config import ConfigError, check_config
from kdlightning.job.results import finite, mark_failed, write_json


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("kd.temperature=abc", "kd.temperature='abc'"),
        ("kd.temperature=1e-30", "kd.temperature=1e-30: temperature must be a finite number >="),
        ("kd.alpha=2", "kd.alpha=2"),
        ("seed=x", "seed='x' is not an integer"),
        ("trainer.max_epochs=-1", "trainer.max_epochs=-1 must be >= 1 (-1 would train forever)"),
        ("trainer.max_epochs=0", "trainer.max_epochs=0 must be >= 1"),
        ("data.batch_size=0", "data.batch_size=0 must be >= 1"),
        ("data.num_labeled=many", "data.num_labeled='many' is not an integer"),
        ("+student.model.num_classes=7", "student.model.num_classes is set from the data set"),
        ("+teacher.model.chanels=[4]", "teacher.model has no argument chanels"),
        ("data=imagefolder", "data.root must be set (the config leaves it as ???)"),
        ("data.on_device=gpu", "data.on_device='gpu' is not one of auto, true, false"),
    ],
)  # fmt: skip
def test_bad_values_stop_before_any_work_naming_key_and_value(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_config(compose([override]))
    assert message in str(info.value)


def test_the_default_config_and_every_experiment_on_cpu_pass_the_checks() -> None:
    check_config(compose([]))
    check_config(compose(["experiment=mnist1d"]))
    check_config(compose(["task=classify", "kd.temperature=abc"]))  # no KD in classify


def test_strict_json_never_holds_nan(tmp_path: Path) -> None:
    payload = {"a": math.nan, "b": [1.0, math.inf], "c": {"d": -math.inf, "e": 0.5}}
    assert finite(payload) == {"a": None, "b": [1.0, None], "c": {"d": None, "e": 0.5}}
    write_json(tmp_path / "r.json", payload)
    text = (tmp_path / "r.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard token {c}"))
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left


def test_failed_json_names_the_signal(tmp_path: Path) -> None:
    mark_failed(tmp_path, RuntimeError("boom"), "SIGTERM")
    failed = read_json(tmp_path / "failed.json")
    assert failed["error"] == "RuntimeError: boom" and failed["signal"] == "SIGTERM"


def test_a_diverging_job_stops_at_once_naming_stage_step_and_fix(tmp_path: Path) -> None:
    cfg = compose([*FAST, "optim.optimizer.lr=1e12", "logger=none", f"paths.log_dir={tmp_path}"],
                  tmp_path / "run")  # fmt: skip
    with pytest.raises(
        DivergenceError, match=r"the teacher loss became (nan|inf) at step \d+ or earlier.*optim"
    ):
        train.run(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "results.json").exists()


def _start(tmp_path: Path, *overrides: str) -> subprocess.Popen:
    return start_train(*overrides, "logger=none", f"hydra.run.dir={tmp_path / 'run'}",
                       f"paths.log_dir={tmp_path}")  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_training_exits_non_zero_and_says_which(tmp_path: Path, sig: int) -> None:
    # long enough to be caught mid-training; the signal is sent once the teacher has started
    proc = _start(tmp_path, "trainer.max_epochs=200", "cache.enabled=false")
    wait_for_path(tmp_path / "run" / "teacher", proc)
    time.sleep(2.0)
    os.killpg(proc.pid, sig)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + sig, out[-3000:]
    failed = read_json(tmp_path / "run" / "failed.json")
    assert failed["signal"] == signal.Signals(sig).name
    assert not (tmp_path / "run" / "results.json").exists()


def test_loading_a_malicious_teacher_checkpoint_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, (f"touch {marker}",))

    bad = tmp_path / "teacher.ckpt"
    torch.save({"state_dict": {"w": Evil()}}, bad)
    cfg = compose([*FAST, f"teacher.checkpoint={bad}", "logger=none", f"paths.log_dir={tmp_path}"],
                  tmp_path / "run")  # fmt: skip
    with pytest.raises(ValueError, match="holds more than tensors and plain values"):
        train.run(cfg, tmp_path / "run")
    assert not marker.exists()


RESUMABLE = [
    "teacher=mlp", "teacher.model.hidden_sizes=[64]", "trainer.max_epochs=5", "data.batch_size=8",
    "cache.enabled=false",
    "figures=false",  # drawn after results.json, 2.5 s a job: nothing to resume there
]  # fmt: skip


@pytest.mark.slow
def test_sigkill_mid_stage_then_resume_ends_like_an_uninterrupted_run(tmp_path: Path) -> None:
    ref_dir = tmp_path / "ref"
    reference = train.run(
        compose([*RESUMABLE, "logger=none", f"paths.log_dir={tmp_path}"], ref_dir), ref_dir
    )
    proc = _start(tmp_path, *RESUMABLE)
    wait_for_path(tmp_path / "run" / "distilled" / "checkpoints" / "last.ckpt", proc)
    time.sleep(0.5)  # into the next epoch
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert not (tmp_path / "run" / "results.json").exists()
    # without resume=true the killed run's work (its checkpoints) is never overwritten: the
    # claim a new job makes first, checked in this process (a job's start-up would add a process)
    with pytest.raises(RunRefused, match=r"checkpoints/last\.ckpt.*pass resume=true to continue"):
        claim_run_dir(tmp_path / "run", resume=False)
    resumed = _start(tmp_path, *RESUMABLE, "resume=true")
    out = resumed.communicate(timeout=240)[0]
    assert resumed.returncode == 0, out[-3000:]
    assert "the teacher stage had finished" in out and "Resuming distilled from" in out
    results = read_json(tmp_path / "run" / "results.json")
    # deterministic CPU run; the order of batches and the random state travel with last.ckpt
    for stage in ("teacher", "baseline", "distilled"):
        for key in ("val/acc", "test/acc", "test/loss"):
            assert results[stage][key] == pytest.approx(reference[stage][key], abs=1e-6), (
                stage,
                key,
            )
