"""Compute once per sweep, not once per job: trained teachers, baselines and teacher logits.

    python -m kdlightning.train -m kd.temperature=1,2,4,8 kd.alpha=0.1,0.5,0.9
    # job 0 trains the teacher and the baseline and stores them; jobs 1..11 load them
    python -m kdlightning.train cache.enabled=false      # always retrain
    python -m kdlightning.train cache.dir=/fast/disk     # where entries live (paths.cache_dir)

An entry is ``<cache.dir>/<kind>/<key>/`` holding ``tensors.pt`` (named tensors only: a model's
state dict) or ``tensors.safetensors`` (teacher logits, memory-mapped when read:
``kdlightning.distill.logit_store``), ``metrics.json`` and ``meta.json`` (the key's inputs and
the SHA-256 of the tensor file and of ``metrics.json``, and its own). ``key`` hashes everything that
can change the result: for a stage, the resolved configs in :data:`STAGE_INPUTS` (not ``kd.*``,
loggers or paths, which is what lets a temperature sweep share one teacher), what the data files
hold (the data module's ``fingerprint()``) and the source code of this package (editing a
model or the training loop never reuses a stale teacher). Nothing is unpickled: tensors are
read with ``torch.load(weights_only=True)`` (or mapped from safetensors) after their checksum
matched, and models are rebuilt from the config. A damaged or tampered entry is named in a
warning, discarded and recomputed.

Entries are written to a temporary folder and renamed into place; a file lock serializes the jobs
asking for the same key (a waiting job says what it waits for and gives up after
``cache.lock_timeout_s``), so parallel launchers compute each entry once and never read a
half-written one. ``events.jsonl`` records every hit and miss. Under DDP only rank 0 decides
and writes; the other ranks follow the decision it publishes in the run directory.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

import kdlightning
from kdlightning.distill.logit_store import open_tables, save_tables
from kdlightning.files import atomic_write, file_sha256, fingerprint_files
from kdlightning.job.distributed import is_global_zero, job_token

log = logging.getLogger(__name__)

#: The top-level config groups each stage's result depends on.
STAGE_INPUTS: dict[str, tuple[str, ...]] = {
    "teacher": ("teacher", "data", "optim", "trainer", "callbacks", "seed"),
    "baseline": ("student", "data", "optim", "trainer", "callbacks", "seed"),
}

# Settings that change how a run looks or how fast it loads data, never what it learns.
_IRRELEVANT = {
    "trainer": {"enable_progress_bar", "enable_model_summary", "log_every_n_steps"},
    "data": {"num_workers", "pin_memory", "on_device"},
    "callbacks": {"progress_bar", "stage_in_progress_bar"},
}

# Data settings that change no sample's input, on top of _IRRELEVANT: the logits key skips them.
_NOT_INPUTS = {"batch_size", "eval_batch_size", "num_labeled"}

StageResult = tuple[nn.Module, dict[str, Any]]


class CacheError(RuntimeError):
    """The cache folder cannot be used (not writable, lock never released)."""


@functools.cache
def code_version() -> str:
    """SHA-256 (16 hex digits) of this package's Python sources: part of every key."""
    root = Path(kdlightning.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _plain(cfg: DictConfig, name: str) -> Any:
    node = cfg.get(name)
    value = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if k not in _IRRELEVANT.get(name, ())}
    return value


def key_config(
    cfg: DictConfig, stage: str, data_files: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The resolved sub-configs that determine ``stage``'s trained model (the cache key input),
    and ``data_files``: what the data files hold (the data module's ``fingerprint()``), so that
    files replaced under the same path are never taken for the ones a stored teacher saw."""
    if stage not in STAGE_INPUTS:
        raise ValueError(f"no cache key is defined for stage {stage!r}; use one of {STAGE_INPUTS}")
    out: dict[str, Any] = {"kdlightning": kdlightning.__version__, "code": code_version()}
    out.update({name: _plain(cfg, name) for name in STAGE_INPUTS[stage]})
    if stage == "teacher" and isinstance(out.get("data"), dict):
        # The teacher trains on every label whatever data.num_labeled says (the transfer set
        # only withholds labels from the students): one teacher serves every num_labeled.
        out["data"].pop("num_labeled", None)
    if data_files:
        out["data_files"] = data_files
    checkpoint = (out.get(stage) or {}).get("checkpoint") if stage == "teacher" else None
    if checkpoint and Path(checkpoint).expanduser().is_file():
        # A teacher loaded from a file is only the same teacher while the file is unchanged.
        out["checkpoint_sha256"] = file_sha256(Path(checkpoint).expanduser())
    role = "teacher" if stage == "teacher" else "student"
    source = ((out.get(role) or {}).get("model") or {}).get("name_or_path")
    if isinstance(source, str) and Path(source).expanduser().is_dir():
        # A Hugging Face model from a folder (teacher=hf) is only the same model while the
        # folder's files are: weights saved anew under the same path must miss the cache.
        folder = Path(source).expanduser()
        out["model_files"] = fingerprint_files(sorted(p for p in folder.rglob("*") if p.is_file()))
    return out


def logits_key_inputs(
    cfg: DictConfig, teacher: nn.Module, data_files: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What the teacher's stored logits depend on: its weights, the data config, less what
    changes no input (loader settings, batch sizes, which training labels are kept), and what
    the data files hold (``data_files``)."""
    data = _plain(cfg, "data")
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k not in _NOT_INPUTS}
    out = {"teacher_weights": weights_sha256(teacher), "data": data}
    return {**out, "data_files": data_files} if data_files else out


def digest(payload: Any) -> str:
    """A short, stable hash of a JSON-able ``payload``."""
    blob = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cache_key(cfg: DictConfig, stage: str, data_files: dict[str, Any] | None = None) -> str:
    """Equal for jobs that may share ``stage``'s result."""
    return digest(key_config(cfg, stage, data_files))


def weights_sha256(model: nn.Module) -> str:
    """A hash of a model's tensors (names, shapes, values): what its outputs depend on."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def read_events(cache_dir: str | Path) -> list[dict[str, Any]]:
    """Every hit/miss the cache at ``cache_dir`` recorded, oldest first."""
    path = Path(cache_dir) / "events.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class DamagedEntry(Exception):
    """An entry that is incomplete, unreadable or not what its checksum says."""


#: The tensor file of an entry: ``pt`` (``torch.save``, read with ``weights_only=True``) or
#: ``safetensors`` (read memory-mapped: the processes of a node share one copy of the pages).
TENSOR_FILES = {"pt": "tensors.pt", "safetensors": "tensors.safetensors"}


def _meta_digest(meta: dict[str, Any]) -> str:
    # meta.json's own checksum: over its content without this field, in a canonical form
    rest = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest()


def load_entry(entry: Path) -> tuple[dict[str, Tensor], dict[str, Any], dict[str, Any]]:
    """(tensors, metrics, meta) of a cache entry, each file checked against its checksum: the
    tensors and the metrics by the SHA-256 sums in meta.json, meta.json by its own. A
    ``tensors.safetensors`` entry comes back memory-mapped (pages read as lookups touch them)."""
    try:
        meta = json.loads((entry / "meta.json").read_text())
        if meta.get("meta_sha256") != _meta_digest(meta):
            raise DamagedEntry("meta.json does not match its own checksum (edited?)")
        sums = meta.get("files") or {}
        tensor_file = next((f for f in TENSOR_FILES.values() if f in sums), "tensors.pt")
        for name in (tensor_file, "metrics.json"):
            if file_sha256(entry / name) != sums.get(name):
                raise DamagedEntry(f"{name} does not match its checksum in meta.json (edited?)")
        metrics = json.loads((entry / "metrics.json").read_text())
        if tensor_file == TENSOR_FILES["safetensors"]:
            tensors: Any = open_tables(entry / tensor_file)
        else:
            tensors = torch.load(entry / tensor_file, map_location="cpu", weights_only=True)
    except DamagedEntry:
        raise
    except Exception as err:  # missing, truncated, garbled JSON, not a tensor file, ...
        raise DamagedEntry(f"{type(err).__name__}: {err}") from err
    if not isinstance(tensors, dict) or not all(isinstance(v, Tensor) for v in tensors.values()):
        raise DamagedEntry(f"{tensor_file} holds no dict of tensors")
    return tensors, metrics, meta


def store_entry(
    entry: Path,
    tensors: dict[str, Tensor],
    metrics: dict[str, Any],
    meta: dict[str, Any],
    fmt: str = "pt",
) -> None:
    """Write an entry to a temporary folder and rename it into place (atomic for readers); every
    file is covered by a checksum (:func:`load_entry` checks them). ``fmt``: the tensor file's
    format, a key of :data:`TENSOR_FILES` (safetensors refuses tensors that share memory, as
    tied weights do: state dicts stay ``pt``)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        tensor_file = TENSOR_FILES[fmt]
        if fmt == "safetensors":
            save_tables(tensors, tmp / "t.tmp")
        else:
            plain = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
            torch.save(plain, tmp / "t.tmp")
        os.replace(tmp / "t.tmp", tmp / tensor_file)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
        sums = {name: file_sha256(tmp / name) for name in (tensor_file, "metrics.json")}
        meta = {**meta, "files": sums, "created": time.time()}
        meta = json.loads(json.dumps(meta, default=str))  # the form load_entry reads back
        meta["meta_sha256"] = _meta_digest(meta)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
        os.replace(tmp, entry)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _discard(entry: Path, why: str) -> None:
    log.warning("Cache entry %s is damaged (%s): discarding it and recomputing", entry, why)
    shutil.rmtree(entry, ignore_errors=True)


class StageCache:
    """The cache of one job: ``with StageCache(cfg, out) as cache: cache.stage(...)``.

    With ``cache.enabled=false`` every call computes. Leaving the block removes the decisions
    rank 0 published for the other ranks of this job.
    """

    def __init__(self, cfg: DictConfig, output_dir: Path) -> None:
        cache_cfg = cfg.get("cache") or {}
        self.cfg = cfg
        self.output_dir = Path(output_dir)
        self.enabled = bool(cache_cfg.get("enabled", False))
        self.lock_timeout_s = float(cache_cfg.get("lock_timeout_s", 3600))
        self.rank_wait_s = float(cache_cfg.get("rank_wait_s", 7200))
        self.dir = Path(str(cache_cfg.get("dir", "."))).expanduser().resolve()
        # what the data files hold (the data module's fingerprint()): part of every key
        self.data_files: dict[str, Any] = {}

    def __enter__(self) -> StageCache:
        return self

    def __exit__(self, *exc: object) -> None:
        if is_global_zero():  # every rank has read them by now
            shutil.rmtree(self.output_dir / ".cache_decisions", ignore_errors=True)

    # --- public --------------------------------------------------------------------------------
    def stage(
        self, stage: str, compute: Callable[[], StageResult], build: Callable[[], nn.Module]
    ) -> StageResult:
        """``compute()``'s (model, metrics), or a stored copy rebuilt with ``build()``.

        The metrics gain a ``cache`` entry: ``hit``, ``key``, ``entry`` (the cache folder) and
        ``trained_in`` (the run directory that computed it), or ``{"enabled": false}``.
        """
        if stage not in STAGE_INPUTS:  # no key is defined: always computed (the distilled one)
            return compute()
        if not self.enabled:
            model, metrics = compute()
            return model, {**metrics, "cache": {"enabled": False}}
        holder: dict[str, nn.Module] = {}

        def compute_tensors() -> tuple[dict[str, Tensor], dict[str, Any]]:
            holder["model"], metrics = compute()
            return holder["model"].state_dict(), metrics

        def restore(tensors: dict[str, Tensor]) -> None:
            model = build()
            model.load_state_dict(tensors, strict=True)  # a mismatch means a damaged entry
            holder["model"] = model.eval()

        inputs = key_config(self.cfg, stage, self.data_files)
        metrics, info = self._get(stage, digest(inputs), inputs, compute_tensors, restore)
        return holder["model"], {**metrics, "cache": info}

    def tensors(
        self,
        kind: str,
        key_inputs: dict[str, Any],
        compute: Callable[[], dict[str, Tensor]],
        mmap: bool = False,
    ) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Named tensors (e.g. teacher logits) keyed by ``key_inputs``; (tensors, cache info).

        ``mmap``: stored as safetensors and returned memory-mapped from the entry, also right
        after computing them (the computed copy is let go: a process then holds only the pages
        its lookups touch, shared with the other processes of the node)."""
        if not self.enabled:
            return compute(), {"enabled": False}
        holder: dict[str, dict[str, Tensor]] = {}

        def compute_tensors() -> tuple[dict[str, Tensor], dict[str, Any]]:
            holder["t"] = compute()
            return holder["t"], {}

        def restore(tensors: dict[str, Tensor]) -> None:
            holder["t"] = tensors

        key_inputs = {**key_inputs, "code": code_version()}
        fmt = "safetensors" if mmap else "pt"
        _, info = self._get(kind, digest(key_inputs), key_inputs, compute_tensors, restore, fmt)
        if mmap and not info["hit"] and is_global_zero():
            holder["t"] = load_entry(Path(info["entry"]))[0]  # just written and checked
        return holder["t"], info

    # --- the protocol --------------------------------------------------------------------------
    def _get(
        self,
        kind: str,
        key: str,
        key_inputs: dict[str, Any],
        compute: Callable[[], tuple[dict[str, Tensor], dict[str, Any]]],
        restore: Callable[[dict[str, Tensor]], None],
        fmt: str = "pt",
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        entry = self.dir / kind / key
        if not is_global_zero():
            # A DDP/torchrun rank > 0 computes *together with* rank 0, which holds the lock while
            # it computes: waiting for that lock here would deadlock, and deciding on its own
            # could disagree with rank 0. So it follows rank 0's published decision.
            hit = self._await_decision(kind, key)
            if hit:
                tensors, metrics, _ = load_entry(entry)
                restore(tensors)
            else:
                _, metrics = compute()
            return metrics, {"hit": hit, "key": key, "entry": str(entry)}
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CacheError(
                f"cannot create the cache folder {str(entry.parent)!r} ({err.strerror}); set "
                "cache.dir to a writable folder, or cache.enabled=false"
            ) from err
        with self._lock(entry, kind):
            hit, metrics, trained_in = False, {}, str(self.output_dir)
            if entry.is_dir():  # entries appear by atomic rename: a folder is a complete write
                try:
                    tensors, metrics, meta = load_entry(entry)
                    restore(tensors)
                    hit, trained_in = True, str(meta.get("trained_in", ""))
                except (DamagedEntry, RuntimeError) as err:
                    _discard(entry, str(err).splitlines()[0])
            self._publish_decision(kind, key, hit)
            if hit:
                log.info(
                    "Cache hit: reusing the %s from %s (computed in %s)", kind, entry, trained_in
                )
            else:
                log.info("Cache miss: computing the %s and storing it in %s", kind, entry)
                tensors, metrics = compute()
                meta = {"kind": kind, "key": key, "trained_in": trained_in, "inputs": key_inputs}
                store_entry(entry, tensors, metrics, meta, fmt)
            self._record({"stage": kind, "key": key, "hit": hit, "run": str(self.output_dir)})
        return metrics, {"hit": hit, "key": key, "entry": str(entry), "trained_in": trained_in}

    @contextmanager
    def _lock(self, entry: Path, kind: str) -> Iterator[None]:
        lock = FileLock(str(entry) + ".lock")
        start, step = time.monotonic(), min(5.0, self.lock_timeout_s)
        while True:
            try:
                lock.acquire(timeout=step)
                break
            except Timeout:
                waited = time.monotonic() - start
                if waited >= self.lock_timeout_s:
                    raise CacheError(
                        f"gave up after {waited:.0f} s waiting for {entry}.lock: another job "
                        f"computes this {kind} (or died holding the lock). Raise "
                        "cache.lock_timeout_s, or remove the lock file if no job uses it."
                    ) from None
                log.warning(
                    "Waiting for another job computing the %s (%s.lock): %.0f s so far, "
                    "giving up after %.0f s (cache.lock_timeout_s)",
                    kind, entry, waited, self.lock_timeout_s,
                )  # fmt: skip
                step = min(60.0, self.lock_timeout_s - waited + 0.1)
        try:
            yield
        finally:
            lock.release()

    def _record(self, event: dict[str, Any]) -> None:
        # One JSON object per line, appended under its own lock: the audit trail of a sweep.
        with (
            FileLock(str(self.dir / "events.jsonl.lock")),
            open(self.dir / "events.jsonl", "a") as f,
        ):
            f.write(json.dumps({"time": time.time(), **event}) + "\n")

    def _decision_file(self, kind: str) -> Path:
        return self.output_dir / ".cache_decisions" / f"{kind}.json"

    def _publish_decision(self, kind: str, key: str, hit: bool) -> None:
        path = self._decision_file(kind)
        path.parent.mkdir(parents=True, exist_ok=True)
        # atomic: a reader sees the old decision or the whole new one
        atomic_write(path, json.dumps({"token": job_token(), "key": key, "hit": hit}))

    def _await_decision(self, kind: str, key: str) -> bool:
        path, token = self._decision_file(kind), job_token()
        start = time.monotonic()
        while True:
            try:
                decision = json.loads(path.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                decision = {}
            if decision.get("token") == token and decision.get("key") == key:
                return bool(decision["hit"])
            if decision.get("token") == token and decision.get("key") not in (None, key):
                # Same job, another key: this rank would wait for a decision that never comes.
                raise CacheError(
                    f"rank 0 keyed the {kind} {decision['key']} but this rank computed {key}: "
                    "the ranks see different configs or package code (was a source file edited "
                    "while the job started?). Start the job again."
                )
            waited = time.monotonic() - start
            if int(waited / 60) != int((waited - 0.2) / 60):
                log.info("Waiting %.0f s for rank 0's cache decision on the %s", waited, kind)
            if waited > self.rank_wait_s:
                raise CacheError(
                    f"rank 0 published no cache decision for the {kind} in {path} within "
                    f"{self.rank_wait_s:.0f} s (cache.rank_wait_s); did it fail? Set "
                    "cache.enabled=false to compute every stage in every job."
                )
            time.sleep(0.2)
