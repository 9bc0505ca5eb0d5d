"""What a deployed model costs: parameter count, saved size and CPU latency.

from kdlightning.measure import measure_model
measure_model(student, input_shape=(1, 8, 8), batch_size=256)
# {'params': 2410, 'size_bytes': 11563, 'latency_ms': 0.08}
"""

from __future__ import annotations

import copy
import io
import statistics
import time
from collections.abc import Sequence

import torch
from torch import nn


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not) of ``model``."""
    return sum(p.numel() for p in model.parameters())


def state_dict_bytes(model: nn.Module) -> int:
    """Size in bytes of ``torch.save(model.state_dict())``: what a deployed model weighs."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


@torch.no_grad()
def latency_ms(
    model: nn.Module,
    input_shape: Sequence[int],
    batch_size: int = 256,
    warmup: int = 10,
    repeats: int = 50,
) -> float:
    """Median wall time in milliseconds of one eval-mode forward of a batch on the CPU.

    Runs ``warmup`` untimed forwards first (allocator and kernel selection settle), then times
    ``repeats`` forwards one by one; the median ignores the odd scheduler hiccup. The model is
    measured on a CPU copy so that a GPU-trained model is timed the same way; its own device
    and train/eval mode are left untouched.
    """
    if repeats < 1:
        raise ValueError(f"benchmark.repeats must be >= 1, got {repeats!r}")
    cpu_model = copy.deepcopy(model).to("cpu").eval()
    x = torch.randn(int(batch_size), *input_shape)
    for _ in range(int(warmup)):
        cpu_model(x)
    times = []
    for _ in range(int(repeats)):
        start = time.perf_counter()
        cpu_model(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def measure_model(
    model: nn.Module,
    input_shape: Sequence[int],
    batch_size: int = 256,
    warmup: int = 10,
    repeats: int = 50,
) -> dict[str, float]:
    """``params``, ``size_bytes`` and ``latency_ms`` of ``model`` in one dict."""
    return {
        "params": count_parameters(model),
        "size_bytes": state_dict_bytes(model),
        "latency_ms": latency_ms(model, input_shape, batch_size, warmup, repeats),
    }
