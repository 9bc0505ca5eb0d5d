"""Everything a job writes into its run directory, in one place.

    results.json     teacher / baseline / distilled metrics and costs, plus a summary (strict JSON)
    comparison.md    the side-by-side table the job prints
    student.pt       the distilled student's state dict (``torch.load(..., weights_only=True)``)
    failed.json      why the job stopped (error, signal, traceback), for the sweep report

Every file is written to a temporary name and renamed into place, so a killed job never leaves
a half-written file that looks valid.
"""

from __future__ import annotations

import json
import math
import os
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdlightning.compare import comparison_table, ratios

RESULTS = "results.json"
FAILED = "failed.json"


def finite(tree: Any) -> Any:
    """``tree`` with every non-finite float replaced by ``None`` (JSON has no NaN)."""
    if isinstance(tree, float) and not math.isfinite(tree):
        return None
    if isinstance(tree, Mapping):
        return {k: finite(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return [finite(v) for v in tree]
    return tree


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, payload: Any) -> None:
    """Strict JSON (no NaN/Infinity tokens), atomically."""
    atomic_write(path, json.dumps(finite(payload), indent=2, allow_nan=False) + "\n")


def write_job(
    output_dir: Path, results: dict[str, Any], weights: Mapping[str, nn.Module] | None = None
) -> str:
    """Write results.json, comparison.md and each ``{file name: model}`` state dict in
    ``weights`` (``student.pt``, ``teacher.pt``); returns the comparison table."""
    output_dir.mkdir(parents=True, exist_ok=True)
    for name, model in (weights or {}).items():
        tmp = output_dir / f".{name}.{os.getpid()}.tmp"
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, output_dir / name)
    write_json(output_dir / RESULTS, results)
    table = comparison_table(results)
    atomic_write(output_dir / "comparison.md", table + "\n")
    return table


def summary(results: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """The ``summary`` entry: compression and speed-up of the distilled student, and ``extra``."""
    out = dict(extra)
    if "distilled" in results:
        out["compression"], out["speedup"] = ratios(results, "distilled")
    return out


def mark_failed(output_dir: Path, err: BaseException, signal_name: str | None = None) -> None:
    """Record why a job failed (``failed.json``), for the report to list it."""
    output_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "error": f"{type(err).__name__}: {err}".strip().rstrip(":"),
        "signal": signal_name,
        "traceback": "".join(traceback.format_exception(err)),
    }
    write_json(output_dir / FAILED, payload)
