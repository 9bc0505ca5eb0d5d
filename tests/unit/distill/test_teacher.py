"""The teacher's life cycle: task=classify, loading it (checkpoint, state dict, pretrained),
``teacher/val_acc``, and the near-chance warning."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from conftest import read_json, run_job

from kdlightning.job.cache import load_entry
from kdlightning.job.tasks.image import is_near_chance, warn_if_near_chance
from kdlightning.models.weights import CheckpointError, read_state_dict


def test_near_chance_threshold() -> None:
    assert is_near_chance(0.14, 10) and is_near_chance(0.15, 10)
    assert not is_near_chance(0.16, 10)
    assert is_near_chance(0.7, 2) and not is_near_chance(0.8, 2)


@pytest.mark.parametrize(
    ("role", "advice"),
    [("teacher", "Distilling from it will not help"), ("student", "not worth reporting")],
)
def test_near_chance_sets_the_flag_and_warns_loudly(
    role: str, advice: str, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = {"val/acc": 0.11, "test/acc": 0.1}
    shout = rf"THE {role.upper()} IS NO BETTER THAN CHANCE: validation accuracy 0\.110 with 10"
    with pytest.warns(UserWarning, match=shout) as record:
        warn_if_near_chance(role, metrics, num_classes=10)
    assert len(record) == 1 and advice in str(record[0].message)
    assert metrics[f"{role}/near_chance"] is True
    assert "!" * 80 in caplog.text  # the log gets a banner, hard to miss among Lightning's lines
    good = {"val/acc": 0.9}
    warn_if_near_chance(role, good, num_classes=10)
    assert good[f"{role}/near_chance"] is False


@pytest.mark.filterwarnings("error::UserWarning")
def test_a_good_teacher_raises_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    warn_if_near_chance("teacher", {"val/acc": 0.95}, num_classes=10)
    assert "CHANCE" not in caplog.text


def test_classify_then_distill_from_its_checkpoint_and_state_dict(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    classify, _ = run_job(tmp_path, "task=classify", "logger=csv", name="t")
    on_disk = read_json(tmp_path / "t" / "results.json")
    assert set(on_disk) == {"teacher", "summary"} and on_disk["summary"]["task"] == "classify"
    assert not (tmp_path / "t" / "student.pt").exists()
    ckpt = Path(classify["teacher"]["checkpoint"])
    assert ckpt.is_file() and (tmp_path / "t" / "teacher.pt").is_file()
    assert on_disk["summary"]["state_dict"] == str(tmp_path / "t" / "teacher.pt")
    assert classify["teacher"]["teacher/val_acc"] == classify["teacher"]["val/acc"]
    logged = (tmp_path / "t" / "logs" / "teacher" / "metrics.csv").read_text()
    assert "teacher/val_acc" in logged.splitlines()[0]

    caplog.set_level(logging.INFO, logger="kdlightning")
    results, out = run_job(
        tmp_path, f"teacher.checkpoint={ckpt}", "baseline=false", "kd.temperature=2",
        "logger=csv", name="kd",
    )  # fmt: skip
    assert "Loading the teacher from" in caplog.text
    assert "Training the teacher" not in caplog.text
    assert "baseline" not in results and results["summary"]["temperature"] == 2.0
    assert not (out / "teacher" / "checkpoints").exists()  # evaluated, never fitted
    # the same weights on the same validation split: the same accuracy, logged before KD
    assert results["teacher"]["teacher/val_acc"] == pytest.approx(classify["teacher"]["val/acc"])
    assert results["teacher"]["checkpoint"] == str(ckpt.resolve())
    assert results["teacher"]["test/acc"] == pytest.approx(classify["teacher"]["test/acc"])
    logged = (out / "logs" / "teacher" / "metrics.csv").read_text()
    assert "teacher/val_acc" in logged.splitlines()[0]
    # the distilled stage saw that very teacher
    assert results["distilled"]["test/teacher_acc"] == pytest.approx(results["teacher"]["test/acc"])
    # teacher.pt is the same network as a plain state dict: what teacher.checkpoint also takes
    from_ckpt, plain = read_state_dict(ckpt), read_state_dict(tmp_path / "t" / "teacher.pt")
    assert from_ckpt and from_ckpt.keys() == plain.keys()
    assert all(torch.equal(from_ckpt[k], plain[k]) for k in plain)


def test_a_checkpoint_of_another_architecture_fails_with_the_keys(tmp_path: Path) -> None:
    bogus = tmp_path / "mlp.pt"
    torch.save(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).state_dict(), bogus)
    with pytest.raises(CheckpointError) as info:
        run_job(tmp_path, f"teacher.checkpoint={bogus}")  # teacher=cnn, the default
    err = str(info.value)
    assert "does not fit the configured teacher model" in err and str(bogus) in err
    assert "missing keys: features.0.weight" in err and "unexpected keys: 1.bias, 1.weight" in err
    assert not (tmp_path / "job" / "results.json").exists()


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
    path, _ = torchvision_weights_file("resnet18", "IMAGENET1K_V1")
    path.parent.mkdir(parents=True)
    source = torchvision.models.resnet18(num_classes=3)
    torch.save(source.state_dict(), path)
    results, out = run_job(
        tmp_path, "data=imagefolder", f"data.root={tmp_path / 'images'}",
        "data.image_size=32", "data.val_size=6", "data.batch_size=6", "data.num_workers=0",
        "teacher=torchvision", "teacher.model.weights=IMAGENET1K_V1", "teacher.pretrained=true",
        "student=mlp", "baseline=false", "benchmark.batch_size=2", "benchmark.repeats=1",
    )  # fmt: skip
    assert "teacher/val_acc" in results["teacher"]
    assert not (out / "teacher" / "checkpoints").exists()  # never fitted
    # the teacher the job used (stored in the cache) holds the weights of the local file
    stored, _, _ = load_entry(Path(results["teacher"]["cache"]["entry"]))
    expected = source.state_dict()
    assert stored.keys() == expected.keys()
    assert all(torch.equal(stored[k], v) for k, v in expected.items())
    # the distilled stage saw the very same (frozen, loaded) teacher on validation
    assert results["distilled"]["val/teacher_acc"] == pytest.approx(results["teacher"]["val/acc"])
