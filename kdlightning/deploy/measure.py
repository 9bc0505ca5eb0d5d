"""What a deployed model costs: parameters, saved size, and latency that can be trusted.

    from kdlightning.deploy.measure import measure_costs, time_call
    measure_costs(student, input_shape=(1, 8, 8), batch_size=256, threads=1)
    # {'params': 2410, 'size_bytes': 11563, 'latency_ms': 0.041, 'latency_iqr_ms': 0.001,
    #  'latency_ms_b1': 0.012, 'latency_iqr_ms_b1': 0.0004, 'latency_threads': 1,
    #  'latency_batch_size': 256, 'latency_device': 'cpu'}
    time_call(lambda: session.run(None, {"input": x}), threads=1).median_ms   # any callable

Latency is timed with ``torch.utils.benchmark.Timer``: a fixed thread count (stated in the
results), untimed warm-up forwards, then at least ``repeats`` timed blocks of many calls and at
least ``min_run_time`` seconds in all (:func:`time_call` says why not ``blocked_autorange``); the
median and the interquartile range (IQR) of the per-call times over blocks are reported, in
milliseconds. On a GPU the Timer
synchronizes the device around every block, so queued kernels are counted. Ratios of latencies
(speed-ups) are only meaningful between figures measured in one process on one machine: the
main job and ``benchmarks/latency.py`` measure every model in the same process.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.benchmark import Measurement, Timer

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Latency:
    """One latency measurement: median and IQR of the per-call time, in milliseconds."""

    median_ms: float
    iqr_ms: float
    threads: int
    blocks: int  # timed blocks the median and IQR are taken over
    calls_per_block: int


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not) of ``model``."""
    return sum(p.numel() for p in model.parameters())


def state_dict_bytes(model: nn.Module) -> int:
    """Size in bytes of ``torch.save(model.state_dict())``: what a deployed model weighs."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def resolve_device(device: str) -> str:
    """``cpu`` or ``cuda`` for a ``benchmark.device`` value (``auto``: CUDA when present)."""
    if device not in DEVICES:
        raise ValueError(f"benchmark.device={device!r} is not one of {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("benchmark.device=cuda but no CUDA device is visible; use auto or cpu")
    return device


def _check(threads: int, warmup: int, repeats: int, min_run_time: float) -> None:
    # Named after the config keys: these values come from the benchmark: block.
    if int(repeats) < 1:
        raise ValueError(f"benchmark.repeats must be >= 1, got {repeats!r}")
    if int(threads) < 1:
        raise ValueError(f"benchmark.threads must be >= 1, got {threads!r}")
    if int(warmup) < 0:
        raise ValueError(f"benchmark.warmup must be >= 0, got {warmup!r}")
    if not float(min_run_time) >= 0:
        raise ValueError(f"benchmark.min_run_time_s must be >= 0, got {min_run_time!r}")


def time_call(
    fn: Callable[[], Any],
    threads: int = 1,
    warmup: int = 10,
    repeats: int = 20,
    min_run_time: float = 0.2,
) -> Latency:
    """Median and IQR of ``fn()``'s wall time with ``threads`` torch threads.

    ``warmup`` untimed calls first (allocator, kernel selection and lazy initialization
    settle, and their mean sizes the blocks), then at least ``repeats`` timed blocks of
    ``Timer.timeit(calls_per_block)`` and at least ``min_run_time`` seconds in all; each block
    lasts about ``min_run_time / repeats``. ``Timer.blocked_autorange`` sizes its blocks for a
    1e-4 relative overhead instead: 10,000-call blocks (0.4 s each) for a 40 µs student, and
    27 s (measured here) to time one small MLP at batch 1 and 256 with 10 blocks each; with
    blocks of 10 ms the Timer's fixed cost per block (1.6 µs here) is below 2e-4 already.
    """
    _check(threads, warmup, repeats, min_run_time)
    timer = Timer("fn()", globals={"fn": fn}, num_threads=int(threads))
    first = timer.timeit(max(int(warmup), 1))  # the same thread count as the timed calls
    per_call = max(first.mean, 1e-9)
    number = max(1, int(float(min_run_time) / int(repeats) / per_call))
    raw: list[float] = []
    while len(raw) < int(repeats) or sum(raw) < float(min_run_time):
        raw.extend(timer.timeit(number).raw_times)
    m = Measurement(number, raw, first.task_spec)
    return Latency(m.median * 1e3, m.iqr * 1e3, int(threads), len(raw), number)


def torch_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    batch_size: int = 256,
    threads: int = 1,
    warmup: int = 10,
    repeats: int = 20,
    min_run_time: float = 0.2,
    device: str = "cpu",
) -> Latency:
    """Latency of one eval-mode, no-grad forward of a random batch of ``batch_size`` inputs.

    The model is timed as a copy on ``device`` (``auto``: CUDA when present), so the caller's
    model keeps its own device and train/eval mode.
    """
    dev = resolve_device(device)
    model = copy.deepcopy(model).to(dev).eval()
    x = torch.randn(int(batch_size), *input_shape, device=dev)

    def forward() -> None:
        with torch.no_grad():
            model(x)

    return time_call(forward, threads, warmup, repeats, min_run_time)


def latency_ms(
    model: nn.Module,
    input_shape: Sequence[int],
    batch_size: int = 256,
    warmup: int = 10,
    repeats: int = 20,
    **timing: Any,
) -> float:
    """Median milliseconds of one forward of a batch (see :func:`torch_latency`)."""
    return torch_latency(
        model, input_shape, batch_size, warmup=warmup, repeats=repeats, **timing
    ).median_ms


def latency_keys(large: Latency, one: Latency, prefix: str = "") -> dict[str, float | int]:
    """The results keys for a model's latency at the large batch and at batch 1."""
    return {
        f"{prefix}latency_ms": large.median_ms,
        f"{prefix}latency_iqr_ms": large.iqr_ms,
        f"{prefix}latency_ms_b1": one.median_ms,
        f"{prefix}latency_iqr_ms_b1": one.iqr_ms,
        f"{prefix}latency_threads": large.threads,
    }


def measure_model(
    model: nn.Module,
    input_shape: Sequence[int],
    batch_size: int = 256,
    warmup: int = 10,
    repeats: int = 20,
    **timing: Any,
) -> dict[str, float]:
    """``params``, ``size_bytes`` and ``latency_ms`` (the median at ``batch_size``)."""
    return {
        "params": count_parameters(model),
        "size_bytes": state_dict_bytes(model),
        "latency_ms": latency_ms(model, input_shape, batch_size, warmup, repeats, **timing),
    }


def measure_costs(
    model: nn.Module,
    input_shape: Sequence[int],
    batch_size: int = 256,
    threads: int = 1,
    warmup: int = 10,
    repeats: int = 20,
    min_run_time: float = 0.2,
    device: str = "cpu",
) -> dict[str, Any]:
    """Everything the comparison table shows about a model's cost: parameters, size, and the
    latency (median and IQR) at ``batch_size`` and at batch 1, with threads and device."""
    timing = dict(
        threads=threads, warmup=warmup, repeats=repeats, min_run_time=min_run_time, device=device
    )
    large = torch_latency(model, input_shape, batch_size, **timing)
    one = torch_latency(model, input_shape, 1, **timing)
    return {
        "params": count_parameters(model),
        "size_bytes": state_dict_bytes(model),
        **latency_keys(large, one),
        "latency_batch_size": int(batch_size),
        "latency_device": resolve_device(device),
    }


def benchmark_settings(benchmark: Any) -> dict[str, Any]:
    """:func:`measure_costs` keyword arguments from the config's ``benchmark:`` block."""
    get = benchmark.get
    return {
        "batch_size": int(get("batch_size", 256)),
        "threads": int(get("threads", 1)),
        "warmup": int(get("warmup", 10)),
        "repeats": int(get("repeats", 20)),
        "min_run_time": float(get("min_run_time_s", 0.2)),
        "device": str(get("device", "auto")),
    }
