"""The commands a user types, as written: from the repository root, default folders, progress
bar on, nothing added but what shortens them (``debug=fast``, fewer seeds).

Each test copies the working tree into ``tmp_path`` and runs there, so ``logs/`` is the copy's
own and the default ``hydra.run.dir`` / ``hydra.sweep.dir`` are the ones a user gets. The tests
in the rest of the suite pass their own folders (``paths.log_dir``, ``hydra.sweep.dir``), which
is exactly how every documented ``-m`` sweep crashed unnoticed ("HydraConfig was not set" while
Hydra computed ``hydra.sweep.dir``) and how ``trainer=ddp`` hung with the progress bar on.
Every command of README.md and docs/*.md runs this way in test_docs_commands.py (the README's
sweep and its report included); the DDP command of docs/scaling_out.md runs here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import REPO_ROOT, cli_env, read_json, run_module
from docs_commands import documented_commands

pytestmark = pytest.mark.slow

# What a checkout's root holds that a user's fresh clone would not: left out of the copy.
_NOT_COPIED_AT_ROOT = {
    ".git", ".venv", "logs", "outputs", "multirun", "wandb", "lightning_logs", ".pytest_cache",
    ".ruff_cache", "data", "build", "dist",
}  # fmt: skip


def _ignore(folder: str, names: list[str]) -> set[str]:
    skip = {n for n in names if n == "__pycache__" or n.endswith(".egg-info")}
    return skip | (_NOT_COPIED_AT_ROOT & set(names) if Path(folder) == REPO_ROOT else set())


def user_checkout(tmp_path: Path) -> Path:
    """A copy of the working tree, as a user's clone: commands run in its root."""
    root = tmp_path / "kdlightning"
    shutil.copytree(REPO_ROOT, root, ignore=_ignore)
    return root


def user_env(root: Path) -> dict[str, str]:
    # the copy's own package first (python -m puts the cwd first too), no W&B network access
    return cli_env(PYTHONPATH=str(root))


def only_child(folder: Path) -> Path:
    children = [p for p in folder.iterdir() if p.is_dir()]
    assert len(children) == 1, f"expected one folder in {folder}, found {children}"
    return children[0]


#: docs/scaling_out.md's DDP command on CPU processes (test_docs_commands.py leaves it to this test)
DDP_ON_CPU = (
    "python -m kdlightning.train trainer=ddp trainer.devices=2 trainer.accelerator=cpu "
    "trainer.precision=32-true"
)


def test_ddp_with_the_progress_bar_on_runs_to_the_end(tmp_path: Path) -> None:
    """docs/scaling_out.md's ``trainer=ddp`` on 2 CPU processes, the default progress bar on
    (with debug=fast): Lightning's default bar (Rich) read a lazily reduced metric on rank 0
    only while rank 1 waited in another collective, and hung. The job's bar (tqdm) reads the
    metrics at each epoch's last batch at least, on rank 0 only, as Rich did."""
    (cmd,) = [c for c in documented_commands(REPO_ROOT) if c.text == DDP_ON_CPU]
    root = user_checkout(tmp_path)
    proc = run_module(
        "kdlightning.train", *cmd.args, "debug=fast", cwd=root, env=user_env(root), timeout=240
    )
    run = only_child(root / "logs" / "distill" / "runs")
    results = read_json(run / "results.json")
    assert {"teacher", "baseline", "distilled"} <= set(results)
    # the epoch's training loss was reduced over both ranks and logged once per epoch
    assert "train/loss_epoch" in (run / "logs" / "distilled" / "metrics.csv").read_text()
    assert "It is recommended to use `self.log(" not in proc.stderr
