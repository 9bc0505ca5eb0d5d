"""kdlightning.report: aggregation and best setting on synthetic sweeps; a real multirun."""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST, read_json, run_module
from omegaconf import OmegaConf

from kdlightning.cache import read_events
from kdlightning.report import FILES, Job, aggregate, best_setting, collect_jobs, main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def job(t: float, a: float, seed: int, val: float, test: float, status: str = "ok") -> Job:
    ok = status == "ok"
    return Job(num=0, dir="", overrides=[], temperature=t, alpha=a, seed=seed, status=status,
               val_acc=val if ok else None, test_acc=test if ok else None,
               test_agreement=0.9 if ok else None)  # fmt: skip


def test_aggregate_is_mean_and_sample_std_over_seeds() -> None:
    rows = aggregate(
        [job(1, 0.5, 0, 0.80, 0.70), job(1, 0.5, 1, 0.90, 0.75), job(1, 0.5, 2, 0.85, 0.80),
         job(4, 0.9, 0, 0.95, 0.60), job(4, 0.9, 1, 0.0, 0.0, status="failed")]
    )  # fmt: skip
    by = {(r["temperature"], r["alpha"]): r for r in rows}
    r = by[(1, 0.5)]
    assert r["n"] == 3 and r["seeds"] == [0, 1, 2]
    assert r["val_acc_mean"] == pytest.approx(0.85)
    assert r["val_acc_std"] == pytest.approx(0.05)  # sample std (n - 1) of .80 .90 .85
    assert r["test_acc_mean"] == pytest.approx(0.75)
    assert by[(4, 0.9)]["n"] == 1  # the failed seed is not averaged in as a zero
    assert by[(4, 0.9)]["val_acc_std"] == 0.0


def test_best_is_chosen_on_validation_not_test() -> None:
    rows = aggregate(
        [job(2, 0.5, 0, 0.91, 0.99), job(2, 0.5, 1, 0.91, 0.99),   # best on test
         job(8, 0.1, 0, 0.95, 0.80), job(8, 0.1, 1, 0.93, 0.80)]   # best on validation
    )  # fmt: skip
    best = best_setting(rows)
    assert best is not None
    assert (best["temperature"], best["alpha"]) == (8, 0.1)
    assert best["test_acc_mean"] == pytest.approx(0.80)


def test_validation_ties_go_to_the_smaller_spread() -> None:
    rows = aggregate(
        [job(1, 0.5, 0, 0.80, 0.9), job(1, 0.5, 1, 0.90, 0.9),
         job(4, 0.5, 0, 0.85, 0.1), job(4, 0.5, 1, 0.85, 0.1)]
    )  # fmt: skip
    best = best_setting(rows)
    assert best is not None and best["temperature"] == 4


def test_no_finished_job_means_no_best() -> None:
    assert best_setting(aggregate([job(1, 0.5, 0, 0, 0, status="failed")])) is None


def fake_sweep(root: Path, jobs: list[dict[str, Any]], task: list[str]) -> Path:
    """A multirun folder as Hydra and kdlightning.train leave it, without training anything."""
    root.mkdir(parents=True)
    hydra = {"hydra": {"sweeper": {"params": None}, "overrides": {"task": task}}}
    OmegaConf.save(OmegaConf.create(hydra), root / "multirun.yaml")
    for num, spec in enumerate(jobs):
        d = root / str(num)
        (d / ".hydra").mkdir(parents=True)
        overrides = [f"kd.temperature={spec['T']}", f"kd.alpha={spec['a']}", f"seed={spec['seed']}"]
        OmegaConf.save(OmegaConf.create(overrides), d / ".hydra" / "overrides.yaml")
        cfg = {"seed": spec["seed"], "kd": {"temperature": spec["T"], "alpha": spec["a"]},
               "paths": {"output_dir": "${hydra:runtime.output_dir}"}}  # fmt: skip
        OmegaConf.save(OmegaConf.create(cfg), d / ".hydra" / "config.yaml")
        if "val" in spec:
            results = {
                "teacher": {"test/acc": 0.97 + spec["seed"] / 100, "cache": {"hit": num > 1}},
                "baseline": {"test/acc": 0.90},
                "distilled": {"val/acc": spec["val"], "test/acc": spec["test"],
                              "test/agreement": 0.95},
            }  # fmt: skip
            (d / "results.json").write_text(json.dumps(results))
        elif spec.get("failed"):
            (d / "failed.json").write_text(json.dumps({"error": "ValueError: boom"}))
    return root


def test_report_files_from_a_synthetic_sweep(tmp_path: Path) -> None:
    # A 3 x 1 x 2 grid: job 2 failed, job 3 never wrote anything (killed) and the two jobs of
    # T=8 never started (no folder at all).
    specs = [
        {"T": 1, "a": 0.5, "seed": 0, "val": 0.80, "test": 0.81},
        {"T": 1, "a": 0.5, "seed": 1, "val": 0.84, "test": 0.83},
        {"T": 4, "a": 0.5, "seed": 0, "failed": True},
        {"T": 4, "a": 0.5, "seed": 1},
    ]
    sweep = fake_sweep(
        tmp_path / "sweep", specs, ["kd.temperature=1,4,8", "kd.alpha=0.5", "seed=0,1"]
    )
    jobs = collect_jobs(sweep)
    statuses = [(j.num, j.temperature, j.alpha, j.seed, j.status) for j in jobs]
    assert statuses == [
        (0, 1, 0.5, 0, "ok"), (1, 1, 0.5, 1, "ok"), (2, 4, 0.5, 0, "failed"),
        (3, 4, 0.5, 1, "unfinished"), (4, 8, 0.5, 0, "not started"), (5, 8, 0.5, 1, "not started"),
    ]  # fmt: skip

    assert main([str(sweep), "--wandb", "off"]) == 0
    with open(sweep / FILES["jobs"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and rows[2]["error"] == "ValueError: boom"
    with open(sweep / FILES["aggregate"]) as f:
        agg = list(csv.DictReader(f))
    assert len(agg) == 1 and math.isclose(float(agg[0]["val_acc_mean"]), 0.82)
    md = (sweep / FILES["markdown"]).read_text()
    assert "T=1, alpha=0.5: validation 82.00 ± 2.83%, test 82.00 ± 1.41% over 2 seed(s)" in md
    assert "teacher 97.50 ± 0.71%" in md and "student alone 90.00 ± 0.00%" in md
    assert "## Failed or unfinished jobs" in md and "ValueError: boom" in md
    assert (sweep / FILES["heatmap"]).read_bytes().startswith(PNG_SIGNATURE)
    summary = read_json(sweep / FILES["json"])
    assert summary["counts"] == {"ok": 2, "failed": 1, "unfinished": 1, "not started": 2}


def test_an_empty_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no Hydra job folders"):
        collect_jobs(tmp_path)


@pytest.mark.slow
def test_real_multirun_trains_the_teacher_once_and_reports(tmp_path: Path) -> None:
    sweep = tmp_path / "multirun"
    # 2 temperatures x 3 alphas, where alpha=1.5 is invalid: those two jobs fail at once, the
    # four others must still run, share one teacher and show up in the report.
    start = time.perf_counter()
    proc = run_module(
        "kdlightning.train", "-m", *FAST, "kd.temperature=1,2", "kd.alpha=0.5,1.5,0.9",
        f"paths.log_dir={tmp_path / 'logs'}", f"hydra.sweep.dir={sweep}", "teacher=mlp",
        "benchmark.repeats=1", "benchmark.warmup=0", check=False,
    )  # fmt: skip
    print(f"multirun of 6 jobs: {time.perf_counter() - start:.1f} s")
    assert proc.returncode != 0, "Hydra re-raises the first failed job once all jobs ran"
    assert "alpha must lie in [0, 1]" in proc.stderr

    job_dirs = sorted(p for p in sweep.iterdir() if p.name.isdigit())
    assert len(job_dirs) == 6
    done = [d for d in job_dirs if (d / "results.json").is_file()]
    failed = [d for d in job_dirs if (d / "failed.json").is_file()]
    assert len(done) == 4 and len(failed) == 2

    # The teacher (and the baseline) were trained by one job and loaded by the three others.
    events = read_events(tmp_path / "logs" / "cache")
    for stage in ("teacher", "baseline"):
        hits = [e["hit"] for e in events if e["stage"] == stage]
        assert sorted(hits) == [False, True, True, True], (stage, events)
    trainings = sum("Training the teacher" in (d / "train.log").read_text() for d in job_dirs)
    assert trainings == 1
    results = [read_json(d / "results.json") for d in done]
    assert sum(r["teacher"]["cache"]["hit"] for r in results) == 3
    assert len({r["teacher"]["test/acc"] for r in results}) == 1

    report = run_module("kdlightning.report", str(sweep))
    assert "Best setting (chosen on validation accuracy)" in report.stdout
    with open(sweep / FILES["jobs"]) as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows].count("ok") == 4
    assert [r["status"] for r in rows].count("failed") == 2
    assert {(r["temperature"], r["alpha"]) for r in rows if r["status"] == "ok"} == {
        ("1.0", "0.5"),
        ("1.0", "0.9"),
        ("2.0", "0.5"),
        ("2.0", "0.9"),
    }
    ok_rows = [r for r in rows if r["status"] == "ok"]
    by_dir = {d.name: read_json(d / "results.json")["distilled"] for d in done}
    for r in ok_rows:  # the table carries the jobs' own numbers
        assert float(r["val_acc"]) == by_dir[r["dir"]]["val/acc"]
        assert float(r["test_agreement"]) == by_dir[r["dir"]]["test/agreement"]
    with open(sweep / FILES["aggregate"]) as f:
        assert len(list(csv.DictReader(f))) == 4
    md = (sweep / FILES["markdown"]).read_text()
    assert "## Mean ± std over seeds" in md and "## Jobs" in md and "failed" in md

    png = sweep / FILES["heatmap"]
    assert png.read_bytes().startswith(PNG_SIGNATURE)
    import matplotlib.image

    image = matplotlib.image.imread(png)  # decodes: a real image, not just a header
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400
    assert image.std() > 0.05  # not a blank canvas


def test_committed_sweep_config_is_the_12_job_grid_and_seeds_multiply_it(tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir

    from kdlightning.report import expected_overrides

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(str(conf), version_base="1.3"):
        cfg = compose("train", overrides=["+sweep=temperature_alpha"], return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    assert params == {"kd.temperature": "1,2,4,8", "kd.alpha": "0.1,0.5,0.9"}
    # Expand it the way the basic sweeper does (the report's own expansion of multirun.yaml).
    for task, n in (
        (["+sweep=temperature_alpha"], 12),
        (["+sweep=temperature_alpha", "seed=0,1,2"], 36),
    ):
        (tmp_path / "multirun.yaml").write_text(
            OmegaConf.to_yaml(
                {"hydra": {"sweeper": {"params": params}, "overrides": {"task": task}}}
            )
        )
        jobs = expected_overrides(tmp_path)
        assert jobs is not None and len(jobs) == n
        assert len({tuple(j) for j in jobs}) == n
