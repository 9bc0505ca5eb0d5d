"""Everything a job writes into its run directory, in one place.

    results.json     teacher / baseline / distilled metrics and costs, plus a summary (strict JSON)
    comparison.md    the side-by-side table the job prints
    student.pt       the distilled student's state dict (``torch.load(..., weights_only=True)``);
                     its SHA-256 in results.json (``summary.sha256``)
    config.yaml      the resolved config the job ran with: rebuilds its models (kdl-export)
    failed.json      why the job stopped (error, signal, traceback), for the sweep report
    <stage>/result/  a finished stage's weights and metrics (checksummed), what resume=true reads

Every file is written to a temporary name and renamed into place, so a killed job never leaves
a half-written file that looks valid.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from kdlightning.deploy.compare import comparison_table, comparison_title, ratios
from kdlightning.files import atomic_path, atomic_write, file_sha256
from kdlightning.job.cache import DamagedEntry, load_entry, store_entry
from kdlightning.job.errors import mark_failed  # noqa: F401  (the job's failed.json)
from kdlightning.job.runfiles import CONFIG, FAILED, RESULTS  # noqa: F401  (the file names)


def finite(tree: Any) -> Any:
    """``tree`` with every non-finite float replaced by ``None`` (JSON has no NaN)."""
    if isinstance(tree, float) and not math.isfinite(tree):
        return None
    if isinstance(tree, Mapping):
        return {k: finite(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return [finite(v) for v in tree]
    return tree


def write_json(path: Path, payload: Any) -> None:
    """Strict JSON (no NaN/Infinity tokens), atomically."""
    atomic_write(path, json.dumps(finite(payload), indent=2, allow_nan=False) + "\n")


def write_job(
    output_dir: Path,
    results: dict[str, Any],
    weights: Mapping[str, nn.Module] | None = None,
    title: Callable[[Mapping[str, Any]], str] = comparison_title,
    table: Callable[[Mapping[str, Any]], str] = comparison_table,
) -> str:
    """Write results.json, comparison.md and each ``{file name: model}`` state dict in
    ``weights`` (``student.pt``, ``teacher.pt``); returns the comparison: ``title`` and
    ``table`` of ``results`` (the image job's by default; language models pass their own).
    Each weights file's SHA-256 goes into ``results["summary"]["sha256"]``: what kdl-eval and
    kdl-export check the file against before loading it."""
    output_dir.mkdir(parents=True, exist_ok=True)
    sums = {}
    for name, model in (weights or {}).items():
        with atomic_path(output_dir / name) as tmp:
            torch.save(model.state_dict(), tmp)
            sums[name] = file_sha256(tmp)
    if sums:
        results.setdefault("summary", {})["sha256"] = sums
    write_json(output_dir / RESULTS, results)
    comparison = f"{title(results)}\n\n{table(results)}"
    atomic_write(output_dir / "comparison.md", comparison + "\n")
    return comparison


def write_config(output_dir: Path, cfg: Any) -> None:
    """``config.yaml``: the job's config, resolved (paths absolute), so that any run directory,
    in-process or from the CLI, can rebuild its student (``kdlightning.deploy.export``)."""
    atomic_write(output_dir / CONFIG, OmegaConf.to_yaml(cfg, resolve=True))


def summary(results: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """The ``summary`` entry: compression and speed-up of the distilled student, its ``method``
    (when the distilled stage recorded one), and ``extra``."""
    out = dict(extra)
    if "distilled" in results:
        out["compression"], out["speedup"] = ratios(results, "distilled")
        # the distillation method (kd.method) the stage recorded, for kdl-report to group by
        if "method" in results["distilled"]:
            out.setdefault("method", results["distilled"]["method"])
    return out


def save_stage(output_dir: Path, stage: str, model: nn.Module, metrics: dict[str, Any]) -> None:
    """Keep a finished stage's weights and metrics in ``<stage>/result`` for ``resume=true``."""
    entry = output_dir / stage / "result"
    entry.parent.mkdir(parents=True, exist_ok=True)
    if entry.exists():  # a resumed job re-saves what it read back: keep the first write
        return
    store_entry(entry, model.state_dict(), finite(metrics), {"stage": stage})


def load_stage(
    output_dir: Path, stage: str, build: Callable[[], nn.Module]
) -> tuple[nn.Module, dict[str, Any]] | None:
    """A stage :func:`save_stage` kept, rebuilt with ``build()``; ``None`` if there is none."""
    entry = output_dir / stage / "result"
    if not entry.is_dir():
        return None
    try:
        tensors, metrics, _ = load_entry(entry)
        model = build()
        model.load_state_dict(tensors, strict=True)
    except (DamagedEntry, RuntimeError) as err:
        raise DamagedEntry(
            f"cannot resume: the saved {stage} stage in {entry} is damaged ({err}); delete that "
            "folder to run the stage again"
        ) from err
    return model, metrics
