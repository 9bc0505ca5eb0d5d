"""A run folder belongs to one job: claimed before anything is written, never overwritten, and
a resumed run keeps the settings it started with (kdlightning.job.claim)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FAST, compose, read_json, run_job, run_module
from filelock import FileLock

from kdlightning.job import run as train
from kdlightning.job.claim import (
    LOCK_FILE,
    RunRefused,
    check_resume_config,
    claim_run_dir,
    explicit_run_dir,
    release_run_dir,
)


def test_a_folder_in_use_by_another_job_is_refused(tmp_path: Path) -> None:
    other = FileLock(str(tmp_path / LOCK_FILE), timeout=0)  # another job's claim (own descriptor)
    other.acquire()
    try:
        with pytest.raises(RunRefused, match="in use by another job"):
            claim_run_dir(tmp_path, resume=False)
    finally:
        other.release()
    claim_run_dir(tmp_path, resume=False)  # free again: claimed
    claim_run_dir(tmp_path, resume=False)  # this process holds it: no-op
    release_run_dir(tmp_path)


def test_a_finished_run_is_never_overwritten_without_resume(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(RunRefused, match=r"already holds a run \(results.json\).*resume=true"):
        claim_run_dir(tmp_path, resume=False)
    claim_run_dir(tmp_path, resume=True)
    release_run_dir(tmp_path)


def test_a_read_only_log_folder_names_the_setting_to_change(tmp_path: Path) -> None:
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        if (parent / "probe").exists() or _root():
            pytest.skip("this user (root) writes into read-only folders")
        with pytest.raises(PermissionError, match=r"paths.log_dir=<folder>"):
            claim_run_dir(parent / "run", resume=False)
    finally:
        parent.chmod(0o700)


def _root() -> bool:
    import os

    return os.geteuid() == 0


def test_explicit_run_dir_is_read_from_a_single_runs_command_line() -> None:
    assert explicit_run_dir(["hydra.run.dir=logs/x", "resume=true"]) == (Path("logs/x"), True)
    assert explicit_run_dir(["hydra.run.dir='a b'"]) == (Path("a b"), False)
    assert explicit_run_dir(["-m", "hydra.run.dir=x"]) == (None, False)
    assert explicit_run_dir(["kd.temperature=2"]) == (None, False)


def test_resume_with_a_changed_setting_is_refused_naming_it(tmp_path: Path) -> None:
    _, out = run_job(tmp_path, "baseline=false", name="run")
    cfg = compose([*FAST, f"paths.log_dir={tmp_path}", "baseline=false", "resume=true",
                   "kd.temperature=8"], out)  # fmt: skip
    with pytest.raises(RunRefused, match=r"kd\.temperature: 2\.0 -> 8"):
        check_resume_config(out, cfg)
    same = compose([*FAST, f"paths.log_dir={tmp_path}", "baseline=false", "resume=true"], out)
    check_resume_config(out, same)  # the run's own settings: accepted
    shown = compose([*FAST, f"paths.log_dir={tmp_path}", "baseline=false", "resume=true",
                     "trainer.enable_progress_bar=false", "callbacks.progress_bar.refresh_rate=1"],
                    out)  # fmt: skip
    check_resume_config(out, shown)  # how the progress shows may change
    with pytest.raises(RunRefused, match=r"kd\.temperature"):
        train.run(cfg, out)
    assert not (out / "failed.json").exists()  # a refusal leaves the run as it was


@pytest.mark.slow
def test_a_refused_rerun_changes_nothing_in_the_finished_runs_folder(tmp_path: Path) -> None:
    """Hydra writes .hydra/ into the run folder before the job starts: the claim comes first."""
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "results.json").write_text('{"summary": {}}')
    (run / ".hydra" / "config.yaml").write_text("the finished run's config\n")
    proc = run_module("kdlightning.train", f"hydra.run.dir={run}", "kd.temperature=8",
                      check=False, timeout=120)  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "already holds a run" in last, proc.stderr[-2000:]
    assert (run / ".hydra" / "config.yaml").read_text() == "the finished run's config\n"
    assert not (run / "failed.json").exists()
    assert read_json(run / "results.json") == {"summary": {}}
