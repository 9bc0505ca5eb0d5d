"""benchmarks/gpu_check.py, the one-GPU bf16 check, runs end to end (tiny, on the CPU here)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_module


@pytest.mark.slow
def test_gpu_check_smoke_prints_the_table(tmp_path: Path) -> None:
    # From a scratch folder: the job it starts writes its logs and cache under ./logs there,
    # not into the checkout (PYTHONPATH still points at the checkout: cli_env).
    out = run_module("benchmarks.gpu_check", "--smoke", cwd=tmp_path, timeout=300).stdout
    assert "| run " in out and "samples/s" in out
    rows = [line for line in out.splitlines() if line.startswith(("| student", "| distill"))]
    assert len(rows) == 2
    # bf16 autocast reached the student, the training loss stayed float32
    assert all("bfloat16" in r and r.rstrip(" |").endswith("float32") for r in rows), rows
    # ... and the real job ran end to end (trainer=cpu in --smoke, trainer=gpu/fsdp on a GPU)
    assert any(line.startswith("| trainer=cpu | 0 ") for line in out.splitlines()), out[-2000:]
