"""benchmarks/overhead.py, the per-step cost table of issue 20, runs end to end (tiny)."""

from __future__ import annotations

import re

import pytest
from conftest import benchmark_script, kept_environ


def test_overhead_prints_every_variant_and_splits_the_loss_from_the_module(
    capsys: pytest.CaptureFixture[str],
) -> None:
    overhead = benchmark_script("overhead")
    with kept_environ():
        overhead.main(["--pair", "mlp", "--steps", "4", "--warmup", "1", "--rounds", "1",
                       "--samples", "1024"])  # fmt: skip
    out = capsys.readouterr().out
    row = re.compile(r"^([^\d\n]+?)\s+(\d+\.\d+)\s+\d+\.\d+\s+-?\d+\.\d+$", re.M)
    ms = {m.group(1).strip(): float(m.group(2)) for m in row.finditer(out)}
    assert set(ms) == {
        "plain alone", "plain KD cached", "bare (loader)", "bare (tensors)", "bare (fast)",
        "alone (loader)", "cached (loader)", "cached (fast)", "cached (fast), Lightning's bar",
        "cached (fast), job's bar",
    }, out  # fmt: skip
    assert all(v > 0 for v in ms.values()), out
    said = {m.group(1).strip(): float(m.group(2))
            for m in re.finditer(r"^(.+?)\s+= ([+-]\d+\.\d+) ms/step", out, re.M)}  # fmt: skip
    loss = ms["plain KD cached"] - ms["plain alone"]
    assert said["plain KD cached - plain alone"] == pytest.approx(loss, abs=2e-3)
    # the module's own cost: cached minus bare on the same batches, less the loss's own cost
    for path in ("loader", "fast"):
        own = ms[f"cached ({path})"] - ms[f"bare ({path})"] - loss
        assert said[f"module own cost beyond the loss, {path}"] == pytest.approx(own, abs=3e-3)
    # what a progress bar adds, each bar named: Lightning's default and the job's configured one
    for who in ("Lightning's", "job's"):
        (line,) = [k for k in said if k.startswith(f"progress bar, {who} (")]
        added = ms[f"cached (fast), {who} bar"] - ms["cached (fast)"]
        assert said[line] == pytest.approx(added, abs=3e-3)
    assert "progress bar, job's (TQDMProgressBar)" in said, out


def test_profile_step_prints_the_functions_with_the_most_own_time(
    capsys: pytest.CaptureFixture[str],
) -> None:
    profile = benchmark_script("profile_step")  # it takes Bare and the models from overhead.py
    with kept_environ():
        profile.main(["--module", "cached", "--steps", "20", "--top", "5"])
    head, columns, *rows = capsys.readouterr().out.strip().splitlines()
    assert head.startswith("cached: ") and "ms/step under cProfile (20 steps" in head
    assert columns.split()[-1] == "function" and len(rows) == 5
    own = [float(row.split()[0]) for row in rows]
    assert own == sorted(own, reverse=True) and own[0] > 0
