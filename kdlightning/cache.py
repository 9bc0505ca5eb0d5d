"""Train the teacher and the student-alone baseline once per sweep, not once per job.

    python -m kdlightning.train -m kd.temperature=1,2,4,8 kd.alpha=0.1,0.5,0.9
    # job 0 trains the teacher and the baseline and stores them; jobs 1..11 load them
    python -m kdlightning.train cache.enabled=false      # always retrain
    python -m kdlightning.train cache.dir=/fast/disk     # where entries live (paths.cache_dir)

A stage's result (the trained ``nn.Module`` and its metrics) is stored under
``<cache.dir>/<stage>/<key>/`` where ``key`` hashes every resolved config that can change it
(:data:`STAGE_INPUTS`): the model, data, optimizer, trainer and callbacks settings, the seed and
the kdlightning version -- but not ``kd.*``, loggers or paths, which is what lets a temperature
sweep share one teacher. Entries are written to a temporary folder and renamed into place, and
a file lock serializes the jobs asking for the same key, so parallel launchers train each
entry once and never read a half-written one. ``events.jsonl`` records every hit and miss.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from omegaconf import DictConfig, OmegaConf
from torch import nn

import kdlightning
from kdlightning.distributed import is_global_zero, job_token

log = logging.getLogger(__name__)

#: The top-level config groups each stage's result depends on.
STAGE_INPUTS: dict[str, tuple[str, ...]] = {
    "teacher": ("teacher", "data", "optim", "trainer", "callbacks", "seed"),
    "baseline": ("student", "data", "optim", "trainer", "callbacks", "seed"),
}

# Settings that change how a run looks or how fast it loads data, never what it learns.
_IRRELEVANT = {
    "trainer": {"enable_progress_bar", "enable_model_summary", "log_every_n_steps"},
    "data": {"num_workers", "pin_memory"},
}

StageResult = tuple[nn.Module, dict[str, Any]]


def key_config(cfg: DictConfig, stage: str) -> dict[str, Any]:
    """The resolved sub-configs that determine ``stage``'s trained model (the cache key input)."""
    if stage not in STAGE_INPUTS:
        raise ValueError(f"no cache key is defined for stage {stage!r}; use one of {STAGE_INPUTS}")
    out: dict[str, Any] = {"kdlightning": kdlightning.__version__}
    for name in STAGE_INPUTS[stage]:
        node = cfg.get(name)
        value = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in _IRRELEVANT.get(name, ())}
        out[name] = value
    checkpoint = (out.get(stage) or {}).get("checkpoint") if stage == "teacher" else None
    if checkpoint and Path(checkpoint).is_file():
        # A teacher loaded from a file is only the same teacher while the file is unchanged.
        stat = Path(checkpoint).stat()
        out["checkpoint_file"] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    return out


def cache_key(cfg: DictConfig, stage: str) -> str:
    """A short, stable hash of :func:`key_config`: equal for jobs that may share ``stage``."""
    blob = json.dumps(key_config(cfg, stage), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _record(cache_dir: Path, event: dict[str, Any]) -> None:
    # One JSON object per line, appended under its own lock: the audit trail of a sweep.
    lock = FileLock(str(cache_dir / "events.jsonl.lock"))
    with lock, open(cache_dir / "events.jsonl", "a") as f:
        f.write(json.dumps({"time": time.time(), **event}) + "\n")


def read_events(cache_dir: str | Path) -> list[dict[str, Any]]:
    """Every hit/miss the cache at ``cache_dir`` recorded, oldest first."""
    path = Path(cache_dir) / "events.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _load(entry: Path) -> StageResult:
    # The whole module is pickled (not a state dict) so that loading needs no model builder:
    # however a stage obtains its model, the cache hands back the same object. The cache is
    # written by this tool only; do not point cache.dir at files you do not trust.
    model = torch.load(entry / "model.pt", map_location="cpu", weights_only=False)
    metrics = json.loads((entry / "metrics.json").read_text())
    return model, metrics


def _store(entry: Path, model: nn.Module, metrics: dict[str, Any], meta: dict[str, Any]) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        torch.save(model, tmp / "model.pt")
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
        os.replace(tmp, entry)  # atomic: readers see no entry or a complete one
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _decision_file(output_dir: Path, stage: str) -> Path:
    return Path(output_dir) / ".cache_decisions" / f"{stage}.json"


def _publish_decision(output_dir: Path, stage: str, key: str, hit: bool) -> None:
    """Rank 0 tells the job's other ranks whether it loads ``stage`` or computes it."""
    path = _decision_file(output_dir, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"token": job_token(), "key": key, "hit": hit}))
    os.replace(tmp, path)  # atomic: a reader sees the old decision or the whole new one


def clear_decisions(output_dir: Path) -> None:
    """Rank 0, at the end of a job: drop the decisions, so a rerun in this dir starts clean."""
    shutil.rmtree(Path(output_dir) / ".cache_decisions", ignore_errors=True)


def _await_decision(output_dir: Path, stage: str, key: str, cache_cfg: Any) -> bool:
    """On a rank > 0: wait for rank 0's decision for this job (its token) and return ``hit``."""
    path, token = _decision_file(output_dir, stage), job_token()
    timeout = float(cache_cfg.get("rank_wait_s", 7200))
    start = time.monotonic()
    while True:
        try:
            decision = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            decision = {}
        if decision.get("token") == token and decision.get("key") == key:
            return bool(decision["hit"])
        if time.monotonic() - start > timeout:
            raise TimeoutError(
                f"rank 0 published no cache decision for the {stage} in {path} within "
                f"{timeout:.0f} s (cache.rank_wait_s); did it fail? Set cache.enabled=false "
                "to train every stage in every job."
            )
        time.sleep(0.2)


def cached_stage(
    cfg: DictConfig, stage: str, compute: Callable[[], StageResult], output_dir: Path
) -> StageResult:
    """Return ``compute()``'s (model, metrics) for ``stage``, from the cache when possible.

    The metrics gain a ``cache`` entry: ``hit``, ``key``, ``entry`` (the cache folder) and
    ``trained_in`` (the run directory that computed it). With ``cache.enabled=false`` this is
    ``compute()`` plus ``cache: {"enabled": false}``.
    """
    cache_cfg = cfg.get("cache") or {}
    if not cache_cfg.get("enabled", False):
        model, metrics = compute()
        return model, {**metrics, "cache": {"enabled": False}}
    cache_dir = Path(str(cache_cfg["dir"])).expanduser().resolve()
    key = cache_key(cfg, stage)
    entry = cache_dir / stage / key
    entry.parent.mkdir(parents=True, exist_ok=True)
    if not is_global_zero():
        # A DDP/torchrun rank > 0 trains *together with* rank 0, which holds the lock while it
        # computes: waiting for that lock here would deadlock the job, and deciding on its own
        # could disagree with rank 0 (another job may store the entry in between) and leave the
        # ranks in different fits. So it follows rank 0's published decision; only rank 0 writes.
        hit = _await_decision(output_dir, stage, key, cache_cfg)
        model, metrics = _load(entry) if hit else compute()
        return model, {**metrics, "cache": {"hit": hit, "key": key, "entry": str(entry)}}
    # Held while computing: a second job asking for the same key waits, then loads the entry.
    with FileLock(str(entry) + ".lock"):
        hit = entry.is_dir()  # entries appear by atomic rename, so a folder is a complete one
        _publish_decision(output_dir, stage, key, hit)
        if hit:
            model, metrics = _load(entry)
            trained_in = json.loads((entry / "meta.json").read_text())["trained_in"]
            log.info(
                "Cache hit: reusing the %s from %s (trained in %s); cache.enabled=false retrains",
                stage,
                entry,
                trained_in,
            )
        else:
            log.info("Cache miss: computing the %s and storing it in %s", stage, entry)
            model, metrics = compute()
            trained_in = str(output_dir)
            meta = {"stage": stage, "key": key, "trained_in": trained_in, "created": time.time()}
            _store(entry, model, metrics, {**meta, "config": key_config(cfg, stage)})
        _record(cache_dir, {"stage": stage, "key": key, "hit": hit, "run": str(output_dir)})
    info = {"hit": hit, "key": key, "entry": str(entry), "trained_in": trained_in}
    return model, {**metrics, "cache": info}
