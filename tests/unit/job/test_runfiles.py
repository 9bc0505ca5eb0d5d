"""kdlightning.job.runfiles: the one reader of a run directory's files (kdl-export, kdl-report,
kdl-figures and the resume check read through it)."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from kdlightning.job import runfiles
from kdlightning.job.runfiles import RunDirError, RunFileError, read_config, read_json


def _hydra_run(run_dir: Path) -> None:
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text(
        "seed: 3\npaths:\n  root_dir: ${kdl.cwd:}\n  data_dir: ${hydra:runtime.cwd}/data\n"
    )
    (run_dir / ".hydra" / "hydra.yaml").write_text("hydra:\n  runtime:\n    cwd: /somewhere\n")
    (run_dir / ".hydra" / "overrides.yaml").write_text("- seed=3\n")


def test_config_yaml_first_else_hydras_copy_resolved_against_that_job(tmp_path: Path) -> None:
    _hydra_run(tmp_path)
    cfg = read_config(tmp_path)  # the cwd of *that* job, not this process's
    assert cfg.seed == 3 and cfg.paths.root_dir == "/somewhere"
    assert cfg.paths.data_dir == "/somewhere/data"
    (tmp_path / runfiles.CONFIG).write_text(OmegaConf.to_yaml({"seed": 4}))
    assert read_config(tmp_path).seed == 4
    assert runfiles.read_overrides(tmp_path) == ["seed=3"]


def test_problems_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="not a run directory"):
        read_config(tmp_path)
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(RunFileError, match=r"^results\.json: JSONDecodeError"):
        read_json(runfiles.run_file(tmp_path, "results"))
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text("a: 1\n")
    with pytest.raises(RunFileError, match=r"^\.hydra/overrides\.yaml is not a list"):
        runfiles.read_overrides(tmp_path)
    (tmp_path / runfiles.CONFIG).write_text("- a list\n")
    with pytest.raises(RunFileError, match=r"^config\.yaml is not a mapping"):
        read_config(tmp_path)
