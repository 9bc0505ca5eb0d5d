"""benchmarks/seed_table.py: mean ± std over a multirun's results.json files."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "benchmarks" / "seed_table.py"
spec = importlib.util.spec_from_file_location("seed_table", SCRIPT)
seed_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(seed_table)


def write_job(
    folder: Path, seed: int, teacher: float, alone: float, kd: float, temperature: float = 4.0
) -> None:
    folder.mkdir(parents=True)
    role = lambda acc, params: {"test/acc": acc, "val/acc": acc + 0.01, "params": params}  # noqa: E731
    results = {
        "teacher": role(teacher, 1000),
        "baseline": role(alone, 100),
        "distilled": role(kd, 100),
        "summary": {"seed": seed, "temperature": temperature, "alpha": 0.9},
    }
    (folder / "results.json").write_text(json.dumps(results))


def test_mean_std_table_by_hand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_job(tmp_path / "0", 0, 0.90, 0.70, 0.72)
    write_job(tmp_path / "1", 1, 0.92, 0.74, 0.73)
    write_job(tmp_path / "2", 2, 0.94, 0.72, 0.77)
    (tmp_path / ".hydra").mkdir()  # other entries of a multirun folder are ignored
    assert seed_table.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "seeds: [0, 1, 2] (n = 3)" in out
    assert "| teacher | 92.00 ± 2.00 | 93.00 ± 2.00 | 1,000 |" in out
    assert "| student alone | 72.00 ± 2.00 | 73.00 ± 2.00 | 100 |" in out
    assert "| distilled student | 74.00 ± 2.65 | 75.00 ± 2.65 | 100 |" in out
    # paired differences: +2, -1, +5 points
    assert "distilled − alone, test acc: 2.00 ± 3.00 points (distillation better in 2 of 3" in out


def test_an_empty_folder_says_so(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"no \*/results.json"):
        seed_table.main([str(tmp_path)])


def test_one_table_per_kd_setting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_job(tmp_path / "0", 0, 0.9, 0.7, 0.71, temperature=1.0)
    write_job(tmp_path / "1", 0, 0.9, 0.7, 0.75, temperature=8.0)
    seed_table.main([str(tmp_path)])
    out = capsys.readouterr().out
    assert out.count("### ") == 2
    assert "(T = 1.0, alpha = 0.9)" in out and "(T = 8.0, alpha = 0.9)" in out
    assert "| distilled student | 71.00 ± - |" in out and "| distilled student | 75.00 ± - |" in out
