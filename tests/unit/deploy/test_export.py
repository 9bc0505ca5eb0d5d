"""kdlightning.deploy.export: checked ONNX / torch.export files of the distilled student,
loadable without the package; refused run directories; ``export=onnx`` in the main job."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose, read_json, run_job
from torch import nn

from kdlightning.deploy import export
from kdlightning.deploy.export import (
    EXPORTERS,
    ExportError,
    ExportMismatch,
    compare_logits,
    export_run,
    export_student,
)
from kdlightning.job.config import ConfigError, check_config
from kdlightning.job.rundir import RunDirError, load_config, load_run, split_inputs
from kdlightning.models import MLP


@pytest.fixture(scope="module")
def onnx_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real tiny main job (debug=fast, no baseline) with export=onnx at its end."""
    root = tmp_path_factory.mktemp("export")
    # the whole test split: its accuracy is what the ONNX file must reproduce on raw digits
    _, out = run_job(root, "export=onnx", "baseline=false", "trainer.limit_test_batches=1.0",
                     name="job")  # fmt: skip
    return out


def test_main_job_with_export_onnx_writes_checked_file_and_ort_latency(onnx_run: Path) -> None:
    report = read_json(onnx_run / "export" / "export.json")
    assert set(report["formats"]) == {"onnx"}  # export=onnx: no torch.export program
    assert not (onnx_run / "export" / "student.pt2").exists()
    onnx = report["formats"]["onnx"]
    assert onnx["max_abs_diff"] <= report["atol"] and onnx["top1_agree"] == onnx["top1_total"]
    assert onnx["top1_total"] == report["n_samples"] == 270  # the whole digits test split
    distilled = read_json(onnx_run / "results.json")["distilled"]
    for key in ("ort_latency_ms", "ort_latency_iqr_ms", "ort_latency_ms_b1"):
        assert distilled[key] > 0 or key == "ort_latency_iqr_ms"
    assert distilled["ort_latency_threads"] == distilled["latency_threads"] == 1
    assert distilled["export"] == str(onnx_run / "export" / "export.json")
    header, _, teacher, distilled_row = (onnx_run / "comparison.md").read_text().splitlines()[2:6]
    assert "ORT ms b32 (IQR)" in header and "ms b1" in header
    ort_column = header.split("|").index(" ORT ms b32 (IQR) ")
    assert distilled_row.split("|")[ort_column].strip()[0].isdigit()
    assert teacher.split("|")[ort_column].strip() == "-"  # only the student is exported


@pytest.mark.slow
def copy_run(run_dir: Path, to: Path) -> Path:
    """What export_run reads of a run (config.yaml, student.pt), in a folder of its own."""
    to.mkdir()
    for name in ("config.yaml", "student.pt"):
        shutil.copy(run_dir / name, to / name)
    return to


@pytest.mark.slow
def test_exported_files_run_without_kdlightning_and_match_the_student(
    onnx_run: Path, tmp_path: Path
) -> None:
    run_dir = copy_run(onnx_run, tmp_path / "run")
    report = export_run(run_dir, atol=1e-4, max_samples=None)
    files = {f: run_dir / "export" / report["formats"][f]["file"] for f in report["formats"]}
    assert files["onnx"].name == "student.onnx" and files["torch_export"].name == "student.pt2"
    for fmt, path in files.items():
        assert report["formats"][fmt]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert report["versions"]["onnxruntime"] and report["formats"]["onnx"]["opset"] == 18
    run = load_run(run_dir)
    x = split_inputs(run.dm, max_samples=None)
    # the files take the digits as stored (0-16): the data module's normalization is inside
    raw = run.dm.raw_input().to_raw(x)
    assert raw.min() == 0 and raw.max() == 16 and bool((raw == raw.round()).all())
    np.save(tmp_path / "x.npy", raw.numpy())
    with torch.no_grad():
        expected = run.student(x).numpy()
    # A process in which kdlightning and Lightning cannot be imported at all.
    script = textwrap.dedent(f"""
        import sys
        for name in ("kdlightning", "lightning", "pytorch_lightning"):
            sys.modules[name] = None
        import numpy as np, onnxruntime as ort, torch
        x = np.load({str(tmp_path / "x.npy")!r})
        session = ort.InferenceSession({str(files["onnx"])!r}, providers=["CPUExecutionProvider"])
        np.save({str(tmp_path / "onnx.npy")!r}, session.run(None, {{"input": x}})[0])
        program = torch.export.load({str(files["torch_export"])!r}).module()
        np.save({str(tmp_path / "pt2.npy")!r}, program(torch.from_numpy(x)).detach().numpy())
        assert "kdlightning" not in sys.modules or sys.modules["kdlightning"] is None
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("onnx", "pt2"):
        got = np.load(tmp_path / f"{name}.npy")
        assert got.shape == expected.shape == (270, 10)
        assert np.abs(got - expected).max() < 1e-4, name
        assert (got.argmax(1) == expected.argmax(1)).all(), name


def test_the_onnx_file_takes_raw_digits_and_reproduces_the_test_accuracy(
    onnx_run: Path, tmp_path: Path
) -> None:
    """student.onnx fed sklearn's load_digits values (0-16) as they come, in a process where
    kdlightning cannot be imported: the same test accuracy as results.json's distilled
    student, and export.json says what the input is."""
    report = read_json(onnx_run / "export" / "export.json")
    spec = report["input"]
    assert spec["name"] == "input" and spec["dtype"] == "float32"
    assert spec["shape"] == ["batch", 1, 8, 8] and spec["value_range"] == [0, 16]
    assert "load_digits" in spec["values"] and spec["normalization"]["divide_by"] == 16
    assert report["class_names"] == [str(i) for i in range(10)]
    assert report["output"] == {"name": "logits", "shape": ["batch", 10], "dtype": "float32",
                                "values": "logits, one per class (argmax: the class)"}  # fmt: skip
    cfg = load_config(onnx_run)
    script = textwrap.dedent(f"""
        import sys
        for name in ("kdlightning", "lightning", "pytorch_lightning"):
            sys.modules[name] = None
        import json
        import numpy as np, onnxruntime as ort
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
        x, y = load_digits(return_X_y=True)  # pixel values 0..16, as the data set stores them
        # the run's test split, as the data module cuts it
        _, x_test, _, y_test = train_test_split(
            x, y, test_size={cfg.data.test_fraction}, stratify=y, random_state={cfg.data.seed})
        session = ort.InferenceSession({str(onnx_run / "export" / "student.onnx")!r},
                                       providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        logits = session.run(None, {{name: x_test.astype(np.float32).reshape(-1, 1, 8, 8)}})[0]
        print(json.dumps({{"n": len(y_test), "acc": float((logits.argmax(1) == y_test).mean()),
                          "max": float(x_test.max())}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    distilled = read_json(onnx_run / "results.json")["distilled"]
    assert got["n"] == 270 and got["max"] == 16.0
    assert got["acc"] == pytest.approx(distilled["test/acc"], abs=1e-6), (got, distilled)


def test_kdl_export_refuses_a_language_model_run_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "lm"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(
        "task: distill\ndata:\n  _target_: kdlightning.lm.data.PyDocsDataModule\n"
    )
    assert export.main([str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "language-model run" in err, err
    assert err.startswith("error: ") and "exports image classifiers only" in err


def test_kdl_export_on_a_moved_image_folder_says_what_is_missing_and_takes_data_root(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 19 item 16: the run's image folder moved; kdl-export names the missing path and
    how to point at the new place, and ``data.root=NEW`` on its command line does."""
    from fake_files import write_image_folder

    images = tmp_path / "images"
    write_image_folder(images / "train", classes=3, per_class=4, size=20)
    write_image_folder(images / "val", classes=3, per_class=2, size=20)
    _, run_dir = run_job(
        tmp_path, "data=imagefolder", f"data.root={images}", "data.image_size=16",
        "data.val_size=4", "data.batch_size=4", "data.num_workers=0", "teacher=mlp",
        "baseline=false", name="run",
    )  # fmt: skip
    moved = tmp_path / "moved"
    images.rename(moved)
    assert export.main([str(run_dir), "--formats", "onnx"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"data.root={images} does not exist" in err and "needed to check the export" in err
    assert f"kdl-export {run_dir} data.root=NEW_PLACE" in err
    assert "Traceback" not in err and "InstantiationException" not in err
    assert export.main([str(run_dir), f"data.root={moved}", "--formats", "onnx"]) == 0
    report = read_json(run_dir / "export" / "export.json")
    assert report["input"]["shape"] == ["batch", 3, 16, 16]
    assert report["input"]["value_range"] == [0, 255]
    assert export.main([str(run_dir), "trainer.max_epochs=3"]) == 2
    assert "only data.KEY=VALUE settings" in capsys.readouterr().err


def tiny() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return MLP(num_classes=4, input_shape=(6,), hidden_sizes=[8]).eval(), torch.randn(20, 6)


def test_a_mismatch_fails_loudly_and_leaves_no_valid_looking_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, x = tiny()
    export_student(model, x, tmp_path, batch_size=8)  # an earlier, valid export in the folder
    assert all((tmp_path / f).is_file() for f in ("student.onnx", "student.pt2", "export.json"))
    name, exporter, run = EXPORTERS["torch_export"]
    # ONNX passes, then the torch.export program's logits come back shifted by 0.5
    monkeypatch.setitem(EXPORTERS, "torch_export", (name, exporter, lambda *a: run(*a) + 0.5))
    message = r"torch_export .*: max \|logit difference\| 0\.5 \(tolerance atol=0\.0001\), top-1"
    with pytest.raises(ExportMismatch, match=message + r".*nothing was kept"):
        export_student(model, x, tmp_path, batch_size=8)
    assert list(tmp_path.iterdir()) == []  # no file, no temporary left, the old export gone


def test_compare_logits_counts_ties_and_fails_on_nan() -> None:
    ref = np.array([[1.0, 0.0], [0.5, 0.50001]], np.float32)
    flipped = ref[:, ::-1].copy()
    assert compare_logits(ref, ref, 1e-4) == {"ok": True, "max_abs_diff": 0.0, "top1_agree": 2,
                                              "top1_total": 2, "top1_ties": 1}  # fmt: skip
    # the second row is a tie within tolerance: a flip there is no failure, the first row is
    near = ref.copy()
    near[1] = [0.50001, 0.5]
    assert compare_logits(ref, near, 1e-4)["ok"] is True
    assert compare_logits(ref, flipped, 0.4)["ok"] is False  # not a tie: margin 1 > 0.8
    assert compare_logits(ref, np.full_like(ref, np.nan), 1e-4)["ok"] is False
    assert compare_logits(ref, ref[:1], 1e-4)["ok"] is False


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_fallback_for_models_torch_export_cannot_capture(tmp_path: Path) -> None:
    class Branchy(nn.Module):  # Python control flow on a tensor value: torch.export refuses it
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(6, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x) if x.sum() > -1e9 else -self.fc(x)

    report = export_student(Branchy(), torch.randn(10, 6), tmp_path, batch_size=4)
    assert report["formats"]["torch_export"]["file"] == "student.ts"
    assert "jit.trace" in report["formats"]["torch_export"]["exporter"]
    assert "dynamo=False" in report["formats"]["onnx"]["exporter"]
    assert (tmp_path / "student.ts").is_file() and not (tmp_path / "student.pt2").exists()
    out = torch.jit.load(str(tmp_path / "student.ts"))(torch.ones(3, 6))
    assert out.shape == (3, 3)


def test_bad_run_directories_are_refused_clearly(onnx_run: Path, tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="does not exist"):
        export_run(tmp_path / "nowhere")
    with pytest.raises(RunDirError, match=r"no config.yaml .*not a run directory"):
        export_run(tmp_path)
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(onnx_run / "config.yaml", unfinished / "config.yaml")
    with pytest.raises(RunDirError, match=r"no student\.pt: the job did not finish"):
        export_run(unfinished)
    (unfinished / "student.pt").write_bytes((onnx_run / "student.pt").read_bytes()[:300])
    with pytest.raises(RunDirError, match=r"student\.pt cannot be loaded .*damaged"):
        export_run(unfinished)
    torch.save({"other.weight": torch.zeros(1)}, unfinished / "student.pt")
    with pytest.raises(RunDirError, match="damaged or from another job"):
        export_run(unfinished)
    classify = tmp_path / "classify"
    classify.mkdir()
    text = (onnx_run / "config.yaml").read_text().replace("task: distill", "task: classify")
    (classify / "config.yaml").write_text(text)
    with pytest.raises(RunDirError, match="task=classify run, not a distillation run"):
        export_run(classify)
    with pytest.raises(ExportError, match="unknown export format"):
        export_run(onnx_run, formats=("tflite",))
    assert export.main([str(tmp_path / "nowhere")]) == 2  # the CLI: one line, no traceback


def test_export_config_values_are_checked_at_start_up() -> None:
    with pytest.raises(ConfigError, match=r"export='tflite' is not one of null, onnx"):
        check_config(compose(["export=tflite"]))
    with pytest.raises(ConfigError, match="needs task=distill"):
        check_config(compose(["export=onnx", "task=classify"]))
    with pytest.raises(ConfigError, match=r"benchmark\.threads=0 must be >= 1"):
        check_config(compose(["benchmark.threads=0"]))
    check_config(compose(["export=all"]))


def test_cli_prints_the_check(
    onnx_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = copy_run(onnx_run, tmp_path / "run")
    assert export.main([str(run_dir), "--formats", "onnx", "--max-samples", "50"]) == 0
    out = capsys.readouterr().out
    assert "student.onnx" in out and "50/50" in out and "atol=0.0001" in out
    assert json.loads((run_dir / "export" / "export.json").read_text())["n_samples"] == 50


def test_a_cli_run_without_config_yaml_is_read_from_its_hydra_folder(tmp_path: Path) -> None:
    hydra = tmp_path / ".hydra"
    hydra.mkdir()
    (hydra / "config.yaml").write_text(
        "seed: 3\npaths:\n  root_dir: ${hydra:runtime.cwd}\n  data_dir: ${paths.root_dir}/data\n"
    )
    (hydra / "hydra.yaml").write_text("hydra:\n  runtime:\n    cwd: /somewhere\n")
    cfg = load_config(tmp_path)
    assert cfg.seed == 3 and cfg.paths.data_dir == "/somewhere/data" and "hydra" not in cfg


def test_each_data_module_gives_back_the_stored_values_and_their_normalization(
    tmp_path: Path,
) -> None:
    """RawInput: to_raw inverts each module's normalization exactly (the stored integers), and
    the normalizer (what the exported graph applies) maps them back to the model inputs."""
    from fake_files import write_cifar, write_idx_dataset

    from kdlightning.data import (
        CIFAR10DataModule,
        DigitsDataModule,
        FashionMNISTDataModule,
        MNIST1DDataModule,
    )

    arrays = write_idx_dataset(tmp_path / "FashionMNIST" / "raw", n_train=30, n_test=10)
    write_cifar(tmp_path, "cifar-10", n_train=50, n_test=20)
    cases = {
        "digits": (DigitsDataModule(), None),
        "fashion": (FashionMNISTDataModule(str(tmp_path), val_size=5, system_dir=None),
                    arrays["t10k-images-idx3-ubyte"][:, None].astype(np.float32)),
        "cifar": (CIFAR10DataModule(str(tmp_path), val_size=10, check_md5=False, num_workers=0),
                  None),
        "mnist1d": (MNIST1DDataModule(num_samples=200, val_size=20), None),
    }  # fmt: skip
    for name, (dm, stored) in cases.items():
        x = split_inputs(dm, None)
        spec = dm.raw_input()
        raw = spec.to_raw(x)
        if stored is not None:
            np.testing.assert_array_equal(raw.numpy(), stored)  # the idx file's bytes
        if spec.integer:
            low, high = spec.value_range
            assert raw.min() >= low and raw.max() <= high and bool((raw == raw.round()).all())
        else:
            assert spec.is_identity and raw is x, name
        torch.testing.assert_close(spec.normalizer()(raw), x, atol=1e-6, rtol=0, msg=name)
