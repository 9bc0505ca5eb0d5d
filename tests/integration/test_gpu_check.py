"""benchmarks/gpu_check.py, the one-GPU bf16 check, runs end to end (tiny, on the CPU here)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from conftest import benchmark_script, kept_environ


@pytest.mark.slow
def test_gpu_check_smoke_prints_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Its main() runs in this process, as `python benchmarks/gpu_check.py --smoke` would (one
    # interpreter start less); the job it checks still runs as its own command line, from a
    # scratch folder, so that job's logs and cache go under ./logs there, not the checkout.
    gpu_check = benchmark_script("gpu_check")
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--smoke"])
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)
    monkeypatch.chdir(tmp_path)
    with kept_environ():
        gpu_check.main()
    out = capsys.readouterr().out
    assert "| run " in out and "samples/s" in out
    rows = [line for line in out.splitlines() if line.startswith(("| plain", "| student",
                                                                  "| distill"))]  # fmt: skip
    assert len(rows) == 7, out[-3000:]
    names = [r.split("|")[1].strip() for r in rows]
    assert [n for n in names if n.startswith("distill")] == [
        "distill online, DataLoader", "distill cached, DataLoader",
        "distill online, on device", "distill cached, on device",
    ]  # fmt: skip
    # bf16 autocast reached the student, the training loss stayed float32
    assert all("bfloat16" in r and r.rstrip(" |").endswith("float32") for r in rows), rows
    # ... and it says what it compares against, with the ratios worked out
    assert "compared with the plain loop on the same card" in out
    assert "distill cached, on device / plain alone = " in out
    # ... and the real job ran end to end (trainer=cpu in --smoke, trainer=gpu/fsdp on a GPU)
    assert any(line.startswith("| trainer=cpu | 0 ") for line in out.splitlines()), out[-2000:]
    assert list(tmp_path.glob("logs/cache/teacher/*")), "the job's cache went elsewhere"
