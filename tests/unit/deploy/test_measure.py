"""kdlightning.deploy.measure: latency with torch.utils.benchmark (fixed threads, median and
IQR, batch 1 and batch N), and how kdlightning.deploy.compare shows it."""

from __future__ import annotations

import time

import pytest
import torch
from conftest import compose

from kdlightning.deploy.compare import comparison_table, latency_note
from kdlightning.deploy.measure import (
    benchmark_settings,
    measure_costs,
    resolve_device,
    time_call,
    torch_latency,
)
from kdlightning.models import MLP

QUICK = {"warmup": 1, "repeats": 5, "min_run_time": 0.01}


def test_time_call_measures_a_known_duration_with_fixed_threads() -> None:
    threads_seen = set()

    def sleep_2ms() -> None:
        threads_seen.add(torch.get_num_threads())
        time.sleep(0.002)

    before = torch.get_num_threads()
    lat = time_call(sleep_2ms, threads=2, warmup=1, repeats=6, min_run_time=0.02)
    assert threads_seen == {2} and torch.get_num_threads() == before  # set, then restored
    assert 2.0 <= lat.median_ms < 20.0  # sleep never returns early; a busy machine adds to it
    assert lat.iqr_ms >= 0 and lat.threads == 2
    assert lat.blocks >= 6 and lat.calls_per_block >= 1
    assert lat.blocks * lat.calls_per_block * lat.median_ms / 1e3 > 0.01  # min run time honoured


def test_measure_costs_reports_both_batches_threads_and_device() -> None:
    model = MLP(num_classes=10, input_shape=(1, 8, 8), hidden_sizes=[16]).train()
    costs = measure_costs(model, (1, 8, 8), batch_size=64, threads=1, device="cpu", **QUICK)
    assert set(costs) == {
        "params", "size_bytes", "latency_ms", "latency_iqr_ms", "latency_ms_b1",
        "latency_iqr_ms_b1", "latency_threads", "latency_batch_size", "latency_device",
    }  # fmt: skip
    assert costs["latency_ms"] > 0 and costs["latency_ms_b1"] > 0
    assert costs["latency_iqr_ms"] >= 0 and costs["latency_iqr_ms_b1"] >= 0
    assert (costs["latency_threads"], costs["latency_batch_size"]) == (1, 64)
    assert costs["latency_device"] == "cpu" and costs["params"] == 64 * 16 + 16 + 16 * 10 + 10
    assert model.training  # timed on a copy


def test_a_bigger_batch_takes_longer() -> None:
    # Far apart on purpose (1 vs 4096 rows through a 64x512 layer): noise cannot swap them.
    model = torch.nn.Linear(64, 512)
    one = torch_latency(model, (64,), batch_size=1, **QUICK)
    many = torch_latency(model, (64,), batch_size=4096, **QUICK)
    assert many.median_ms > 3 * one.median_ms


def test_bad_benchmark_values_are_named() -> None:
    model = torch.nn.Linear(2, 2)
    bad = [({"repeats": 0}, "repeats"), ({"threads": 0}, "threads"), ({"warmup": -1}, "warmup"),
           ({"min_run_time": -1}, "min_run_time_s")]  # fmt: skip
    for kwargs, key in bad:
        with pytest.raises(ValueError, match=rf"benchmark\.{key} must be >= \d"):
            torch_latency(model, (2,), 4, **kwargs)
    with pytest.raises(ValueError, match=r"benchmark\.device='tpu' is not one of auto, cpu, cuda"):
        resolve_device("tpu")
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


def test_benchmark_settings_come_from_the_config() -> None:
    settings = benchmark_settings(compose([]).benchmark)
    assert settings == {"batch_size": 256, "threads": 1, "warmup": 10, "repeats": 20,
                        "min_run_time": 0.2, "device": "auto"}  # fmt: skip
    fast = benchmark_settings(compose(["debug=fast", "benchmark.threads=2"]).benchmark)
    assert fast["min_run_time"] < 0.1 and fast["threads"] == 2 and fast["batch_size"] == 32


def role(ms: float, ort: bool = False) -> dict:
    r = {"test/acc": 0.9, "val/acc": 0.9, "params": 100, "size_bytes": 2048, "latency_ms": ms,
         "latency_iqr_ms": ms / 10, "latency_ms_b1": ms / 4, "latency_iqr_ms_b1": 0.0,
         "latency_threads": 1, "latency_batch_size": 256, "latency_device": "cpu"}  # fmt: skip
    if ort:
        r.update(ort_latency_ms=ms / 2, ort_latency_iqr_ms=0.001, ort_latency_threads=1,
                 ort_latency_device="cpu")  # fmt: skip
    return r


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip("|").split("|")]


def test_table_shows_iqr_batch_one_and_ort_when_exported() -> None:
    results = {"teacher": {**role(8.0), "params": 1000}, "distilled": role(0.04, ort=True)}
    lines = comparison_table(results).splitlines()
    header, teacher, distilled = (cells(line) for line in (lines[0], lines[2], lines[3]))
    assert header[5:8] == ["ms b256 (IQR)", "ms b1", "ORT ms b256 (IQR)"]
    assert teacher[5:8] == ["8.000 (0.800)", "2.000", "-"]
    assert distilled[5:8] == ["0.040 (0.004)", "0.010", "0.020 (0.001)"]
    assert distilled[header.index("speed-up")] == "200.0x"  # 8.0 / 0.04, from the same results
    assert lines[-1] == latency_note(results)
    assert "1 thread, cpu" in lines[-1] and "ONNX Runtime" in lines[-1]
    without = comparison_table({"teacher": role(8.0), "distilled": role(0.04)})
    assert "ORT" not in without.splitlines()[0]


def test_table_still_reads_results_from_before_the_iqr() -> None:
    old = {"test/acc": 0.9, "val/acc": None, "params": 10, "size_bytes": 100, "latency_ms": 1.0}
    table = comparison_table({"teacher": old, "distilled": dict(old)})
    assert "| 1.000 " in table and "ms batch (IQR)" in table
    assert table.splitlines()[-1] == "latency: median ms per forward of a batch, on the CPU"
