"""The documented Optuna search (README, docs/sweeps_and_wandb.md) as a user runs it: from a copy
of the working tree, default folders, then ``kdl-report`` on its folder.

``python -m kdlightning.train -m hparams_search=kd_optuna`` with only what shortens it
(test_docs_commands.shortened: ``debug=fast``, two trials): Hydra finds the sweeper plugin in
the checkout's ``hydra_plugins``, each trial is a job folder, the second trial takes the teacher
and the student alone from the cache, and the report reads the folder as it reads a grid.
test_docs_commands.py composes this command and leaves the run to this test (RUN_ELSEWHERE).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO_ROOT, read_json, run_module
from docs_commands import documented_commands
from omegaconf import OmegaConf
from test_docs_commands import shortened
from test_user_commands import only_child, user_checkout, user_env

pytestmark = pytest.mark.slow

OPTUNA_COMMAND = "python -m kdlightning.train -m hparams_search=kd_optuna"


def test_documented_optuna_search_then_its_report(tmp_path: Path) -> None:
    documented = [c for c in documented_commands(REPO_ROOT) if c.text == OPTUNA_COMMAND]
    assert {c.page for c in documented} >= {"README.md", "docs/sweeps_and_wandb.md"}
    args = shortened(documented[0])
    assert args[-3:] == ["hydra.sweeper.n_trials=2", "debug=fast", "figures=true"]
    root = user_checkout(tmp_path)
    proc = run_module("kdlightning.train", *args, cwd=root, env=user_env(root))
    sweep = only_child(root / "logs" / "distill" / "multiruns")
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    results = [read_json(sweep / n / "results.json") for n in ("0", "1")]
    # the second trial distils only: teacher and student alone come from the first's cache
    assert [r["teacher"]["cache"]["hit"] for r in results] == [False, True]
    assert [r["baseline"]["cache"]["hit"] for r in results] == [False, True]
    assert "Cache hit: reusing the teacher" in proc.stdout + proc.stderr
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    # the value each job returned is its distilled student's validation accuracy, never test
    vals = [r["distilled"]["val/acc"] for r in results]
    assert best.best_value == pytest.approx(max(vals)) and best.direction == "maximize"
    chosen = results[best.best_trial]
    overrides = OmegaConf.load(sweep / str(best.best_trial) / ".hydra" / "overrides.yaml")
    assert f"kd.temperature={best.best_params['kd.temperature']!r}" in overrides
    assert 1 <= best.best_params["kd.temperature"] <= 16
    assert 0 <= best.best_params["kd.alpha"] <= 1
    assert chosen["distilled"]["val/acc"] == pytest.approx(best.best_value)

    run_module("kdlightning.report", str(sweep), cwd=root, env=user_env(root))
    summary = read_json(sweep / "report.json")
    assert summary["counts"] == {"ok": 2}
    assert summary["optuna"]["best_params"] == dict(best.best_params)
    report = (sweep / "report.md").read_text()
    assert "Optuna" in report and (sweep / "report_heatmap.png").is_file()
