"""kdlightning.report: statistics, best setting, seed tables, broken jobs; real Hydra multiruns."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST, REPO_ROOT, cli_env, read_json, run_module
from omegaconf import OmegaConf

from kdlightning.job.cache import read_events
from kdlightning.report import (
    BY_ROLE_FILE,
    FILES,
    SweepJob,
    aggregate,
    best_setting,
    by_role,
    collect_jobs,
    expected_overrides,
    main,
    write_report,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# report.csv's columns, as the report has always written them
CSV_COLUMNS = ["num", "dir", "overrides", "temperature", "alpha", "seed", "status", "val_acc",
               "test_acc", "test_agreement", "teacher_test_acc", "baseline_test_acc",
               "teacher_cached", "error", "setting"]  # fmt: skip


def job(t: float, a: float, seed: int, val: float, test: float, status: str = "ok") -> SweepJob:
    ok = status == "ok"
    metrics = {"distilled": {"val/acc": val, "test/acc": test, "test/agreement": 0.9}}
    return SweepJob(num=0, dir="", overrides=[], temperature=t, alpha=a, seed=seed, status=status,
               metrics=metrics if ok else {})  # fmt: skip


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


def default_results(num: int, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "teacher": {"test/acc": 0.97 + spec["seed"] / 100, "cache": {"hit": num > 1}},
        "baseline": {"test/acc": 0.90},
        "distilled": {"val/acc": spec["val"], "test/acc": spec["test"], "test/agreement": 0.95},
    }


def job_overrides(spec: dict[str, Any]) -> list[str]:
    axes = [f"kd.temperature={spec['T']}", f"kd.alpha={spec['a']}", f"seed={spec['seed']}"]
    return axes + spec.get("extra", [])


def full_grid(specs: list[dict[str, Any]]) -> list[str]:
    """The command-line sweep (``key=v1,v2``) whose grid is exactly these jobs' overrides."""
    values: dict[str, list[str]] = {}
    for spec in specs:
        for key, value in (o.split("=", 1) for o in job_overrides(spec)):
            values.setdefault(key, [])
            if value not in values[key]:
                values[key].append(value)
    return [f"{k}={','.join(v)}" for k, v in values.items()]


def fake_sweep(root: Path, jobs: list[dict[str, Any]], task: list[str] | None = None) -> Path:
    """A multirun folder as Hydra and kdlightning.job.run leave it, without training anything.

    Each spec: T, a, seed; ``extra`` overrides; ``val``/``test`` (a finished job) or
    ``results`` (results.json as given) or ``failed``; ``cfg`` merged into its config.
    ``task``: the command-line sweep in multirun.yaml, by default one of exactly these jobs.
    """
    root.mkdir(parents=True)
    task = full_grid(jobs) if task is None else task
    hydra = {"hydra": {"sweeper": {"params": None}, "overrides": {"task": task}}}
    OmegaConf.save(OmegaConf.create(hydra), root / "multirun.yaml")
    for num, spec in enumerate(jobs):
        d = root / str(num)
        (d / ".hydra").mkdir(parents=True)
        OmegaConf.save(OmegaConf.create(job_overrides(spec)), d / ".hydra" / "overrides.yaml")
        cfg = {
            "seed": spec["seed"],
            "kd": {"temperature": spec["T"], "alpha": spec["a"]},
            "paths": {"output_dir": "${hydra:runtime.output_dir}"},
            **spec.get("cfg", {}),
        }
        OmegaConf.save(OmegaConf.create(cfg), d / ".hydra" / "config.yaml")
        if "results" in spec or "val" in spec:
            results = spec.get("results") or default_results(num, spec)
            (d / "results.json").write_text(json.dumps(results))
        elif spec.get("failed"):
            (d / "failed.json").write_text(json.dumps({"error": "ValueError: boom"}))
    return root


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


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
        assert next(csv.reader(f)) == CSV_COLUMNS
    rows = read_csv(sweep / FILES["jobs"])
    assert len(rows) == 6 and rows[2]["error"] == "ValueError: boom"
    assert rows[0]["temperature"] == "1.0" and rows[0]["teacher_cached"] == "False"
    assert rows[0]["overrides"] == "kd.temperature=1 kd.alpha=0.5 seed=0"
    assert rows[4]["val_acc"] == "" and rows[4]["dir"] == ""
    agg = read_csv(sweep / FILES["aggregate"])
    assert len(agg) == 1 and math.isclose(float(agg[0]["val_acc_mean"]), 0.82)
    assert agg[0]["seeds"] == "0 1"
    md = (sweep / FILES["markdown"]).read_text()
    assert "T=1, alpha=0.5: validation 82.00 ± 2.83%, test 82.00 ± 1.41% over 2 seed(s)" in md
    assert "teacher 97.50 ± 0.71%" in md and "student alone 90.00 ± 0.00%" in md
    assert "## Failed or unfinished jobs" in md and "ValueError: boom" in md
    assert "- job 4 (no folder) `kd.temperature=8 kd.alpha=0.5 seed=0`: not started" in md
    assert (sweep / FILES["heatmap"]).read_bytes().startswith(PNG_SIGNATURE)
    summary = read_json(sweep / FILES["json"])
    assert set(summary) == {"sweep_dir", "counts", "best", "references", "files", "heatmap"}
    assert summary["counts"] == {"ok": 2, "failed": 1, "unfinished": 1, "not started": 2}
    assert not (sweep / BY_ROLE_FILE).exists()  # the seed tables only with --by-role


def test_an_empty_folder_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "wandb").mkdir()  # a folder without a job in it is not a job
    with pytest.raises(FileNotFoundError, match="no Hydra job folders"):
        collect_jobs(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path), "--by-role"])
    assert exit_info.value.code == 2 and "no Hydra job folders" in capsys.readouterr().err


# --- the seed tables: kdl-report DIR --by-role ------------------------------------------------


def role_results(seed: int, teacher: float, alone: float, kd: float) -> dict[str, Any]:
    """results.json of a job whose val accuracy is its test accuracy + 1 point."""

    def role(acc: float, params: int) -> dict[str, Any]:
        return {"test/acc": acc, "val/acc": acc + 0.01, "params": params}

    return {"teacher": role(teacher, 1000), "baseline": role(alone, 100),
            "distilled": role(kd, 100), "summary": {"seed": seed}}  # fmt: skip


def table_row(markdown: str, label: str) -> list[str]:
    """The cells of the Markdown table row that starts with ``label`` (exactly one)."""
    (line,) = [ln for ln in markdown.splitlines() if ln.startswith(f"| {label} ")]
    return [c.strip() for c in line.strip("|").split("|")]


def test_seed_table_by_hand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    specs = [
        {"T": 4, "a": 0.9, "seed": s, "results": role_results(s, *accs)}
        for s, accs in enumerate([(0.90, 0.70, 0.72), (0.92, 0.74, 0.73), (0.94, 0.72, 0.77)])
    ]
    specs.append({"T": 4, "a": 0.9, "seed": 3, "failed": True})  # listed, not averaged
    sweep = fake_sweep(tmp_path / "sweep", specs)
    assert main([str(sweep), "--by-role"]) == 0
    out = capsys.readouterr().out
    md = (sweep / BY_ROLE_FILE).read_text()
    assert md in out
    assert "## T=4, alpha=0.9" in md and "seeds: [0, 1, 2] (n = 3)" in md
    assert table_row(md, "teacher") == ["teacher", "92.00 ± 2.00", "93.00 ± 2.00", "1,000"]
    assert table_row(md, "student alone") == ["student alone", "72.00 ± 2.00", "73.00 ± 2.00",
                                              "100"]  # fmt: skip
    assert table_row(md, "distilled student") == ["distilled student", "74.00 ± 2.65",
                                                  "75.00 ± 2.65", "100"]  # fmt: skip
    # paired differences: +2, -1, +5 points
    assert ("distilled − alone, test acc: 2.00 ± 3.00 points (distillation better in 2 of 3 "
            "seeds)") in md  # fmt: skip
    assert "## Left out (not ok)" in md and "job 3 3/" in md and "ValueError: boom" in md
    assert not (sweep / FILES["jobs"]).exists()  # a view: the sweep report is not rewritten


def test_one_seed_table_per_kd_setting(tmp_path: Path) -> None:
    specs = [
        {"T": 1, "a": 0.9, "seed": 0, "results": role_results(0, 0.9, 0.7, 0.71)},
        {"T": 8, "a": 0.9, "seed": 0, "results": role_results(0, 0.9, 0.7, 0.75)},
    ]
    sweep = fake_sweep(tmp_path / "sweep", specs)
    tables = by_role(collect_jobs(sweep))
    assert [(t["temperature"], t["alpha"], t["n"]) for t in tables] == [(1, 0.9, 1), (8, 0.9, 1)]
    assert tables[1]["gain"]["mean"] == pytest.approx(5.0) and tables[1]["gain"]["wins"] == 1
    main([str(sweep), "--by-role"])
    md = (sweep / BY_ROLE_FILE).read_text()
    assert md.count("\n## ") == 2 and "## T=1, alpha=0.9" in md and "## T=8, alpha=0.9" in md
    kd = [ln for ln in md.splitlines() if ln.startswith("| distilled student ")]
    assert [table_row(ln, "distilled student")[1] for ln in kd] == ["71.00 ± -", "75.00 ± -"]
    assert (
        "distilled − alone, test acc: 1.00 ± - points (distillation better in 1 of 1 seeds)" in md
    )


def test_without_baseline_there_is_no_gain_line(tmp_path: Path) -> None:
    results = role_results(0, 0.9, 0.7, 0.75)
    del results["baseline"]  # baseline=false
    sweep = fake_sweep(tmp_path / "sweep", [{"T": 2, "a": 0.9, "seed": 0, "results": results}])
    main([str(sweep), "--by-role"])
    md = (sweep / BY_ROLE_FILE).read_text()
    assert "| teacher " in md and "| student alone " not in md and "distilled − alone" not in md


# --- a method (or any other swept config group) is a setting of its own ------------------------


def test_a_swept_kd_method_groups_apart(tmp_path: Path) -> None:
    # python -m kdlightning.train -m kd=dkd,dist seed=0,1: never average DKD with DIST.
    specs = [
        {"T": 4, "a": 0.9, "seed": 0, "extra": ["kd=dkd"], "val": 0.80, "test": 0.70},
        {"T": 4, "a": 0.9, "seed": 1, "extra": ["kd=dkd"], "val": 0.82, "test": 0.72},
        {"T": 4, "a": 0.9, "seed": 0, "extra": ["kd=dist"], "val": 0.90, "test": 0.60},
        {"T": 4, "a": 0.9, "seed": 1, "extra": ["kd=dist"], "val": 0.92, "test": 0.62},
    ]
    sweep = fake_sweep(tmp_path / "sweep", specs)
    assert full_grid(specs) == ["kd.temperature=4", "kd.alpha=0.9", "seed=0,1", "kd=dkd,dist"]
    jobs = collect_jobs(sweep)
    assert [j.setting for j in jobs] == ["kd=dkd", "kd=dkd", "kd=dist", "kd=dist"]
    assert {j.status for j in jobs} == {"ok"}  # every grid point found: none "not started"
    rows = aggregate(jobs)
    assert [(r["setting"], r["n"]) for r in rows] == [("kd=dist", 2), ("kd=dkd", 2)]  # sorted
    best = best_setting(rows)
    assert best is not None and best["setting"] == "kd=dist"
    assert best["val_acc_mean"] == pytest.approx(0.91)

    assert main([str(sweep), "--wandb", "off"]) == 0
    md = (sweep / FILES["markdown"]).read_text()
    assert "T=4, alpha=0.9 (kd=dist): validation 91.00 ± 1.41%" in md
    assert [r["setting"] for r in read_csv(sweep / FILES["jobs"])] == [j.setting for j in jobs]
    # no heatmap, and the report says why where it would be
    assert not (sweep / FILES["heatmap"]).exists()
    why = ("No T × alpha heatmap: the sweep varies kd besides T and alpha (2 settings: kd=dist; "
           "kd=dkd), and one T × alpha grid would mix them")  # fmt: skip
    assert why in md
    assert read_json(sweep / FILES["json"])["no_heatmap"].startswith("the sweep varies kd ")
    main([str(sweep), "--by-role"])
    md = (sweep / BY_ROLE_FILE).read_text()
    assert "## kd=dkd, T=4, alpha=0.9" in md and "## kd=dist, T=4, alpha=0.9" in md


# --- language models: bits per byte, lower is better; never ranked with image jobs ------------

LM_DATA = {"data": {"_target_": "kdlightning.lm.data.PyDocsDataModule", "block_size": 64}}
IMAGE_DATA = {"data": {"_target_": "kdlightning.data.digits.DigitsDataModule"}}


def lm_results(seed: int, val: float, test: float, alone: float = 3.50) -> dict[str, Any]:
    """results.json of a language-model job as kdlightning.lm writes it
    (tests/integration/test_lm_job.py): bits per byte, loss and perplexity per role, no accuracy."""

    def role(val_bpb: float, test_bpb: float, params: int) -> dict[str, Any]:
        return {"val/loss": val_bpb * 0.6931, "val/bpb": val_bpb, "val/ppl": 2**val_bpb,
                "test/loss": test_bpb * 0.6931, "test/bpb": test_bpb, "test/ppl": 2**test_bpb,
                "fit_seconds": 1.0, "params": params, "size_bytes": 4 * params,
                "tokens_per_s": 500.0,
                "sample": {"prompt": "def ", "continuation": "x"}}  # fmt: skip

    return {
        "teacher": {**role(2.9, 3.00 + seed / 100, 478272), "cache": {"hit": seed > 0}},
        "baseline": role(alone - 0.01, alone, 35712),
        "distilled": {**role(val, test, 35712), "val/kd_loss": 0.09, "method": "forward_kl"},
        "summary": {"task": "distill", "seed": seed, "temperature": 1.0, "alpha": 0.9,
                    "method": "forward_kl"},
    }  # fmt: skip


def lm_job(t: float, seed: int, val: float, test: float) -> SweepJob:
    metrics = {"distilled": {"val/bpb": val, "test/bpb": test}}
    return SweepJob(num=0, dir="", overrides=[], temperature=t, alpha=0.9, seed=seed,
                    metrics=metrics, status="ok")  # fmt: skip


def test_language_models_are_ranked_by_the_lowest_validation_bpb() -> None:
    rows = aggregate(
        [lm_job(1, 0, 3.30, 3.00), lm_job(1, 1, 3.32, 3.02),   # lowest test bpb
         lm_job(2, 0, 3.20, 3.40), lm_job(2, 1, 3.22, 3.42),   # lowest validation bpb
         lm_job(4, 0, 3.25, 3.10), lm_job(4, 1, 3.27, 3.12)]
    )  # fmt: skip
    assert [r["kind"] for r in rows] == ["lm"] * 3
    assert math.isnan(rows[0]["val_acc_mean"]) and rows[0]["val_bpb_mean"] == pytest.approx(3.31)
    best = best_setting(rows)
    assert best is not None and best["temperature"] == 2  # validation, lower is better
    assert best["test_bpb_mean"] == pytest.approx(3.41)
    # ties on the mean go to the smaller spread, as for accuracies
    tie = aggregate([lm_job(1, 0, 3.0, 3.0), lm_job(1, 1, 3.2, 3.0),
                     lm_job(2, 0, 3.1, 3.0), lm_job(2, 1, 3.1, 3.0)])  # fmt: skip
    assert best_setting(tie)["temperature"] == 2


def test_a_language_model_sweep_is_reported_in_bits_per_byte(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # python -m kdlightning.train -m experiment=lm_pydocs kd.temperature=1,2 seed=0,1
    specs = [
        {"T": 1, "a": 0.9, "seed": 0, "results": lm_results(0, 3.30, 3.00), "cfg": LM_DATA},
        {"T": 1, "a": 0.9, "seed": 1, "results": lm_results(1, 3.32, 3.02), "cfg": LM_DATA},
        {"T": 2, "a": 0.9, "seed": 0, "results": lm_results(0, 3.20, 3.40), "cfg": LM_DATA},
        {"T": 2, "a": 0.9, "seed": 1, "results": lm_results(1, 3.22, 3.42), "cfg": LM_DATA},
        {"T": 4, "a": 0.9, "seed": 0, "failed": True, "cfg": LM_DATA},
    ]
    sweep = fake_sweep(tmp_path / "sweep", specs)
    jobs = collect_jobs(sweep)
    # the failed job's kind from its config's data module; the one never started has none
    assert [j.kind for j in jobs] == ["lm"] * 5 + [None]
    assert main([str(sweep), "--wandb", "off"]) == 0
    out = capsys.readouterr().out
    md = (sweep / FILES["markdown"]).read_text()
    assert md in out
    assert "## Best setting (chosen on validation bits per byte, lower is better)" in md
    assert ("T=2, alpha=0.9: validation 3.2100 ± 0.0141 bpb, test 3.4100 ± 0.0141 bpb over 2 "
            "seed(s).") in md  # fmt: skip
    assert ("Reference test bits per byte (lower is better; mean ± std): teacher 3.0050 ± "
            "0.0071 bpb · student alone 3.5000 ± 0.0000 bpb.") in md  # fmt: skip
    (best_row,) = [ln for ln in md.splitlines() if "(best)" in ln]
    assert [c.strip() for c in best_row.strip("|").split("|")] == [
        "2", "0.9", "2", "3.2100 ± 0.0141 **(best)**", "3.4100 ± 0.0141"]  # fmt: skip
    assert "| val bpb " in md and "| test bpb " in md
    assert table_row(md.split("## Jobs")[1], "0") == ["0", "1", "0.9", "0", "3.3000", "3.0000",
                                                      "ok"]  # fmt: skip
    assert "val acc" not in md and "mixes" not in md
    for line in md.split("## Jobs")[1].splitlines():  # every finished job has its numbers
        if line.endswith(" ok |"):
            assert "| - " not in line
    summary = read_json(sweep / FILES["json"])
    assert summary["kinds"] == ["lm"] and "best_by_kind" not in summary
    assert summary["best"]["temperature"] == 2 and summary["best"]["kind"] == "lm"
    assert summary["best"]["val_bpb_mean"] == pytest.approx(3.21)
    assert summary["best"]["val_acc_mean"] is None  # null, not NaN: valid JSON
    json.loads((sweep / FILES["json"]).read_text(), parse_constant=pytest.fail)
    rows = read_csv(sweep / FILES["jobs"])
    assert list(rows[0])[: len(CSV_COLUMNS)] == CSV_COLUMNS  # the image columns stay first
    assert rows[0]["kind"] == "lm" and float(rows[0]["val_bpb"]) == pytest.approx(3.30)
    assert float(rows[0]["teacher_test_bpb"]) == pytest.approx(3.00)
    agg = read_csv(sweep / FILES["aggregate"])
    assert [(a["temperature"], a["kind"]) for a in agg] == [("1.0", "lm"), ("2.0", "lm")]
    assert (sweep / FILES["heatmap"]).read_bytes().startswith(PNG_SIGNATURE)
    # the seed tables were already in bits per byte; they still are
    assert main([str(sweep), "--by-role"]) == 0
    by_role_md = (sweep / BY_ROLE_FILE).read_text()
    assert "in bits per byte (language models: lower is better)" in by_role_md
    assert "alone − distilled, test bits per byte" in by_role_md


def test_a_sweep_mixing_language_models_and_images_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # e.g. python -m kdlightning.train -m experiment=lm_pydocs,default seed=0,1: an accuracy
    # and a bits per byte are not ranked against each other
    lm, image = ["experiment=lm_pydocs"], ["experiment=default"]
    specs = [
        {"T": 1, "a": 0.9, "seed": 0, "extra": lm, "results": lm_results(0, 3.30, 3.00),
         "cfg": LM_DATA},
        {"T": 1, "a": 0.9, "seed": 1, "extra": lm, "results": lm_results(1, 3.32, 3.02),
         "cfg": LM_DATA},
        {"T": 1, "a": 0.9, "seed": 0, "extra": image, "val": 0.90, "test": 0.88,
         "cfg": IMAGE_DATA},
        {"T": 1, "a": 0.9, "seed": 1, "extra": image, "val": 0.92, "test": 0.86,
         "cfg": IMAGE_DATA},
    ]  # fmt: skip
    sweep = fake_sweep(tmp_path / "sweep", specs)
    jobs = collect_jobs(sweep)
    rows = aggregate(jobs)
    assert [(r["setting"], r["kind"]) for r in rows] == [
        ("experiment=default", "image"), ("experiment=lm_pydocs", "lm")]  # fmt: skip
    assert best_setting(rows) is None  # no single ranking of both kinds
    assert best_setting(rows, "lm")["setting"] == "experiment=lm_pydocs"
    assert best_setting(rows, "image")["setting"] == "experiment=default"

    assert main([str(sweep), "--wandb", "off"]) == 0
    capsys.readouterr()
    md = (sweep / FILES["markdown"]).read_text()
    assert "## Best setting of each kind (chosen on validation)" in md
    assert "This sweep mixes language-model jobs (bits per byte, lower is better) and" in md
    assert "they are not ranked together" in md
    assert ("- image-classification jobs (accuracy): T=1, alpha=0.9 (experiment=default): "
            "validation 91.00 ± 1.41%, test 87.00 ± 1.41% over 2 seed(s).") in md  # fmt: skip
    assert ("- language-model jobs (bits per byte): T=1, alpha=0.9 (experiment=lm_pydocs): "
            "validation 3.3100 ± 0.0141 bpb, test 3.0100 ± 0.0141 bpb over 2 "
            "seed(s).") in md  # fmt: skip
    assert ("Reference test accuracy of the image-classification jobs (mean ± std over seeds): "
            "teacher 97.50 ± 0.71% · student alone 90.00 ± 0.00%.") in md  # fmt: skip
    assert ("Reference test bits per byte of the language-model jobs (lower is better; mean ± "
            "std): teacher 3.0050 ± 0.0071 bpb · student alone 3.5000 ± 0.0000 "
            "bpb.") in md  # fmt: skip
    # one table, each row in its own kind's columns, each kind's best marked
    assert table_row(md, "experiment=default") == [
        "experiment=default", "1", "0.9", "2", "91.00 ± 1.41% **(best)**", "87.00 ± 1.41%",
        "95.00 ± 0.00%", "-", "-"]  # fmt: skip
    assert table_row(md, "experiment=lm_pydocs") == [
        "experiment=lm_pydocs", "1", "0.9", "2", "-", "-", "-", "3.3100 ± 0.0141 **(best)**",
        "3.0100 ± 0.0141"]  # fmt: skip
    summary = read_json(sweep / FILES["json"])
    assert summary["best"] is None and summary["kinds"] == ["image", "lm"]
    assert summary["best_by_kind"]["lm"]["val_bpb_mean"] == pytest.approx(3.31)
    assert summary["best_by_kind"]["image"]["val_acc_mean"] == pytest.approx(0.91)
    assert not (sweep / FILES["heatmap"]).exists()
    assert main([str(sweep), "--by-role"]) == 0
    by_role_md = (sweep / BY_ROLE_FILE).read_text()
    assert "this sweep mixes the two" in by_role_md
    assert "alone − distilled, test bits per byte" in by_role_md
    assert "distilled − alone, test acc" in by_role_md


def test_a_failed_language_model_job_makes_an_image_sweep_mixed(tmp_path: Path) -> None:
    # the LM job failed before writing results: its config still says what it was
    specs = [
        {"T": 1, "a": 0.9, "seed": 0, "extra": ["experiment=default"], "val": 0.9, "test": 0.9,
         "cfg": IMAGE_DATA},
        {"T": 1, "a": 0.9, "seed": 0, "extra": ["experiment=lm_pydocs"], "failed": True,
         "cfg": LM_DATA},
    ]  # fmt: skip
    sweep = fake_sweep(tmp_path / "sweep", specs)
    summary = write_report(sweep)
    assert summary["kinds"] == ["image", "lm"] and summary["best"] is None
    assert summary["best_by_kind"]["lm"] is None
    assert "mixes language-model jobs" in summary["markdown"]
    assert "- language-model jobs (bits per byte): No finished job" in summary["markdown"]


# --- a broken job is listed with its reason, never a crash -------------------------------------


def write(name: str, text: str | bytes) -> Callable[[Path], None]:
    def change(d: Path) -> None:
        path = d / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)

    return change


def failed(text: str) -> Callable[[Path], None]:
    def change(d: Path) -> None:
        (d / "results.json").unlink()
        (d / "failed.json").write_text(text)

    return change


def remove(name: str) -> Callable[[Path], None]:
    def change(d: Path) -> None:
        path = d / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()

    return change


def results_folder(d: Path) -> None:
    (d / "results.json").unlink()
    (d / "results.json").mkdir()


BROKEN = {
    "garbled results.json": (write("results.json", '{"distilled": {"val/acc": 0.8'),
                             "unreadable", "results.json: JSONDecodeError"),
    "results.json not an object": (write("results.json", "[1, 2]"), "unreadable",
                                   "results.json holds a list"),
    "role not an object": (write("results.json", '{"distilled": 0.8}'), "unreadable",
                           "'distilled' is not an object"),
    "NaN in results.json": (write("results.json", '{"distilled": {"val/acc": NaN}}'),
                            "unreadable", "distilled val/acc=NaN"),
    "Infinity in results.json": (write("results.json", '{"teacher": {"test/acc": -Infinity}}'),
                                 "unreadable", "teacher test/acc=-Infinity"),
    "NaN written as null": (write("results.json", '{"distilled": {"test/acc": null}}'),
                            "unreadable", "distilled test/acc=null"),
    "text for a number": (write("results.json", '{"distilled": {"val/acc": "high"}}'),
                          "unreadable", 'distilled val/acc="high"'),
    "undecodable results.json": (write("results.json", b"\xff\xfe{"), "unreadable",
                                 "UnicodeDecodeError"),
    "results.json a folder": (results_folder, "unreadable", "results.json: IsADirectoryError"),
    "garbled failed.json": (failed('{"error": "Val'), "failed",
                            "(reason unknown: failed.json: JSONDecodeError"),
    "failed.json not an object": (failed("[]"), "failed", "failed.json holds a list"),
    "failed.json without error": (failed("{}"), "failed", "(no error recorded)"),
    "killed by a signal": (failed('{"error": "KeyboardInterrupt", "signal": "SIGTERM"}'),
                           "failed", "KeyboardInterrupt [signal SIGTERM]"),
    "missing overrides.yaml": (remove(".hydra/overrides.yaml"), "unreadable",
                               ".hydra/overrides.yaml: FileNotFoundError"),
    "garbled overrides.yaml": (write(".hydra/overrides.yaml", "- a\nb: [1,"), "unreadable",
                               ".hydra/overrides.yaml: "),
    "overrides.yaml not a list": (write(".hydra/overrides.yaml", "a: 1\n"), "unreadable",
                                  ".hydra/overrides.yaml is not a list"),
    "garbled config.yaml": (write(".hydra/config.yaml", "kd: [1,"), "unreadable",
                            ".hydra/config.yaml: "),
    "no .hydra folder": (remove(".hydra"), "unreadable", ".hydra/config.yaml: FileNotFoundError"),
    "seed not an integer": (write(".hydra/config.yaml", "seed: 2.5\nkd: {temperature: 1}"),
                            "unreadable", "seed=2.5 is not a valid seed"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_job_is_listed_with_its_reason(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    change, status, reason = BROKEN[case]
    specs = [{"T": 1, "a": 0.5, "seed": s, "val": 0.8 + s / 100, "test": 0.8} for s in range(3)]
    sweep = fake_sweep(tmp_path / "sweep", specs)
    change(sweep / "2")

    assert main([str(sweep), "--wandb", "off"]) == 0
    rows = read_csv(sweep / FILES["jobs"])
    assert len(rows) == 3, "the job is listed once (its grid point is not 'not started' too)"
    assert (rows[2]["status"], rows[2]["dir"]) == (status, "2")
    assert reason in rows[2]["error"]
    (agg,) = read_csv(sweep / FILES["aggregate"])
    assert agg["n"] == "2" and math.isclose(float(agg["val_acc_mean"]), 0.805)  # jobs 0 and 1
    md = (sweep / FILES["markdown"]).read_text()
    assert f": {status}: " in md.split("## Failed or unfinished jobs")[1]
    assert main([str(sweep), "--by-role"]) == 0
    assert "seeds: [0, 1] (n = 2)" in (sweep / BY_ROLE_FILE).read_text()
    capsys.readouterr()


def test_an_unexpected_error_reading_a_job_lists_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The safety net under read_job: whatever it did not foresee, the other jobs still report.
    from kdlightning.report import collect

    sweep = fake_sweep(tmp_path / "sweep", [{"T": 1, "a": 0.5, "seed": 0, "val": 0.8, "test": 0.8}])
    monkeypatch.setattr(collect, "read_job", lambda d: 1 / 0)
    (job,) = collect_jobs(sweep)
    assert (job.num, job.status, job.error) == (
        0,
        "unreadable",
        "ZeroDivisionError: division by zero",
    )


def test_a_grid_that_cannot_be_expanded_lists_the_folders(tmp_path: Path) -> None:
    specs = [{"T": 1, "a": 0.5, "seed": 0, "val": 0.8, "test": 0.8}]
    sweep = fake_sweep(tmp_path / "sweep", specs)
    (sweep / "multirun.yaml").write_text("hydra: [garbled")
    assert [j.status for j in collect_jobs(sweep)] == ["ok"]
    other = {"hydra": {"sweeper": {"_target_": "hydra_plugins.optuna.OptunaSweeper",
                                   "params": {"kd.alpha": "interval(0, 1)"}},
                       "overrides": {"task": []}}}  # fmt: skip
    OmegaConf.save(OmegaConf.create(other), sweep / "multirun.yaml")
    assert expected_overrides(sweep) is None  # no fixed grid: nothing is "not started"


# --- expected_overrides: Hydra's private BasicSweeper, pinned on a real multirun ---------------

APP = """
import json
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig


@hydra.main(version_base="1.3", config_path=".", config_name="app")
def main(cfg):
    out = Path(HydraConfig.get().runtime.output_dir)
    if not isinstance(cfg.kd.temperature, float):  # what kdlightning.job.run does with "bad"
        (out / "failed.json").write_text(json.dumps({"error": "ValueError: bad temperature"}))
        return
    acc = 0.5 + cfg.kd.temperature / 10 + cfg.seed / 100
    role = {"test/acc": acc, "val/acc": acc, "params": 10}
    (out / "results.json").write_text(json.dumps({"baseline": role, "distilled": role}))


if __name__ == "__main__":
    main()
"""
APP_CONFIG = """
kd: {temperature: 4.0, alpha: 0.9}
seed: 0
name: a
hydra:
  sweeper:
    params:
      kd.temperature: 1.0,2.0
      seed: 0,1
"""


def test_expected_overrides_is_the_grid_hydra_ran(tmp_path: Path) -> None:
    # A real multirun of a tiny Hydra app (no training): params from its config, one of them
    # replaced on the command line by a list with a non-numeric temperature, a quoted value and
    # an appended list. If a Hydra upgrade changes the private BasicSweeper API or its order,
    # this fails here rather than the report silently losing its "not started" jobs.
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "app.yaml").write_text(APP_CONFIG)
    sweep = tmp_path / "sweep"
    args = ["kd.temperature=1.0,bad", 'name=x,"y z"', "+extra=[1,2]", f"hydra.sweep.dir={sweep}"]
    subprocess.run([sys.executable, "app.py", "-m", *args], cwd=tmp_path, env=cli_env(),
                   check=True, capture_output=True, timeout=120)  # fmt: skip

    expected = expected_overrides(sweep)
    assert expected == [
        [f"kd.temperature={t}", f"seed={s}", f"name={n}", "+extra=[1,2]"]
        for t in ("1.0", "bad") for s in (0, 1) for n in ("x", '"y z"')
    ]  # fmt: skip
    ran = [[str(o) for o in OmegaConf.load(sweep / str(i) / ".hydra/overrides.yaml")]
           for i in range(len(expected))]  # fmt: skip
    assert expected == ran

    # The report of that sweep (-m kd.temperature=1,bad: the "bad" jobs failed), with the last
    # job's folder gone: it is "not started", and why it would fail is said.
    shutil.rmtree(sweep / "7")
    jobs = collect_jobs(sweep)
    assert [j.status for j in jobs] == ["ok"] * 4 + ["failed"] * 3 + ["not started"]
    assert [j.setting for j in jobs[:2]] == ["name=x", 'name="y z"']
    assert jobs[4].temperature is None
    assert jobs[4].error == "ValueError: bad temperature; kd.temperature='bad' is not a number"
    assert jobs[7].error == "kd.temperature='bad' is not a number"
    assert main([str(sweep), "--wandb", "off"]) == 0
    assert main([str(sweep), "--by-role"]) == 0


def test_committed_sweep_config_is_the_12_job_grid_and_seeds_multiply_it(tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir

    conf = REPO_ROOT / "conf"
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


# --- W&B: the report hands tracking.log_report plain rows --------------------------------------


class FakeRun:
    def __init__(self) -> None:
        self.logged: list[dict[str, Any]] = []
        self.summary: dict[str, Any] = {}
        self.finished = False

    def log(self, payload: dict[str, Any]) -> None:
        self.logged.append(payload)

    def finish(self) -> None:
        self.finished = True


def fake_wandb() -> types.ModuleType:
    """Just what log_report calls: init, Table, Image; records every call."""
    wandb = types.ModuleType("wandb")
    wandb.inits, wandb.runs = [], []

    def init(**kwargs: Any) -> FakeRun:
        wandb.inits.append(kwargs)
        wandb.runs.append(FakeRun())
        return wandb.runs[-1]

    wandb.init = init
    wandb.Table = lambda columns, data: {"columns": columns, "data": data}
    wandb.Image = lambda path: {"image": path}
    wandb.run = None
    return wandb


def test_the_report_logs_plain_rows_into_the_jobs_w_and_b_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    wandb = fake_wandb()
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = {"logger": {"wandb": {"project": "mine", "entity": None, "group": None,
                                   "save_dir": "${paths.output_dir}"}}}  # fmt: skip
    specs = [{"T": 2, "a": 0.5, "seed": 0, "val": 0.8, "test": 0.7, "cfg": logger},
             {"T": 2, "a": 0.5, "seed": 1, "failed": True, "cfg": logger}]  # fmt: skip
    sweep = fake_sweep(tmp_path / "sweep", specs)

    assert main([str(sweep)]) == 0  # auto: the jobs used logger=wandb
    (init,) = wandb.inits
    assert (init["project"], init["group"], init["job_type"]) == ("mine", "sweep-sweep", "report")
    assert init["config"]["jobs.ok"] == 1 and init["config"]["jobs.failed"] == 1
    (run,) = wandb.runs
    (payload,) = run.logged
    assert payload["jobs"]["columns"][:4] == ["num", "temperature", "alpha", "seed"]
    assert payload["jobs"]["data"] == [
        [0, 2.0, 0.5, 0, 0.8, 0.7, 0.95, "ok", ""],
        [1, 2.0, 0.5, 1, None, None, None, "failed", "ValueError: boom"],
    ]
    assert payload["heatmap"] == {"image": str(sweep / FILES["heatmap"])}
    assert run.summary["best/temperature"] == 2.0 and run.finished

    assert main([str(sweep), "--wandb", "off"]) == 0 and len(wandb.inits) == 1
    assert main([str(sweep), "--by-role"]) == 0 and len(wandb.inits) == 1
    report = write_report(sweep)
    assert all(isinstance(r, dict) for r in report["jobs"]), "plain rows, not SweepJob objects"
    capsys.readouterr()


def test_the_console_script_is_the_package_main() -> None:
    import tomllib

    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, name = scripts["kdl-report"].split(":")
    assert getattr(__import__(module, fromlist=[name]), name) is main


# --- a real multirun of kdlightning.job.run ---------------------------------------------------


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
    rows = read_csv(sweep / FILES["jobs"])
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
    assert len(read_csv(sweep / FILES["aggregate"])) == 4
    md = (sweep / FILES["markdown"]).read_text()
    assert "## Mean ± std over seeds" in md and "## Jobs" in md and "failed" in md

    png = sweep / FILES["heatmap"]
    assert png.read_bytes().startswith(PNG_SIGNATURE)
    import matplotlib.image

    image = matplotlib.image.imread(png)  # decodes: a real image, not just a header
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400
    assert image.std() > 0.05  # not a blank canvas

    by_role_out = run_module("kdlightning.report", str(sweep), "--by-role").stdout
    assert by_role_out.count("| distilled student ") == 4  # one table per (T, alpha)
    assert "distilled − alone, test acc:" in by_role_out


def acc_rows(cells: list[tuple[float, float, float]]) -> list[dict[str, Any]]:
    return [{"setting": "", "temperature": t, "alpha": a, "n": 1, "val_acc_mean": v,
             "val_acc_std": 0.0, "test_acc_mean": v - 0.1, "test_acc_std": 0.0}
            for t, a, v in cells]  # fmt: skip


def test_scattered_settings_are_points_and_a_grid_with_a_hole_is_a_grid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import matplotlib.pyplot as plt

    from kdlightning.report.heatmap import is_grid, plot_heatmap

    scattered = acc_rows([(1.3, 0.06, 0.90), (4.6, 0.72, 0.95), (14.0, 0.82, 0.97),
                          (2.0, 0.33, 0.93), (8.8, 0.51, 0.96)])  # fmt: skip
    holed = acc_rows([(1, 0.5, 0.9), (2, 0.5, 0.8), (1, 0.9, 0.95)])  # (2, 0.9) failed
    assert not is_grid(scattered) and is_grid(holed)
    drawn = []
    monkeypatch.setattr(plt, "close", drawn.append)
    plot_heatmap(scattered, scattered[2], "t", tmp_path / "s.png")
    plot_heatmap(holed, None, "t", tmp_path / "g.png")
    points, cells = drawn
    val, test, _ = points.axes
    assert not val.images and val.get_yscale() == "log"
    # the points, then the red ring round the best, in both panels on one colour scale
    assert [len(c.get_offsets()) for c in val.collections] == [5, 1]
    assert val.collections[0].get_clim() == test.collections[0].get_clim()
    assert list(val.collections[1].get_offsets()[0]) == [0.82, 14.0]
    assert len(cells.axes[0].images) == 1  # the grid keeps its heatmap


def test_an_optuna_search_is_reported_like_a_grid(tmp_path: Path) -> None:
    specs = [
        {"T": 4.5797, "a": 0.7152, "seed": 0, "val": 0.95, "test": 0.94},
        {"T": 14.04, "a": 0.8212, "seed": 0, "val": 0.97, "test": 0.94},
        {"T": 1.1137, "a": 0.8058, "seed": 0, "val": 0.96, "test": 0.95},
    ]
    sweep = fake_sweep(tmp_path / "sweep", specs, ["hparams_search=kd_optuna"])
    sweeper = {"_target_": "hydra_plugins.kdl_optuna_sweeper.sweeper.OptunaSweeper"}
    multirun = OmegaConf.load(sweep / "multirun.yaml")
    multirun.hydra.sweeper = sweeper  # no grid: no job is "not started"
    OmegaConf.save(multirun, sweep / "multirun.yaml")
    best = {"kd.temperature": 14.04, "kd.alpha": 0.8212}
    OmegaConf.save(OmegaConf.create({"name": "optuna", "best_params": best, "best_value": 0.97,
                                     "best_trial": 1, "n_trials": 3, "direction": "maximize"}),
                   sweep / "optimization_results.yaml")  # fmt: skip
    assert main([str(sweep), "--wandb", "off"]) == 0
    summary = read_json(sweep / FILES["json"])
    assert summary["counts"] == {"ok": 3} and summary["optuna"]["best_params"] == best
    assert (summary["best"]["temperature"], summary["best"]["alpha"]) == (14.04, 0.8212)
    md = (sweep / FILES["markdown"]).read_text()
    assert "T=14.04, alpha=0.8212: validation 97.00%, test 94.00% over 1 seed(s)" in md
    assert "Optuna search (optimization_results.yaml): trial 1 of 3, kd.temperature=14.04, " \
        "kd.alpha=0.8212: value 0.97, maximized" in md  # fmt: skip
    assert "![T × alpha scatter](report_heatmap.png)" in md
    assert len(read_csv(sweep / FILES["aggregate"])) == 3


def test_the_heatmaps_two_panels_share_one_colour_scale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import matplotlib.pyplot as plt

    from kdlightning.report.heatmap import plot_heatmap

    cells = [(1, 0.5, 0.9), (2, 0.5, 0.8), (1, 0.9, 0.95), (2, 0.9, 0.85)]
    rows = [{"setting": "", "temperature": t, "alpha": a, "n": 1, "val_acc_mean": v,
             "val_acc_std": 0.0, "test_acc_mean": v - 0.1, "test_acc_std": 0.0}
            for t, a, v in cells]  # fmt: skip
    drawn = []
    monkeypatch.setattr(plt, "close", drawn.append)
    assert plot_heatmap(rows, None, "t", tmp_path / "h.png") == tmp_path / "h.png"
    (fig,) = drawn
    val, test, bar = fig.axes  # two panels and one colour bar for both
    assert val.images[0].get_clim() == test.images[0].get_clim() == pytest.approx((70.0, 95.0))
    assert "one scale for both panels" in bar.get_ylabel()
