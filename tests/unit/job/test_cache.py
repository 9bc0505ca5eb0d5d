"""kdlightning.job.cache: what the key depends on, hits and misses, damaged and hostile entries,
failures, locks, concurrent jobs and DDP ranks."""

from __future__ import annotations

import copy
import functools
import json
import logging
import os
import pickle
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import compose
from filelock import FileLock
from omegaconf import DictConfig, open_dict

from kdlightning.job.cache import (
    CacheError,
    StageCache,
    _meta_digest,
    cache_key,
    file_sha256,
    key_config,
    load_entry,
    read_events,
)


@functools.cache
def _composed(overrides: tuple[str, ...]) -> DictConfig:
    # Composing takes a good fraction of a second: once per set of overrides per session.
    return compose(list(overrides))


def config(*overrides: str, cache_dir: Path | None = None, **cache: Any) -> DictConfig:
    """The composed job config (a copy), with ``cache.dir`` and other ``cache.*`` settings."""
    cfg = copy.deepcopy(_composed(overrides))
    with open_dict(cfg):
        if cache_dir is not None:
            cfg.cache.dir = str(cache_dir)
        for key, value in cache.items():
            cfg.cache[key] = value
    return cfg


@functools.cache
def default_key(stage: str) -> str:
    return cache_key(config(), stage)


@pytest.mark.parametrize(
    "override",
    ["kd.temperature=8", "kd.alpha=0.1", "kd.teacher_logits=online", "logger=tensorboard",
     "benchmark.repeats=7", "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1",
     "callbacks.progress_bar.refresh_rate=1", "callbacks.progress_bar=null", "data.num_workers=2",
     "student=cnn", "baseline=false", "paths.log_dir=/elsewhere"],
)  # fmt: skip
def test_teacher_key_ignores_what_the_teacher_does_not_depend_on(override: str) -> None:
    assert cache_key(config(override), "teacher") == default_key("teacher")


@pytest.mark.parametrize(
    "override",
    ["teacher=mlp", "teacher.model.hidden=128", "seed=1", "data.batch_size=32",
     "data.val_fraction=0.2", "optim=sgd", "optim.optimizer.lr=0.01", "trainer.max_epochs=3",
     "callbacks=early_stopping"],
)  # fmt: skip
def test_teacher_key_changes_with_what_the_teacher_depends_on(override: str) -> None:
    assert cache_key(config(override), "teacher") != default_key("teacher")


def test_baseline_key_follows_the_student_not_the_teacher() -> None:
    base = default_key("baseline")
    assert cache_key(config("teacher=mlp"), "baseline") == base
    assert cache_key(config("kd.temperature=1"), "baseline") == base
    assert cache_key(config("student=cnn"), "baseline") != base
    assert cache_key(config("seed=2"), "baseline") != base
    # the student alone learns from the labels it has (data.num_labeled: 100 by default)
    assert cache_key(config("data.num_labeled=50"), "baseline") != base
    assert cache_key(config("data.num_labeled=null"), "baseline") != base


def test_teacher_key_follows_the_checkpoint_file(tmp_path: Path) -> None:
    ckpt = tmp_path / "teacher.pt"
    ckpt.write_bytes(b"x")
    first = cache_key(config(f"teacher.checkpoint={ckpt}"), "teacher")
    ckpt.write_bytes(b"retrained")  # same path, new weights: must not reuse the old entry
    assert cache_key(config(f"teacher.checkpoint={ckpt}"), "teacher") != first


def test_the_distilled_student_has_no_key() -> None:
    # it depends on kd.*, the one thing a sweep varies: nothing to share
    with pytest.raises(ValueError, match="no cache key is defined for stage 'distilled'"):
        key_config(config(), "distilled")


class Counter:
    """A stage that counts how often it really runs."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.calls, self.delay, self.fail = 0, delay, fail

    def __call__(self) -> tuple[torch.nn.Module, dict]:
        self.calls += 1
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("training diverged")
        torch.manual_seed(self.calls)
        return torch.nn.Linear(3, 2), {"test/acc": 0.5 + self.calls / 100}


def build() -> torch.nn.Module:
    # what a hit rebuilds before loading the stored state dict (the model config's class)
    return torch.nn.Linear(3, 2)


def run_stage(
    cfg: DictConfig,
    out: Path,
    compute: Callable[[], tuple[torch.nn.Module, dict]],
    name: str = "teacher",
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """One job's use of the cache: ``StageCache(cfg, out).stage(name, ...)``."""
    with StageCache(cfg, out) as cache:
        return cache.stage(name, compute, build)


def test_second_job_loads_what_the_first_stored(tmp_path: Path) -> None:
    cfg = config(cache_dir=tmp_path / "cache")
    stage = Counter()
    model1, metrics1 = run_stage(cfg, tmp_path / "job0", stage)
    model2, metrics2 = run_stage(cfg, tmp_path / "job1", stage)
    assert stage.calls == 1
    assert metrics1["cache"]["hit"] is False and metrics2["cache"]["hit"] is True
    assert metrics2["cache"]["trained_in"] == str(tmp_path / "job0")
    assert metrics2["cache"]["key"] == cache_key(cfg, "teacher")
    assert metrics2["test/acc"] == metrics1["test/acc"]
    # rebuilt from the config and loaded, not unpickled: a new module with the same weights
    assert model1 is not model2 and not model2.training
    assert torch.equal(model1.weight, model2.weight) and torch.equal(model1.bias, model2.bias)
    events = read_events(tmp_path / "cache")
    assert [(e["stage"], e["hit"]) for e in events] == [("teacher", False), ("teacher", True)]
    assert [e["run"] for e in events] == [str(tmp_path / "job0"), str(tmp_path / "job1")]


def test_changed_config_misses_and_disabled_cache_always_computes(tmp_path: Path) -> None:
    stage = Counter()
    run_stage(config(cache_dir=tmp_path), tmp_path / "a", stage)
    run_stage(config("seed=1", cache_dir=tmp_path), tmp_path / "b", stage)
    assert stage.calls == 2
    off = config("cache.enabled=false", cache_dir=tmp_path)
    _, metrics = run_stage(off, tmp_path / "c", stage)
    run_stage(off, tmp_path / "d", stage)
    assert stage.calls == 4 and metrics["cache"] == {"enabled": False}
    assert len(read_events(tmp_path)) == 2  # the disabled cache recorded nothing


def test_a_stage_without_a_key_is_always_computed(tmp_path: Path) -> None:
    cfg = config(cache_dir=tmp_path)
    stage = Counter()
    run_stage(cfg, tmp_path / "a", stage, name="distilled")
    _, metrics = run_stage(cfg, tmp_path / "b", stage, name="distilled")
    assert stage.calls == 2 and "cache" not in metrics
    assert not (tmp_path / "distilled").exists()


def test_tensors_are_keyed_by_their_inputs(tmp_path: Path) -> None:
    calls: list[str] = []

    def logits(tag: str) -> Callable[[], dict[str, torch.Tensor]]:
        def compute() -> dict[str, torch.Tensor]:
            calls.append(tag)
            return {"train": torch.randn(5, 3), "val": torch.randn(2, 3)}

        return compute

    cfg = config(cache_dir=tmp_path)
    with StageCache(cfg, tmp_path / "a") as cache:
        first, info1 = cache.tensors("logits", {"teacher_weights": "w1"}, logits("w1"))
    with StageCache(cfg, tmp_path / "b") as cache:
        again, info2 = cache.tensors("logits", {"teacher_weights": "w1"}, logits("w1 again"))
        cache.tensors("logits", {"teacher_weights": "w2"}, logits("w2"))
    assert calls == ["w1", "w2"]
    assert (info1["hit"], info2["hit"]) == (False, True)
    assert again.keys() == first.keys()
    assert all(torch.equal(again[k], first[k]) for k in first)
    off = config("cache.enabled=false", cache_dir=tmp_path)
    with StageCache(off, tmp_path / "c") as cache:
        _, info = cache.tensors("logits", {"teacher_weights": "w1"}, logits("off"))
    assert calls[-1] == "off" and info == {"enabled": False}


def test_a_failed_stage_stores_nothing_and_releases_the_lock(tmp_path: Path) -> None:
    # A lock left held would make the next job give up after 1 s instead of computing.
    cfg = config(cache_dir=tmp_path, lock_timeout_s=1)
    with pytest.raises(RuntimeError, match="diverged"):
        run_stage(cfg, tmp_path / "a", Counter(fail=True))
    assert not (tmp_path / "teacher" / cache_key(cfg, "teacher")).exists()
    stage = Counter()
    _, metrics = run_stage(cfg, tmp_path / "b", stage)
    assert stage.calls == 1 and metrics["cache"]["hit"] is False
    leftovers = [p.name for p in (tmp_path / "teacher").iterdir() if p.name.startswith(".")]
    assert leftovers == []  # no half-written temporary folder


def test_concurrent_jobs_train_once(tmp_path: Path) -> None:
    # Three jobs asking at once (threads here; processes lock the same way): one trains while
    # the others wait on the lock, then load the stored entry.
    cfg = config(cache_dir=tmp_path)
    stage = Counter(delay=0.5)
    hits: list[bool] = []
    errors: list[BaseException] = []

    def job(name: str) -> None:
        try:
            hits.append(run_stage(cfg, tmp_path / name, stage)[1]["cache"]["hit"])
        except BaseException as err:  # a thread's exception would otherwise vanish
            errors.append(err)

    threads = [threading.Thread(target=job, args=(f"job{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert stage.calls == 1
    assert sorted(hits) == [False, True, True]


def test_other_ranks_follow_rank_zeros_decision_without_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rank > 0 neither locks nor writes: it loads or computes as rank 0 decided for its job."""
    cfg = config(cache_dir=tmp_path / "cache", rank_wait_s=20)
    job = tmp_path / "job"
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("KDL_HYDRA_JOB", '{"token": "run-1"}')
    rank0 = StageCache(cfg, job)  # not closed yet: its decisions stay published
    first = Counter()
    rank0.stage("teacher", first, build)  # a miss, stored, decision "miss"

    monkeypatch.setenv("RANK", "1")
    again = Counter()
    # rank 0 decided "miss" for this run (token run-1): rank 1 computes alongside it, even
    # though an entry exists by now (rank 0 stored it) -- it must not switch to loading
    _, metrics = StageCache(cfg, job).stage("teacher", again, build)
    assert again.calls == 1 and metrics["cache"]["hit"] is False
    rank0.__exit__(None, None, None)
    # a rerun's rank 1 (new token) waits for its own rank 0's decision, then follows it
    monkeypatch.setenv("KDL_HYDRA_JOB", '{"token": "run-2"}')
    done: dict[str, Any] = {}
    waiter = threading.Thread(
        target=lambda: done.update(r=StageCache(cfg, job).stage("teacher", Counter(), build))
    )
    waiter.start()
    time.sleep(0.5)
    assert waiter.is_alive()  # still waiting: no decision for run-2 yet
    monkeypatch.setenv("RANK", "0")
    with StageCache(cfg, job) as cache:
        cache.stage("teacher", Counter(), build)  # rank 0 of run-2: a hit
        waiter.join(timeout=15)  # rank 1 reads the decision while rank 0's job still runs
    assert done["r"][1]["cache"]["hit"] is True
    assert torch.equal(done["r"][0].weight, first_weight(tmp_path / "cache", cfg))
    assert len(read_events(tmp_path / "cache")) == 2  # only the rank-0 calls were recorded
    assert not (job / ".cache_decisions").exists()  # rank 0 cleaned up at the end of its job


def test_a_rank_whose_key_differs_from_rank_zeros_stops_instead_of_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ranks that disagree on the key (other config or code) would wait forever: it says so."""
    job = tmp_path / "job"
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("KDL_HYDRA_JOB", '{"token": "run-1"}')
    with StageCache(config(cache_dir=tmp_path / "cache"), job) as rank0:
        rank0.stage("teacher", Counter(), build)
        monkeypatch.setenv("RANK", "1")
        other = config("seed=7", cache_dir=tmp_path / "cache", rank_wait_s=20)
        start = time.monotonic()
        with pytest.raises(CacheError, match="different configs or package code"):
            StageCache(other, job).stage("teacher", Counter(), build)
        assert time.monotonic() - start < 5


def first_weight(cache_dir: Path, cfg: DictConfig) -> torch.Tensor:
    tensors, _, _ = load_entry(cache_dir / "teacher" / cache_key(cfg, "teacher"))
    return tensors["weight"]


# --- damaged and hostile entries ----------------------------------------------------------------
def _rewrite_checksum(entry: Path) -> None:
    """Make meta.json agree with tensors.pt again: only the content check can catch it now."""
    meta = json.loads((entry / "meta.json").read_text())
    meta["files"]["tensors.pt"] = file_sha256(entry / "tensors.pt")
    meta["meta_sha256"] = _meta_digest(meta)
    (entry / "meta.json").write_text(json.dumps(meta))


def _other_model(entry: Path) -> None:
    torch.save(torch.nn.Linear(5, 4).state_dict(), entry / "tensors.pt")


def _other_model_checksum_fixed(entry: Path) -> None:
    _other_model(entry)
    _rewrite_checksum(entry)


def _truncated(entry: Path) -> None:
    blob = (entry / "tensors.pt").read_bytes()
    (entry / "tensors.pt").write_bytes(blob[: len(blob) // 2])


def _truncated_checksum_fixed(entry: Path) -> None:
    _truncated(entry)
    _rewrite_checksum(entry)


def _garbled_metrics(entry: Path) -> None:
    (entry / "metrics.json").write_text('{"test/acc": 0.5,')


def _no_meta(entry: Path) -> None:
    (entry / "meta.json").unlink()


def _edited_metrics(entry: Path) -> None:
    # valid JSON, a better-looking teacher: the checksum of metrics.json catches it
    metrics = json.loads((entry / "metrics.json").read_text())
    (entry / "metrics.json").write_text(json.dumps({**metrics, "test/acc": 0.999}))


def _edited_meta(entry: Path) -> None:
    meta = json.loads((entry / "meta.json").read_text())
    (entry / "meta.json").write_text(json.dumps({**meta, "trained_in": "elsewhere"}))


@pytest.mark.parametrize(
    "tamper",
    [_other_model, _other_model_checksum_fixed, _truncated, _truncated_checksum_fixed,
     _garbled_metrics, _no_meta, _edited_metrics, _edited_meta],
)  # fmt: skip
def test_a_damaged_entry_is_named_discarded_and_recomputed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, tamper: Callable[[Path], None]
) -> None:
    cfg = config(cache_dir=tmp_path)
    stage = Counter()
    _, stored = run_stage(cfg, tmp_path / "a", stage)
    entry = Path(stored["cache"]["entry"])
    tamper(entry)
    with caplog.at_level(logging.WARNING, logger="kdlightning.job.cache"):
        _, metrics = run_stage(cfg, tmp_path / "b", stage)
    assert f"Cache entry {entry} is damaged" in caplog.text
    assert stage.calls == 2 and metrics["cache"]["hit"] is False
    # the recomputed stage's metrics, not anything read from the damaged entry
    assert metrics["test/acc"] == pytest.approx(0.52)
    # the recomputed entry replaced the damaged one, and the next job loads it
    _, reloaded = run_stage(cfg, tmp_path / "c", stage)
    assert stage.calls == 2 and reloaded["cache"]["hit"] is True
    assert reloaded["test/acc"] == pytest.approx(0.52)


class WritesMarker:
    """Unpickling it writes a file: what a hostile tensors.pt could do instead."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (Path.write_text, (self.path, "code ran while loading the cache"))


# torch says a protocol-4 pickle may not load with weights_only: that refusal is the point
@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_a_malicious_pickle_in_the_cache_never_runs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, writer: str
) -> None:
    # The payload is live: plain unpickling does run it.
    canary = tmp_path / "canary"
    pickle.loads(pickle.dumps(WritesMarker(canary)))
    assert canary.is_file()

    cfg = config(cache_dir=tmp_path / "cache")
    stage = Counter()
    _, stored = run_stage(cfg, tmp_path / "a", stage)
    entry = Path(stored["cache"]["entry"])
    marker = tmp_path / "pwned"
    with open(entry / "tensors.pt", "wb") as f:
        if writer == "torch.save":
            torch.save({"weight": WritesMarker(marker)}, f)
        else:
            pickle.dump(WritesMarker(marker), f)
    _rewrite_checksum(entry)  # past the checksum: only weights_only loading stands in the way
    with caplog.at_level(logging.WARNING, logger="kdlightning.job.cache"):
        _, metrics = run_stage(cfg, tmp_path / "b", stage)
    assert not marker.exists()
    assert f"Cache entry {entry} is damaged" in caplog.text
    assert stage.calls == 2 and metrics["cache"]["hit"] is False


# --- an unusable cache folder -------------------------------------------------------------------
def test_a_job_waiting_on_a_held_lock_gives_up_after_the_timeout(tmp_path: Path) -> None:
    cfg = config(cache_dir=tmp_path, lock_timeout_s=0.3)
    lock_file = tmp_path / "teacher" / f"{cache_key(cfg, 'teacher')}.lock"
    lock_file.parent.mkdir()
    stage = Counter()
    with FileLock(str(lock_file)):  # another job computes this teacher (or died holding it)
        start = time.monotonic()
        with pytest.raises(CacheError, match="gave up after") as info:
            run_stage(cfg, tmp_path / "job", stage)
        waited = time.monotonic() - start
    assert str(lock_file) in str(info.value) and "cache.lock_timeout_s" in str(info.value)
    assert stage.calls == 0
    # it gave up after about cache.lock_timeout_s, not after some fixed polling interval
    assert 0.3 <= waited < 2.5, f"gave up after {waited:.1f} s with cache.lock_timeout_s=0.3"


def test_a_read_only_cache_folder_is_named(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    cache_dir.chmod(0o555)
    try:
        if os.access(cache_dir, os.W_OK):
            pytest.skip("chmod does not stop this user (root) from writing")
        stage = Counter()
        with pytest.raises(CacheError, match=str(cache_dir)) as info:
            run_stage(config(cache_dir=cache_dir), tmp_path / "job", stage)
        assert "cache.dir" in str(info.value) and stage.calls == 0
    finally:
        cache_dir.chmod(0o755)


def test_a_cache_folder_that_cannot_be_created_is_named(tmp_path: Path) -> None:
    # Fails for root too (unlike chmod): a file where a folder of the path should be.
    (tmp_path / "file").write_text("not a folder")
    cache_dir = tmp_path / "file" / "cache"
    stage = Counter()
    with pytest.raises(CacheError, match=str(cache_dir)) as info:
        run_stage(config(cache_dir=cache_dir), tmp_path / "job", stage)
    assert "cache.dir" in str(info.value) and "cache.enabled=false" in str(info.value)
    assert stage.calls == 0
