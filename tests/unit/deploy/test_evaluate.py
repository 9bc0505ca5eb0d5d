"""kdl-eval (kdlightning.deploy.evaluate): a finished run's student, teacher and ONNX file give
back results.json's test accuracy; damaged weights, other classes and bad arguments are refused
in one line; nothing is written into the run folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import read_json, run_job

from kdlightning.deploy.evaluate import EvalError, eval_table, evaluate_run, main
from kdlightning.job.rundir import RunDirError

# every val and test batch: kdl-eval scores the whole split, as results.json must then have
WHOLE_SPLITS = ("trainer.limit_test_batches=1.0", "trainer.limit_val_batches=1.0")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real tiny main job (debug=fast) with its student exported to ONNX (about 6 s)."""
    root = tmp_path_factory.mktemp("eval")
    _, out = run_job(root, "export=onnx", *WHOLE_SPLITS, name="job")
    return out


def _files(folder: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in folder.rglob("*") if p.is_file()}


def test_student_teacher_and_onnx_give_the_recorded_accuracy(run_dir: Path, capsys) -> None:
    results = read_json(run_dir / "results.json")
    assert set(results["summary"]["sha256"]) == {"student.pt"}  # recorded by the job
    before = _files(run_dir)
    for model, key in (("student", "distilled"), ("teacher", "teacher"), ("baseline", "baseline")):
        report = evaluate_run(run_dir, model)
        assert report["test/acc"] == pytest.approx(results[key]["test/acc"], abs=1e-6), model
        assert report["val/acc"] == pytest.approx(results[key]["val/acc"], abs=1e-6), model
        assert report["params"] == results[key]["params"]
        assert report["recorded"]["test/acc"] == results[key]["test/acc"]
    onnx = evaluate_run(run_dir, onnx=True)
    assert onnx["test/acc"] == pytest.approx(results["distilled"]["test/acc"], abs=1e-6)
    assert onnx["source"] == "export/student.onnx, ONNX Runtime" and onnx["params"] is None
    assert main([str(run_dir)]) == 0
    row = capsys.readouterr().out.splitlines()[2]
    accuracy = f"{100 * results['distilled']['test/acc']:.2f}%"
    assert row.startswith("| distilled student (student.pt)") and row.count(accuracy) == 2
    assert _files(run_dir) == before  # nothing written, nothing touched


def test_json_goes_to_a_new_file_only(run_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "eval.json"
    assert main([str(run_dir), "--json", str(out)]) == 0
    assert read_json(out)["model"] == "student"
    assert main([str(run_dir), "--json", str(out)]) == 2  # never overwritten
    assert "exists; name a new file" in capsys.readouterr().err


def _copy(run_dir: Path, to: Path) -> Path:
    shutil.copytree(run_dir, to, ignore=shutil.ignore_patterns("logs", "checkpoints"))
    return to


def test_changed_or_missing_student_is_refused_naming_the_file(
    run_dir: Path, tmp_path: Path, capsys
) -> None:
    copy = _copy(run_dir, tmp_path / "run")
    weights = copy / "student.pt"
    data = bytearray(weights.read_bytes())
    data[-20] ^= 0xFF  # one flipped byte: still loads, but is not what the job wrote
    weights.write_bytes(bytes(data))
    assert main([str(copy)]) == 2
    err = capsys.readouterr().err
    assert f"{weights} does not match the SHA-256" in err and "run the job again" in err
    weights.unlink()
    with pytest.raises(RunDirError, match=r"has no student\.pt: the job did not finish"):
        evaluate_run(copy)
    onnx = copy / "export" / "student.onnx"
    onnx.write_bytes(onnx.read_bytes() + b"\0")
    with pytest.raises(EvalError, match=r"does not match the SHA-256 in .*export\.json"):
        evaluate_run(copy, onnx=True)


def test_another_data_set_must_have_the_same_classes(run_dir: Path) -> None:
    # mnist1d: 10 classes, but 1-D signals of 40 values, not 8x8 images
    with pytest.raises(EvalError, match=r"serves inputs of shape \(1, 40\).*take \(1, 8, 8\)"):
        evaluate_run(run_dir, data_args=["data=mnist1d"])
    # the same data set, another split seed: other figures, none recorded to compare with
    report = evaluate_run(run_dir, data_args=["data.seed=5"])
    assert not report["own_data"] and report["recorded"] == {}
    assert "| - " in eval_table(report).splitlines()[2]


def test_class_count_mismatch_is_refused(run_dir: Path, tmp_path: Path) -> None:
    from PIL import Image

    for name in ("cat", "dog", "fox"):  # an image folder of 3 classes; the run has digits' 10
        (tmp_path / "train" / name).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "train" / name / "0.png")
    with pytest.raises(EvalError, match="ImageFolderDataModule has 3 classes, the run's models "
                       "were trained for 10"):  # fmt: skip
        evaluate_run(run_dir, data_args=["data=imagefolder", f"data.root={tmp_path}"])


def test_bad_arguments_are_one_line(run_dir: Path, tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main([str(run_dir), "data=nosuchdata"]) == 2
    assert "no such data set; use one of" in capsys.readouterr().err
    assert main([str(run_dir), "kd.alpha=1"]) == 2
    assert "only data.KEY=VALUE settings" in capsys.readouterr().err
    assert main([str(run_dir), "--onnx", "--model", "teacher"]) == 2
    assert "--onnx evaluates the exported student" in capsys.readouterr().err


def test_task_eval_in_the_train_job_writes_only_its_own_folder(
    run_dir: Path, tmp_path: Path
) -> None:
    results = read_json(run_dir / "results.json")
    before = _files(run_dir)
    out, (report, folder) = (
        tmp_path / "eval",
        run_job(tmp_path, "task=eval", f"eval.run_dir={run_dir}", "eval.onnx=true", name="eval"),
    )
    assert report["evaluation"]["test/acc"] == pytest.approx(results["distilled"]["test/acc"],
                                                             abs=1e-6)  # fmt: skip
    assert folder == out and read_json(out / "eval.json")["source"].startswith("export/")
    assert _files(run_dir) == before
    with pytest.raises(EvalError, match=r"task=eval needs the run to evaluate: eval\.run_dir="):
        run_job(tmp_path, "task=eval", name="no_run")
