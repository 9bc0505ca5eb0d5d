"""The teacher's life cycle: task=classify, loading its outputs, teacher/val_acc, chance warning."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import FAST, cli_env, read_json, run_module
from lightning.pytorch.loggers import CSVLogger

from kdlightning.checkpoints import read_state_dict
from kdlightning.teacher import check_task, report_teacher, teacher_is_near_chance


def test_near_chance_threshold() -> None:
    assert teacher_is_near_chance(0.14, 10) and teacher_is_near_chance(0.15, 10)
    assert not teacher_is_near_chance(0.16, 10)
    assert teacher_is_near_chance(0.7, 2) and not teacher_is_near_chance(0.8, 2)


def test_report_logs_teacher_val_acc_and_warns_loudly_near_chance(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path, name="logs", version="teacher")
    trainer = L.Trainer(logger=logger, default_root_dir=tmp_path, enable_progress_bar=False)
    metrics = {"val/acc": 0.11, "test/acc": 0.1}
    with pytest.warns(UserWarning, match=r"NO BETTER THAN CHANCE.*0\.110 with 10 classes"):
        report_teacher(trainer, metrics, num_classes=10)
    assert metrics["teacher/val_acc"] == 0.11 and metrics["teacher/near_chance"] is True
    with open(tmp_path / "logs" / "teacher" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["teacher/val_acc"]) for r in rows] == [pytest.approx(0.11)]
    good = {"val/acc": 0.9}
    report_teacher(trainer, good, num_classes=10)
    assert good["teacher/near_chance"] is False


@pytest.mark.filterwarnings("error::UserWarning")
def test_a_good_teacher_raises_no_warning(tmp_path: Path) -> None:
    trainer = L.Trainer(logger=False, default_root_dir=tmp_path, enable_progress_bar=False)
    report_teacher(trainer, {"val/acc": 0.95}, num_classes=10)


def test_unknown_task() -> None:
    assert check_task("classify") == "classify"
    with pytest.raises(ValueError, match=r"unknown task 'clasify'.*task=classify"):
        check_task("clasify")


@pytest.mark.slow
def test_classify_then_distill_from_its_checkpoint_and_state_dict(tmp_path: Path) -> None:
    common = [*FAST, "logger=csv", f"paths.log_dir={tmp_path}"]
    run_module("kdlightning.train", "task=classify", f"hydra.run.dir={tmp_path / 't'}", *common)
    teacher = read_json(tmp_path / "t" / "results.json")
    assert set(teacher) == {"teacher", "summary"} and teacher["summary"]["task"] == "classify"
    ckpt = Path(teacher["teacher"]["checkpoint"])
    assert ckpt.is_file() and (tmp_path / "t" / "teacher.pt").is_file()
    assert teacher["teacher"]["teacher/val_acc"] == teacher["teacher"]["val/acc"]

    out = tmp_path / "kd"
    run_module("kdlightning.train", f"teacher.checkpoint={ckpt}", f"hydra.run.dir={out}",
               "baseline=false", *common)  # fmt: skip
    results = read_json(out / "results.json")
    # the same weights on the same validation split: the same accuracy, logged before KD
    assert results["teacher"]["teacher/val_acc"] == pytest.approx(teacher["teacher"]["val/acc"])
    assert results["teacher"]["checkpoint"] == str(ckpt.resolve())
    assert results["teacher"]["test/acc"] == pytest.approx(teacher["teacher"]["test/acc"])
    logged = (out / "logs" / "teacher" / "metrics.csv").read_text()
    assert "teacher/val_acc" in logged.splitlines()[0]
    # teacher.pt is the same network as a plain state dict: what teacher.checkpoint also takes
    from_ckpt, plain = read_state_dict(ckpt), read_state_dict(tmp_path / "t" / "teacher.pt")
    assert from_ckpt.keys() == plain.keys()
    assert all(torch.equal(from_ckpt[k], plain[k]) for k in plain)


@pytest.mark.slow
def test_a_checkpoint_of_another_architecture_fails_with_the_keys(tmp_path: Path) -> None:
    bogus = tmp_path / "mlp.pt"
    torch.save(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).state_dict(), bogus)
    proc = run_module("kdlightning.train", f"teacher.checkpoint={bogus}", *FAST,
                      f"hydra.run.dir={tmp_path / 'run'}", check=False)  # fmt: skip
    assert proc.returncode != 0
    err = proc.stderr
    assert "does not fit the configured teacher model" in err
    assert "missing keys: features.0.weight" in err and "unexpected keys: 1.bias, 1.weight" in err


@pytest.mark.slow
def test_pretrained_torchvision_teacher_from_the_local_cache_is_evaluated_not_trained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torchvision = pytest.importorskip("torchvision")
    from fake_files import write_image_folder

    from kdlightning.models.hub import torchvision_weights_file

    write_image_folder(tmp_path / "images" / "train", classes=3, per_class=6, size=32)
    write_image_folder(tmp_path / "images" / "val", classes=3, per_class=2, size=32)
    # A 3-class resnet18 saved where torchvision caches IMAGENET1K_V1 stands in for the file.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    env = cli_env()
    path, _ = torchvision_weights_file("resnet18", "IMAGENET1K_V1")
    path.parent.mkdir(parents=True)
    source = torchvision.models.resnet18(num_classes=3)
    torch.save(source.state_dict(), path)
    run_module(
        "kdlightning.train", *FAST, "data=imagefolder", f"data.root={tmp_path / 'images'}",
        "data.image_size=32", "data.val_size=6", "data.batch_size=6", "data.num_workers=0",
        "teacher=torchvision", "teacher.model.weights=IMAGENET1K_V1", "teacher.pretrained=true",
        "student=mlp", "baseline=false", f"hydra.run.dir={tmp_path / 'run'}", env=env,
    )  # fmt: skip
    results = read_json(tmp_path / "run" / "results.json")
    assert "teacher/val_acc" in results["teacher"]
    assert not (tmp_path / "run" / "teacher" / "checkpoints").exists()  # never fitted
    # the distilled stage saw the very same (frozen, loaded) teacher on validation
    assert results["distilled"]["val/teacher_acc"] == pytest.approx(results["teacher"]["val/acc"])
