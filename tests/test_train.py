"""The main job end to end on digits (shortened with debug=fast), through the real CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import FAST, read_json, run_module

from kdlightning.models import MLP

pytestmark = pytest.mark.slow
ROLES = ("teacher", "baseline", "distilled")


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("run")
    out = root / "job"
    # its own log dir, hence its own teacher/baseline cache: this run trains every stage
    proc = run_module("kdlightning.train", *FAST, f"hydra.run.dir={out}", f"paths.log_dir={root}")
    return out, proc.stdout


def test_results_json_is_well_formed(first_run: tuple[Path, str]) -> None:
    out, _ = first_run
    results = read_json(out / "results.json")
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


def test_outputs_on_disk_and_printed_table(first_run: tuple[Path, str]) -> None:
    out, stdout = first_run
    for role in ROLES:
        assert (out / role / "checkpoints" / "best.ckpt").is_file()
        assert (out / "logs" / role / "metrics.csv").is_file()
    student = MLP(num_classes=10, input_shape=(1, 8, 8), hidden_sizes=[32])
    student.load_state_dict(torch.load(out / "student.pt", weights_only=True))
    table = (out / "comparison.md").read_text()
    for label in ("teacher", "student alone", "distilled student", "compression", "speed-up"):
        assert label in table and label in stdout
    # the distilled checkpoint holds the student only
    ckpt = torch.load(out / "distilled" / "checkpoints" / "best.ckpt", weights_only=False)
    assert all(k.startswith("student.") for k in ckpt["state_dict"])


def test_reusing_the_teacher_checkpoint_skips_training(
    first_run: tuple[Path, str], tmp_path: Path
) -> None:
    out, _ = first_run
    first = read_json(out / "results.json")
    ckpt = first["teacher"]["checkpoint"]
    proc = run_module(
        "kdlightning.train", *FAST, f"hydra.run.dir={tmp_path}", f"teacher.checkpoint={ckpt}",
        "baseline=false", "kd.temperature=2", f"paths.log_dir={tmp_path}",
    )  # fmt: skip
    assert "Loading the teacher from" in proc.stderr + proc.stdout
    assert "Training the teacher" not in proc.stderr + proc.stdout
    results = read_json(tmp_path / "results.json")
    assert "baseline" not in results
    assert not (tmp_path / "teacher" / "checkpoints").exists()  # nothing was trained
    assert results["teacher"]["test/acc"] == pytest.approx(first["teacher"]["test/acc"])
    assert results["summary"]["temperature"] == 2.0


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("kd.temperature=-1", "temperature must be a finite number > 0, got -1"),
        ("kd.alpha=1.5", "alpha must lie in [0, 1]"),
        ("teacher.checkpoint=/no/such/teacher.ckpt", "checkpoint file not found: '/no/such"),
        ("data.batch_size=0", "data.batch_size must be >= 1, got 0"),
    ],
)
def test_user_errors_are_reported_clearly(override: str, expected: str, tmp_path: Path) -> None:
    proc = run_module(
        "kdlightning.train", *FAST, f"hydra.run.dir={tmp_path}", override,
        f"paths.log_dir={tmp_path}", check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert expected in proc.stderr


def test_wrong_teacher_architecture_lists_the_keys(
    first_run: tuple[Path, str], tmp_path: Path
) -> None:
    out, _ = first_run
    ckpt = read_json(out / "results.json")["teacher"]["checkpoint"]
    proc = run_module(
        "kdlightning.train", *FAST, f"hydra.run.dir={tmp_path}", f"teacher.checkpoint={ckpt}",
        "teacher=mlp", f"paths.log_dir={tmp_path}", check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "does not fit the configured teacher model" in proc.stderr
    assert "missing keys: 1.bias, 1.weight" in proc.stderr
