"""The main job end to end on digits (debug=fast): in-process through ``kdlightning.job.run.run``
(the real command line, with its table, files and exit status: tests/e2e/test_cli.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import exception_chain, read_json, run_job

from kdlightning.job.run import TASKS, check_task
from kdlightning.models import MLP

ROLES = ("teacher", "baseline", "distilled")


@dataclass
class FirstRun:
    results: dict[str, Any]  # what run() returned
    out: Path  # its run directory
    log_dir: Path  # its paths.log_dir, hence its cache: later jobs there reuse its stages


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> FirstRun:
    root = tmp_path_factory.mktemp("train")
    # its own log dir, hence its own teacher/baseline cache: this run trains every stage
    # cached logits asked for: debug=fast's few batches would make auto pick online
    results, out = run_job(root, "kd.temperature=4", "kd.alpha=0.9", "kd.teacher_logits=cached",
                           name="first")  # fmt: skip
    return FirstRun(results, out, root)


def test_every_stage_was_computed_not_loaded(first_run: FirstRun) -> None:
    for role in ("teacher", "baseline"):
        assert first_run.results[role]["cache"]["hit"] is False
        assert first_run.results[role]["cache"]["trained_in"] == str(first_run.out)


def test_results_json_is_well_formed(first_run: FirstRun) -> None:
    results = read_json(first_run.out / "results.json")
    assert set(ROLES) <= set(results)
    for role in ROLES:
        r = results[role]
        for key in ("test/acc", "val/acc", "params", "size_bytes", "latency_ms"):
            assert key in r, f"{role} lacks {key}"
        assert 0.0 <= r["test/acc"] <= 1.0 and 0.0 <= r["val/acc"] <= 1.0
        assert isinstance(r["params"], int) and r["params"] > 0
        assert r["size_bytes"] > 4 * r["params"]  # float32 tensors plus pickle framing
        assert r["latency_ms"] > 0
    d = results["distilled"]
    for key in ("test/teacher_acc", "test/agreement", "test/kd_loss"):
        assert key in d
    # the teacher accuracy measured inside the KD run is the teacher's own test accuracy
    assert d["test/teacher_acc"] == pytest.approx(results["teacher"]["test/acc"], abs=1e-6)
    assert results["baseline"]["params"] == d["params"] < results["teacher"]["params"]
    s = results["summary"]
    assert s["temperature"] == 4.0 and s["alpha"] == 0.9
    assert s["compression"] == pytest.approx(results["teacher"]["params"] / d["params"])
    # the file holds what run() returned (the value a Hydra sweeper reads comes from there too)
    assert s == first_run.results["summary"]


def test_outputs_on_disk(first_run: FirstRun) -> None:
    out = first_run.out
    for role in ROLES:
        assert (out / role / "checkpoints" / "best.ckpt").is_file()
        assert (out / "logs" / role / "metrics.csv").is_file()
    student = MLP(num_classes=10, input_shape=(1, 8, 8), hidden_sizes=[32])
    student.load_state_dict(torch.load(out / "student.pt", weights_only=True))
    table = (out / "comparison.md").read_text()
    for label in ("teacher", "student alone", "distilled student", "compression", "speed-up"):
        assert label in table
    # the distilled checkpoint holds the student only
    ckpt = torch.load(out / "distilled" / "checkpoints" / "best.ckpt", weights_only=False)
    assert ckpt["state_dict"] and all(k.startswith("student.") for k in ckpt["state_dict"])


def test_a_second_job_reuses_teacher_and_baseline_from_the_cache(
    first_run: FirstRun, tmp_path: Path
) -> None:
    # Another temperature: the teacher and the student alone are the same, so nothing retrains.
    results, out = run_job(tmp_path, "kd.temperature=2", "kd.teacher_logits=cached",
                           log_dir=first_run.log_dir)  # fmt: skip
    for role in ("teacher", "baseline"):
        assert results[role]["cache"]["hit"] is True
        assert results[role]["cache"]["trained_in"] == str(first_run.out)
        assert results[role]["test/acc"] == first_run.results[role]["test/acc"]
        assert not (out / role / "checkpoints").exists()  # no trainer ran for it
    assert (out / "distilled" / "checkpoints" / "best.ckpt").is_file()  # distilled: trained
    # the same teacher on the same data: its logits come from the cache as well
    first_logits = first_run.results["distilled"]["teacher_logits"]
    logits = results["distilled"]["teacher_logits"]
    assert first_logits["mode"] == logits["mode"] == "cached"
    assert (first_logits["cache"]["hit"], logits["cache"]["hit"]) == (False, True)
    assert results["summary"]["temperature"] == 2.0


@pytest.mark.parametrize(
    ("override", "error", "expected"),
    [
        ("kd.temperature=-1", ValueError, "kd.temperature=-1: temperature must be a finite number"),
        ("kd.alpha=1.5", ValueError, "alpha must lie in [0, 1]"),
        ("teacher.checkpoint=/no/such/teacher.ckpt", FileNotFoundError,
         "checkpoint file not found: '/no/such"),
        ("data.batch_size=0", ValueError, "data.batch_size=0 must be >= 1"),
        ("task=clasify", ValueError, "unknown task 'clasify'"),
        ("kd.teacher_logits=sometimes", ValueError, "kd.teacher_logits='sometimes' is not one of"),
        ("+teacher.model.hiden=64", ValueError, "teacher.model has no argument hiden"),
    ],
)  # fmt: skip
def test_user_errors_are_reported_clearly(
    tmp_path: Path, override: str, error: type, expected: str
) -> None:
    with pytest.raises(Exception) as info:
        run_job(tmp_path, override)
    # Hydra wraps a builder's own error in an InstantiationException: look down the chain.
    found = [e for e in exception_chain(info.value) if isinstance(e, error)]
    assert found and expected in str(found[0]), exception_chain(info.value)
    # stopped before anything was trained or written
    assert not list(tmp_path.rglob("*.ckpt")) and not list(tmp_path.rglob("results.json"))


def test_check_task() -> None:
    assert TASKS == ("distill", "classify", "eval")
    assert [check_task(t) for t in TASKS] == list(TASKS)
    with pytest.raises(ValueError, match=r"unknown task 'clasify'.*task=classify"):
        check_task("clasify")
