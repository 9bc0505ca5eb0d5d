"""benchmarks/seed_curves.py: mean validation curves over the seeds of one setting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import benchmark_script


def _job(folder: Path, overrides: list[str], curves: dict[str, list[float]]) -> None:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    seed = int(next(o for o in overrides if o.startswith("seed=")).split("=")[1])
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"seed": seed}))
    results = {
        stage: {"val/acc": values[-1], "test/acc": values[-1]} for stage, values in curves.items()
    }
    (folder / "results.json").write_text(json.dumps(results))
    for stage, values in curves.items():
        csv = folder / "logs" / stage / "metrics.csv"
        csv.parent.mkdir(parents=True)
        rows = ["epoch,step,train/acc,val/acc"]
        rows += [f"{e},{10 * e + 9},0.5,{v}" for e, v in enumerate(values)]
        rows.append(
            f"{len(values)},{10 * len(values)},,{values[-1]}"
        )  # best checkpoint, re-validated
        csv.write_text("\n".join(rows) + "\n")


def test_mean_curves_of_one_setting_table_and_figure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_curves = benchmark_script("seed_curves")
    sweep = tmp_path / "sweep"
    for num, (alpha, seed, base, dist) in enumerate([
        ("0.5", 0, [0.5, 0.6], [0.6, 0.7]), ("0.5", 1, [0.7, 0.8], [0.8, 0.9]),
        ("0.9", 0, [0.1, 0.1], [0.1, 0.1]),  # another setting: left out
    ]):  # fmt: skip
        _job(
            sweep / str(num),
            [f"kd.alpha={alpha}", f"seed={seed}"],
            {"baseline": base, "distilled": dist},
        )
    out_png = tmp_path / "curves.png"
    seed_curves.main([str(sweep), "--setting", "kd.alpha=0.5", "--out", str(out_png)])
    out = capsys.readouterr().out
    assert "  baseline  60.0 70.0\n" in out  # the epoch after the last (re-validation) is not one
    assert "  distilled 70.0 80.0\n" in out
    assert out_png.stat().st_size > 1000
    with pytest.raises(SystemExit, match="no finished job"):
        seed_curves.main([str(sweep), "--setting", "kd.alpha=0.7"])
