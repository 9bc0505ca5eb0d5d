"""Everything a job writes into its run directory, in one place.

    results.json     teacher / baseline / distilled metrics and costs, plus a summary (strict JSON)
    comparison.md    the side-by-side table the job prints
    student.pt       the distilled student's state dict (``torch.load(..., weights_only=True)``)
    config.yaml      the resolved config the job ran with: rebuilds its models (kdl-export)
    failed.json      why the job stopped (error, signal, traceback), for the sweep report
    <stage>/result/  a finished stage's weights and metrics (checksummed), what resume=true reads

Every file is written to a temporary name and renamed into place, so a killed job never leaves
a half-written file that looks valid.
"""

from __future__ import annotations

import json
import math
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout
from omegaconf import OmegaConf
from torch import nn

from kdlightning.deploy.compare import comparison_table, comparison_title, ratios
from kdlightning.files import atomic_path, atomic_write
from kdlightning.job.cache import DamagedEntry, load_entry, store_entry

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
    ``table`` of ``results`` (the image job's by default; language models pass their own)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    for name, model in (weights or {}).items():
        with atomic_path(output_dir / name) as tmp:
            torch.save(model.state_dict(), tmp)
    write_json(output_dir / RESULTS, results)
    comparison = f"{title(results)}\n\n{table(results)}"
    atomic_write(output_dir / "comparison.md", comparison + "\n")
    return comparison


def write_config(output_dir: Path, cfg: Any) -> None:
    """``config.yaml``: the job's config, resolved (paths absolute), so that any run directory,
    in-process or from the CLI, can rebuild its student (``kdlightning.deploy.export``)."""
    atomic_write(output_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))


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


def mark_failed(output_dir: Path, err: BaseException, signal_name: str | None = None) -> None:
    """Record why a job failed (``failed.json``), for the report to list it."""
    output_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "error": f"{type(err).__name__}: {err}".strip().rstrip(":"),
        "signal": signal_name,
        "traceback": "".join(traceback.format_exception(err)),
    }
    write_json(output_dir / FAILED, payload)


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


def earlier_work(output_dir: Path) -> list[str]:
    """Files of an earlier run in ``output_dir`` that a new run would overwrite."""
    found = [RESULTS] if (output_dir / RESULTS).is_file() else []
    found += sorted(
        str(p.relative_to(output_dir))
        for pattern in ("*/result", "*/checkpoints/*.ckpt")
        for p in output_dir.glob(pattern)
    )
    return found


# --- claiming a run directory -------------------------------------------------------------------
LOCK_FILE = ".kdl-run.lock"
# The run folders this process holds, with their locks (a second lock on the same file from this
# process would wait for the first: fcntl locks belong to open file descriptions).
_HELD: dict[str, FileLock] = {}


class RunRefused(FileExistsError):
    """A job refused before it wrote anything into a run folder: the folder is in use by another
    job, or holds a run that this one would overwrite. Nothing of that folder was changed (no
    failed.json either)."""


def claim_run_dir(output_dir: Path, resume: bool) -> None:
    """Claim ``output_dir`` for this process until :func:`release_run_dir`: refused (with
    :class:`RunRefused`) while another job holds it, and when it already holds a run and
    ``resume`` is false. The claim is a lock file that the operating system releases when the
    process dies, so a killed job never leaves its folder locked."""
    key = str(output_dir.resolve())
    if key in _HELD:
        return
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(output_dir / LOCK_FILE), timeout=0)
        lock.acquire()
    except PermissionError as err:
        raise PermissionError(
            f"cannot write into {output_dir} ({err.strerror}): choose a folder this user may "
            "write, e.g. paths.log_dir=<folder> (or hydra.run.dir=<folder>)"
        ) from None
    except Timeout:
        raise RunRefused(
            f"{output_dir} is in use by another job right now; wait for it to end, or choose "
            "another hydra.run.dir (nothing was written there)"
        ) from None
    earlier = earlier_work(output_dir)
    if earlier and not resume:
        lock.release()
        raise RunRefused(
            f"{output_dir} already holds a run ({', '.join(earlier[:4])}); pass resume=true to "
            "continue it, or choose another hydra.run.dir (nothing was overwritten)"
        )
    _HELD[key] = lock


def release_run_dir(output_dir: Path) -> None:
    """Give up the claim of :func:`claim_run_dir` (no-op when this process holds none)."""
    lock = _HELD.pop(str(output_dir.resolve()), None)
    if lock is not None:
        lock.release()


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, Mapping):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): tree}


#: Keys a resumed job may change: the switch itself, and how the job shows its progress.
RESUME_MAY_CHANGE = ("resume", "trainer.enable_progress_bar")


def check_resume_config(output_dir: Path, cfg: Any) -> None:
    """A resumed job must run with the config the run started with (its ``config.yaml``), else
    its results would mix two settings (epochs 1-16 at T=2, the rest at T=8, reported as T=8).
    Raises :class:`RunRefused` naming the keys that differ."""
    path = output_dir / "config.yaml"
    if not path.is_file():
        return  # interrupted before it wrote its config: nothing ran yet
    before = _flat(OmegaConf.to_container(OmegaConf.load(path), resolve=True))
    now = _flat(OmegaConf.to_container(cfg, resolve=True))
    differ = sorted(
        k for k in set(before) | set(now)
        if before.get(k) != now.get(k) and not k.startswith(RESUME_MAY_CHANGE)
    )  # fmt: skip
    if differ:
        shown = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in differ[:5])
        raise RunRefused(
            f"resume=true with a config that differs from the run's in {output_dir} ({shown}"
            f"{', ...' if len(differ) > 5 else ''}); resume with the run's own settings (its "
            "config.yaml), or start a new run in another folder"
        )
