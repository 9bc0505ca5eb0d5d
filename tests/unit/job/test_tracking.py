"""kdlightning.job.tracking: offline fallback, flat config, and a real offline W&B sweep read back
with wandb's own reader (``wandb leet inspect``)."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST, cli_env, run_module

from kdlightning.job import tracking


def test_flatten_gives_dotted_keys() -> None:
    flat = tracking.flatten({"kd": {"temperature": 4.0}, "a": {"b": {"c": [1, 2]}}, "e": {}})
    assert flat == {"kd.temperature": 4.0, "a.b.c": [1, 2], "e": {}}


@pytest.fixture()
def no_wandb_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.setenv(name, "")  # records the original value, restored after the test
        monkeypatch.delenv(name)
    netrc = tmp_path / "netrc"
    monkeypatch.setenv("NETRC", str(netrc))
    return netrc


def test_no_credentials_means_offline_with_a_sync_hint(
    no_wandb_env: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    monkeypatch.setattr(tracking, "_auto_offline", False)
    assert not tracking.has_credentials()
    assert tracking.ensure_mode("/runs/a") == "offline"
    assert os.environ["WANDB_MODE"] == "offline"
    assert "wandb sync /runs/a/wandb/offline-run-*" in caplog.text
    # The next job of a multirun (same process) gets its own hint, once.
    assert tracking.ensure_mode("/runs/b") == tracking.ensure_mode("/runs/b") == "offline"
    assert caplog.text.count("wandb sync /runs/b/") == 1


def test_credentials_or_an_explicit_mode_are_respected(
    no_wandb_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tracking, "_auto_offline", False)
    no_wandb_env.write_text("machine api.wandb.ai\n  login user\n  password abc123\n")
    assert tracking.has_credentials()
    assert tracking.ensure_mode("/runs/b") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert tracking.ensure_mode("/runs/b") == "disabled"
    no_wandb_env.unlink()
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert tracking.has_credentials()


def inspect(run_dir: Path, *args: str) -> Any:
    """``wandb leet inspect --json``: wandb's reader of a run's .wandb transaction log."""
    proc = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", *args, str(run_dir)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    if "--summary" in args:
        return json.loads(proc.stdout)
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def read_back(run_dirs: list[Path]) -> list[tuple[Path, list[dict], dict]]:
    """(run dir, records, summary) of each offline run; the readers run side by side, as each
    spends most of its time starting up."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        records = [pool.submit(inspect, d) for d in run_dirs]
        summaries = [pool.submit(inspect, d, "--summary") for d in run_dirs]
        return [(d, r.result(), s.result()) for d, r, s in zip(run_dirs, records, summaries,
                                                               strict=True)]  # fmt: skip


@pytest.mark.slow
def test_offline_wandb_sweep_has_one_run_per_stage_in_one_group(tmp_path: Path) -> None:
    sweep = tmp_path / "multirun"
    # No WANDB_MODE and no credentials: the job must pick offline mode by itself.
    env = cli_env(NETRC=str(tmp_path / "no-netrc"), WANDB_CONFIG_DIR=str(tmp_path / "wandb-cfg"))
    env.pop("WANDB_MODE")
    env.pop("WANDB_API_KEY", None)
    proc = run_module(
        "kdlightning.train", "-m", *FAST, "logger=wandb", "kd.temperature=2,4",
        f"paths.log_dir={tmp_path / 'logs'}", f"hydra.sweep.dir={sweep}", "benchmark.repeats=1",
        env=env, timeout=300,
    )  # fmt: skip
    assert "W&B: no credentials, logging offline" in proc.stdout + proc.stderr
    assert "wandb sync" in proc.stdout + proc.stderr

    runs = []
    for run_dir, records, summary in read_back(sorted(sweep.glob("*/wandb/offline-run-*"))):
        (run,) = [r["run"] for r in records if r["type"] == "run"]
        history_keys = {k for r in records if r["type"] == "history" for k in r["history"]["item"]}
        runs.append((run_dir.parents[1].name, run, summary, history_keys))

    # job 0: teacher, baseline, distilled; job 1 reuses both from the cache: distilled only.
    # Four separate runs: wandb.finish() between stages and jobs, nothing merged.
    assert sorted((job, run["job_type"]) for job, run, _, _ in runs) == [
        ("0", "baseline"), ("0", "distilled"), ("0", "teacher"), ("1", "distilled")
    ]  # fmt: skip
    assert len({run["run_id"] for _, run, _, _ in runs}) == 4
    assert {run["run_group"] for _, run, _, _ in runs} == {"sweep-multirun"}
    assert {run["project"] for _, run, _, _ in runs} == {"kdlightning"}
    for job, run, summary, history_keys in runs:
        config = summary["config"]
        assert config["kd.temperature"] == {"0": 2, "1": 4}[job]  # the full config, flat
        assert config["trainer.max_epochs"] == 2 and config["teacher.model.hidden"] == 256
        assert config["logger.wandb.project"] == "kdlightning"
        assert summary["state"] == "finished" and summary["exit_code"] == 0
        assert {"test/acc", "val/acc"} <= set(summary["summary"])  # final metrics in summary
        assert {"val/acc", "train/acc", "test/acc", "epoch"} <= history_keys
        if run["job_type"] == "distilled":
            assert {"val/agreement", "test/teacher_acc", "train/kd_loss_epoch"} <= history_keys
            table = summary["summary"]["comparison"]
            assert table["_type"] == "table-file" and table["nrows"] == 3
            assert "teacher/test/acc" in summary["summary"]

    # The report logs its heatmap and tables into the same group (auto: the jobs used W&B).
    run_module("kdlightning.report", str(sweep), env=env)
    ((_, records, summary),) = read_back(list(sweep.glob("wandb/offline-run-*")))
    (run,) = [r["run"] for r in records if r["type"] == "run"]
    assert (run["job_type"], run["run_group"]) == ("report", "sweep-multirun")
    summary = summary["summary"]
    assert summary["heatmap"]["_type"] == "image-file" and summary["heatmap"]["format"] == "png"
    assert summary["aggregate"]["nrows"] == 2 and summary["jobs"]["nrows"] == 2
    assert summary["best/temperature"] in (2, 4)
