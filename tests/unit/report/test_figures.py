"""kdlightning.figures: each figure, the run's figures folder, skipping, the CLI, W&B images."""

from __future__ import annotations

import json
import logging
import struct
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import REPO_ROOT, run_job

from kdlightning.data import DigitsDataModule
from kdlightning.figures import (
    FILES,
    FOLDER,
    diagram,
    learning_curves,
    pick_test_image,
    plot_softmax_temperatures,
    process_diagram,
    read_curve,
    save_figure,
    softmax_at,
    softmax_figure,
    tradeoff_figure,
    write_figures,
)
from kdlightning.figures import cli as figures_cli
from kdlightning.job import tracking
from kdlightning.models import MLP

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; fails on anything that is not a PNG."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


# --- softmax at several temperatures ------------------------------------------------------------
def test_softmax_at_flattens_with_temperature() -> None:
    logits = torch.tensor([4.0, 1.0, 0.0])
    maxima = [softmax_at(logits, t).max().item() for t in (1, 2, 4, 8)]
    assert maxima == sorted(maxima, reverse=True) and maxima[0] > maxima[-1]
    assert softmax_at(logits, 1).sum().item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="temperature"):
        softmax_at(logits, 0)


def test_softmax_bars_are_the_softened_probabilities() -> None:
    logits = torch.tensor([3.0, 1.0, 0.5])
    fig = plot_softmax_temperatures(logits, [1, 4], ["a", "b", "c"], highlight=2)
    assert [ax.get_title() for ax in fig.axes] == ["T = 1", "T = 4"]
    for ax, t in zip(fig.axes, (1, 4), strict=True):
        heights = [bar.get_height() for bar in ax.patches]
        assert heights == pytest.approx(softmax_at(logits, t).tolist())
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["a", "b", "c"]
    colors = [bar.get_facecolor() for bar in fig.axes[0].patches]
    assert colors[2] != colors[0]  # the highlighted (true) class stands out
    with pytest.raises(ValueError, match="one sample"):
        plot_softmax_temperatures(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="2 class names for 3 logits"):
        plot_softmax_temperatures(logits, class_names=["a", "b"])


def test_many_classes_show_the_top_ten_in_every_panel() -> None:
    logits = torch.arange(100.0)
    fig = plot_softmax_temperatures(logits, [1, 10], [f"c{i}" for i in range(100)])
    for ax in fig.axes:
        assert len(ax.patches) == 10
        assert ax.get_xticklabels()[0].get_text() == "c99"


@pytest.fixture(scope="module")
def digits() -> DigitsDataModule:
    dm = DigitsDataModule(seed=0)
    dm.setup()
    return dm


def test_softmax_figure_shows_a_real_test_image_with_class_names(digits: DigitsDataModule) -> None:
    torch.manual_seed(0)
    teacher = MLP(10, (1, 8, 8), hidden_sizes=[16])
    fig = softmax_figure(teacher, digits, temperatures=(1, 4, 10), index=3)
    image_ax, *bar_axes = fig.axes
    x, y = digits.test_set[3]
    assert f"true class: {int(y)}" in image_ax.get_title()
    assert image_ax.images[0].get_array().shape == (8, 8)
    assert [ax.get_title() for ax in bar_axes] == ["T = 1", "T = 4", "T = 10"]
    assert [t.get_text() for t in bar_axes[0].get_xticklabels()] == digits.class_names
    with torch.no_grad():
        expected = softmax_at(teacher(x.unsqueeze(0))[0], 4)
    assert [b.get_height() for b in bar_axes[1].patches] == pytest.approx(expected.tolist())
    with pytest.raises(ValueError, match="outside the test set"):
        softmax_figure(teacher, digits, index=len(digits.test_set))
    with pytest.raises(ValueError, match="temperature"):
        softmax_figure(teacher, digits, temperatures=(1, -2))


def test_the_default_image_is_one_the_teacher_gets_right(digits: DigitsDataModule) -> None:
    # A "teacher" that reads the label off a lookup: right and sure except on one image.
    x_all = torch.stack([digits.test_set[i][0] for i in range(len(digits.test_set))])
    y_all = torch.tensor([int(digits.test_set[i][1]) for i in range(len(digits.test_set))])

    class Oracle(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor(8.0))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            rows = (x.flatten(1)[:, None] == x_all.flatten(1)[None]).all(-1).float().argmax(1)
            logits = torch.nn.functional.one_hot(y_all[rows], 10).float() * self.scale
            logits[rows == 5, (int(y_all[5]) + 1) % 10] = 4.0  # image 5: a clear second class
            return logits

    index, image, label, logits = pick_test_image(Oracle(), digits)
    assert index == 5 and label == int(y_all[5]) and int(logits.argmax()) == label
    assert torch.equal(image, x_all[5])


def test_class_names_come_from_each_data_set(tmp_path: Path) -> None:
    from fake_files import write_cifar, write_image_folder

    from kdlightning.data import CIFAR10DataModule, CIFAR100DataModule, ImageFolderDataModule
    from kdlightning.data.mnist import FashionMNISTDataModule

    assert DigitsDataModule().class_names == [str(i) for i in range(10)]
    assert FashionMNISTDataModule().class_names[-1] == "Ankle boot"
    assert CIFAR10DataModule().class_names[:2] == ["airplane", "automobile"]
    write_image_folder(tmp_path / "images" / "train", classes=3)
    write_image_folder(tmp_path / "images" / "test", classes=3)
    folder = ImageFolderDataModule(root=str(tmp_path / "images"), image_size=16, val_size=2)
    assert folder.class_names == ["class0", "class1", "class2"]
    write_cifar(tmp_path, "cifar-100", n_train=40, n_test=12)
    dm = CIFAR100DataModule(data_dir=str(tmp_path), check_md5=False, val_size=5, num_workers=0)
    # 100 classes: the names of its meta file once set up; 10 bars; a colour image
    torch.manual_seed(0)
    fig = softmax_figure(MLP(100, (3, 32, 32), hidden_sizes=[8]), dm, temperatures=(1, 4))
    assert dm.class_names[:2] == ["c0", "c1"]
    assert fig.axes[0].images[0].get_array().shape == (32, 32, 3)
    assert all(len(ax.patches) == 10 for ax in fig.axes[1:])
    assert fig.axes[1].get_xticklabels()[0].get_text().startswith("c")


# --- the process diagram ------------------------------------------------------------------------
def test_process_diagram_is_regenerated_as_a_png_of_the_committed_size(tmp_path: Path) -> None:
    path = save_figure(process_diagram(), tmp_path / "process.png")
    expected = (round(diagram.WIDTH * diagram.DPI), round(diagram.HEIGHT * diagram.DPI))
    assert png_size(path) == expected
    committed = REPO_ROOT / "docs" / "figures" / "process.png"
    assert committed.is_file(), "regenerate it: benchmarks/figures.sh"
    assert png_size(committed) == expected


def test_process_diagram_writes_a_runs_values_into_the_formula() -> None:
    def texts(fig: Any) -> str:
        return "\n".join(t.get_text() for t in fig.axes[0].texts)

    symbols, values = texts(process_diagram()), texts(process_diagram(temperature=4, alpha=0.9))
    assert "softmax($z_t$ / T)" in symbols and "α · T² · KL" in symbols
    assert "softmax($z_t$ / 4)" in values and "0.9 · 4² · KL" in values and "(1 − 0.9)" in values


# --- accuracy against size and latency ----------------------------------------------------------
RESULTS = {
    "teacher": {"test/acc": 0.98, "params": 128_490, "latency_ms": 10.0},
    "baseline": {"test/acc": 0.89, "params": 2_410, "latency_ms": 0.04},
    "distilled": {"test/acc": 0.94, "params": 2_410, "latency_ms": 0.04},
}


def test_tradeoff_places_each_model_at_its_params_latency_and_accuracy() -> None:
    fig = tradeoff_figure(RESULTS)
    by_params, by_latency = fig.axes
    assert by_params.get_xscale() == "log" and by_latency.get_xscale() == "log"
    points = [list(c.get_offsets()[0]) for c in by_params.collections]
    assert points == [[128_490, 98.0], [2_410, 89.0], [2_410, 94.0]]
    assert list(by_latency.collections[0].get_offsets()[0]) == [10.0, 98.0]
    assert any("+5.0 points" in t.get_text() for t in by_params.texts)


def test_tradeoff_without_latency_has_one_panel_and_needs_two_models() -> None:
    no_latency = {k: {**v, "latency_ms": None} for k, v in RESULTS.items()}
    assert len(tradeoff_figure(no_latency).axes) == 1
    with pytest.raises(ValueError, match=r"at least two .* found \['teacher'\]"):
        tradeoff_figure({"teacher": RESULTS["teacher"]})


# --- learning curves ----------------------------------------------------------------------------
CSV = """epoch,step,train/loss_epoch,val/acc,test/acc
0,9,,0.5,
0,9,1.2,,
1,19,,0.7,
1,19,0.9,,
2,20,,0.72,
2,20,,,0.7
"""  # epoch 2: the best checkpoint's validation and test after training, not a trained epoch


def write_csv(run_dir: Path, stage: str, text: str = CSV) -> Path:
    path = run_dir / "logs" / stage / "metrics.csv"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    return path


def test_read_curve_keeps_trained_epochs_only(tmp_path: Path) -> None:
    assert read_curve(write_csv(tmp_path, "distilled")) == ([0, 1], [0.5, 0.7])


def test_learning_curves_read_a_cached_stage_where_it_trained(tmp_path: Path) -> None:
    earlier, run = tmp_path / "earlier", tmp_path / "run"
    write_csv(earlier, "baseline", CSV.replace("0.7,", "0.6,"))
    write_csv(run, "distilled")
    (run / "results.json").write_text(json.dumps({
        "teacher": {"val/acc": 0.99},
        "baseline": {"cache": {"hit": True, "trained_in": str(earlier)}},
    }))  # fmt: skip
    ax = learning_curves(run).axes[0]
    lines = {line.get_label(): list(line.get_ydata()) for line in ax.get_lines()}
    assert lines["student alone"] == pytest.approx([50.0, 60.0])
    assert lines["distilled student"] == pytest.approx([50.0, 70.0])
    assert lines["teacher (its best)"] == pytest.approx([99.0, 99.0])
    with pytest.raises(FileNotFoundError, match="logger=csv"):
        learning_curves(tmp_path / "empty")


# --- a real run: written at the end of the job, skipped when impossible, re-drawn by the CLI -----
@pytest.fixture(scope="module")
def fast_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    return run_job(tmp_path_factory.mktemp("figures"), "data.num_labeled=50", "figures=true")


def test_the_job_writes_every_figure_after_its_results(fast_run: tuple[dict, Path]) -> None:
    results, run_dir = fast_run
    assert set(results) >= {"teacher", "baseline", "distilled"}
    for name in FILES.values():
        assert png_size(run_dir / FOLDER / name)[0] > 300, name
    assert (run_dir / "results.json").stat().st_mtime <= (
        run_dir / FOLDER / FILES["tradeoff"]
    ).stat().st_mtime


def test_the_cli_redraws_a_finished_run(
    fast_run: tuple[dict, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, run_dir = fast_run
    softmax = run_dir / FOLDER / FILES["softmax"]
    softmax.unlink()
    assert figures_cli.main([str(run_dir), "--temperatures", "1", "2"]) == 0
    assert png_size(softmax)[0] > 300 and str(softmax) in capsys.readouterr().out
    assert figures_cli.main([str(tmp_path)]) == 1
    assert "holds no results.json" in capsys.readouterr().out


def test_a_figure_that_fails_is_skipped_and_the_job_keeps_its_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from kdlightning.figures import write as figures_write

    def broken(results: Any) -> Any:
        raise RuntimeError("drawing broke")

    monkeypatch.setattr(figures_write, "tradeoff_figure", broken)
    with caplog.at_level(logging.WARNING, logger="kdlightning.figures.write"):
        results, run_dir = run_job(tmp_path, "baseline=false", "logger=none", "figures=true")
    assert "distilled" in results and (run_dir / "results.json").is_file()
    written = sorted(p.name for p in (run_dir / FOLDER).iterdir())
    assert written == [FILES["process"], FILES["softmax"]]  # no CSV logs, no tradeoff
    skipped = caplog.text
    assert "tradeoff.png skipped: drawing broke" in skipped
    # why, and how the next run gets them
    assert "learning_curves.png skipped: learning curves are read from the CSV logger" in skipped
    assert "this run had logger=none" in skipped and "add logger=csv" in skipped


def test_learning_curves_come_from_tensorboard_without_the_csv_logger(tmp_path: Path) -> None:
    """``logger=[csv,tensorboard]`` writes both; TensorBoard's events alone give the same
    curves as metrics.csv (logger=tensorboard without the CSV logger still gets the figure)."""
    from kdlightning.figures.curves import read_tensorboard_curve, stage_csv, stage_events

    _, run_dir = run_job(tmp_path, "logger=[csv,tensorboard]", "trainer.max_epochs=3")
    for stage in ("teacher", "baseline", "distilled"):
        csv_path, events = stage_csv(run_dir, stage), stage_events(run_dir, stage)
        assert csv_path is not None and events == run_dir / "tensorboard" / stage
        from_csv = read_curve(csv_path)
        assert len(from_csv[0]) == 3
        epochs, values = read_tensorboard_curve(events)
        assert epochs == from_csv[0] and values == pytest.approx(from_csv[1]), stage
    for csv_file in run_dir.glob("logs/*/metrics.csv"):
        csv_file.unlink()  # as if the run had logger=tensorboard alone
    lines = {line.get_label(): list(line.get_ydata())
             for line in learning_curves(run_dir).axes[0].get_lines()}  # fmt: skip
    assert len(lines["distilled student"]) == 3 and len(lines["student alone"]) == 3


def test_a_teacher_only_run_gets_the_figures_that_make_sense(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="kdlightning.figures.write"):
        _, run_dir = run_job(tmp_path, "task=classify", "figures=true")
    written = sorted(p.name for p in (run_dir / FOLDER).iterdir())
    assert written == [FILES["curves"], FILES["softmax"]]  # the teacher's curve and outputs
    assert "process.png skipped: a teacher-only run" in caplog.text
    assert "tradeoff.png skipped: needs test/acc and params of at least two" in caplog.text
    assert write_figures(tmp_path / "none", {}) == []  # nothing to draw from: nothing, no error


# --- W&B ----------------------------------------------------------------------------------------
def test_figures_are_logged_to_the_open_wandb_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logged: list[dict] = []
    run = types.SimpleNamespace(log=logged.append)
    fake = types.SimpleNamespace(run=run, Image=lambda path: ("image", path))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    tracking.log_images([tmp_path / "tradeoff.png", tmp_path / "process.png"])
    assert logged == [{
        "figures/tradeoff": ("image", str(tmp_path / "tradeoff.png")),
        "figures/process": ("image", str(tmp_path / "process.png")),
    }]  # fmt: skip
    fake.run = None
    tracking.log_images([tmp_path / "x.png"])  # no run open: nothing logged, no error
    assert len(logged) == 1
