"""benchmarks/methods_cost.py, the per-method training cost table, runs end to end (tiny)."""

from __future__ import annotations

import pytest
from conftest import benchmark_script, kept_environ


def test_methods_cost_prints_a_row_per_method_and_mode(capsys: pytest.CaptureFixture[str]) -> None:
    # main() runs in this process, as `python benchmarks/methods_cost.py --steps 2 --rounds 1`
    # would (one interpreter start less); every method is built from its conf/kd file and trained.
    methods_cost = benchmark_script("methods_cost")
    with kept_environ():
        methods_cost.main(["--steps", "2", "--rounds", "1", "--warmup", "0"])
    out = capsys.readouterr().out
    assert out.startswith("threads: ") and "steps: 2, rounds: 1" in out
    rows = [line.split("|")[1:3] for line in out.splitlines() if line.startswith("| ")][1:]
    seen = [(method.strip(), mode.strip()) for method, mode in rows]
    # logit methods both ways (the job's auto picks cached on digits), feature methods online
    logit, feature = ["kd", "dkd", "dist", "ls_kd"], ["fitnet", "at", "rkd", "pkt"]
    expected = [(m, mode) for m in logit for mode in ("cached (auto)", "online")]
    expected += [(m, "online (auto)") for m in feature] + [("dml", "none (2 students)")]
    expected += [("crd", "online (auto)")]  # conf/kd files not in methods_cost.ORDER come last
    assert seen == expected, out
    # the reference rows are 1.00x against themselves
    assert "| 1.00x " in out.splitlines()[4] and out.splitlines()[5].rstrip(" |").endswith("1.00x")
