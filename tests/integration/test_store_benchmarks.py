"""benchmarks/logit_store.py, lm_throughput.py and topk_accuracy.py run end to end (tiny), in
this process (one interpreter start less), and print what the docs' tables are made of."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import benchmark_script, kept_environ


def _rows(out: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()
            if line.startswith("| ") and not line.startswith("|---")]  # fmt: skip


def test_logit_store_benchmark_measures_every_layout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 40,000 x 100 logits (16 MB in float32), one process (--procs 1 runs the workers in this
    # process). Not smaller: a pytest worker's allocator reuses memory freed by earlier tests, so
    # a table of under a megabyte could load without the process's own memory growing at all.
    args = ["--rows", "40000", "--classes", "100", "--k", "3", "--lookups", "4", "--rounds", "1",
            "--procs", "1", "--dir", str(tmp_path), "--json", str(tmp_path / "r.json")]  # fmt: skip
    benchmark_script("logit_store").main(args)
    rows = _rows(capsys.readouterr().out)
    assert [r[0] for r in rows[1:]] == ["in-RAM float32", "mmap float32", "mmap float16",
                                        "mmap top-k"]  # fmt: skip
    result = json.loads((tmp_path / "r.json").read_text())
    sizes = result["sizes"]
    # the files: float16 half of float32 (plus a header), top-3 of 100 classes far smaller
    assert sizes["mmap float16"] < 0.51 * sizes["mmap float32"]
    assert sizes["mmap top-k"] < 0.05 * sizes["mmap float32"]
    assert rows[1][-1] == "1.00x"  # the reference against itself
    # the in-RAM table is this process's own memory; a mapped one is not (it was just opened)
    mem = result["memory"]
    assert mem["in-RAM float32"][0]["after_open"]["uss"] > mem["in-RAM float32"][0]["before"]["uss"]


@pytest.mark.slow
def test_lm_throughput_benchmark_prints_every_variant_and_the_kl_rows(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # 2 steps per variant on 40 pydocs topics, one tiny KL shape, no peak processes: five
    # Trainers and the top-k pass (35-79 s on the shared 2-core machine, hence slow)
    with kept_environ():
        args = ["--steps", "2", "--rounds", "1", "--max-documents", "40", "--kl-shapes",
                "2x16x256", "--kl-chunks", "4", "--kl-reps", "1", "--no-peak"]  # fmt: skip
        benchmark_script("lm_throughput").main(args)
    out = capsys.readouterr().out
    names = [r[0] for r in _rows(out)]
    assert names[1:6] == ["plain alone", "plain KD online", "lightning alone", "lightning online",
                          "lightning cached top-k"]  # fmt: skip
    assert "lightning cached top-k / lightning alone = " in out and "(goal <= 1.3)" in out
    kl = [r for r in _rows(out) if r[0] == "2x16x256"]
    assert [r[1] for r in kl] == ["none", "4"] and kl[0][3] == "1.00x"


def test_topk_accuracy_tables_runs_by_k_and_pairs_them_with_full() -> None:
    runs = {("full", 0): {"distilled": 0.9, "alone": 0.8, "bytes": 4096},
            ("full", 1): {"distilled": 0.8, "alone": 0.7, "bytes": 4096},
            ("1", 0): {"distilled": 0.85, "alone": 0.8, "bytes": 1024},
            ("1", 1): {"distilled": 0.8, "alone": 0.7, "bytes": 1024}}  # fmt: skip
    text = benchmark_script("topk_accuracy").table(runs, ["full", "1"])
    rows = _rows(text)
    assert rows[1] == ["full (float32)", "85.00 +/- 7.07", "+0.00", "4 KiB"]
    assert rows[2] == ["top-1", "82.50 +/- 3.54", "-2.50", "1 KiB"]
    assert rows[3][:2] == ["student alone", "75.00 +/- 7.07"]
