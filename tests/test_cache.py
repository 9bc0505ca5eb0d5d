"""kdlightning.cache: what the key depends on, hits and misses, failures and concurrent jobs."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from kdlightning.cache import cache_key, cached_stage, read_events


def config(*overrides: str, cache_dir: Path | None = None) -> DictConfig:
    with initialize_config_dir(str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    if cache_dir is not None:
        with open_dict(cfg):
            cfg.cache.dir = str(cache_dir)
    return cfg


@pytest.mark.parametrize(
    "override",
    ["kd.temperature=8", "kd.alpha=0.1", "logger=tensorboard", "benchmark.repeats=7",
     "trainer.enable_progress_bar=false", "student=cnn", "baseline=false"],
)  # fmt: skip
def test_teacher_key_ignores_what_the_teacher_does_not_depend_on(override: str) -> None:
    assert cache_key(config(override), "teacher") == cache_key(config(), "teacher")


@pytest.mark.parametrize(
    "override",
    ["teacher=mlp", "teacher.model.hidden=128", "seed=1", "data.batch_size=32",
     "data.val_fraction=0.2", "optim=sgd", "optim.optimizer.lr=0.01", "trainer.max_epochs=3",
     "callbacks=early_stopping"],
)  # fmt: skip
def test_teacher_key_changes_with_what_the_teacher_depends_on(override: str) -> None:
    assert cache_key(config(override), "teacher") != cache_key(config(), "teacher")


def test_baseline_key_follows_the_student_not_the_teacher() -> None:
    base = cache_key(config(), "baseline")
    assert cache_key(config("teacher=mlp"), "baseline") == base
    assert cache_key(config("kd.temperature=1"), "baseline") == base
    assert cache_key(config("student=cnn"), "baseline") != base
    assert cache_key(config("seed=2"), "baseline") != base


def test_teacher_key_follows_the_checkpoint_file(tmp_path: Path) -> None:
    ckpt = tmp_path / "teacher.pt"
    ckpt.write_bytes(b"x")
    first = cache_key(config(f"teacher.checkpoint={ckpt}"), "teacher")
    ckpt.write_bytes(b"retrained")  # same path, new weights: must not reuse the old entry
    assert cache_key(config(f"teacher.checkpoint={ckpt}"), "teacher") != first


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


def test_second_job_loads_what_the_first_stored(tmp_path: Path) -> None:
    cfg = config(cache_dir=tmp_path / "cache")
    stage = Counter()
    model1, metrics1 = cached_stage(cfg, "teacher", stage, tmp_path / "job0")
    model2, metrics2 = cached_stage(cfg, "teacher", stage, tmp_path / "job1")
    assert stage.calls == 1
    assert metrics1["cache"]["hit"] is False and metrics2["cache"]["hit"] is True
    assert metrics2["cache"]["trained_in"] == str(tmp_path / "job0")
    assert metrics2["test/acc"] == metrics1["test/acc"]
    assert torch.equal(model1.weight, model2.weight) and model1 is not model2
    events = read_events(tmp_path / "cache")
    assert [(e["stage"], e["hit"]) for e in events] == [("teacher", False), ("teacher", True)]


def test_changed_config_misses_and_disabled_cache_always_computes(tmp_path: Path) -> None:
    stage = Counter()
    cached_stage(config(cache_dir=tmp_path), "teacher", stage, tmp_path / "a")
    cached_stage(config("seed=1", cache_dir=tmp_path), "teacher", stage, tmp_path / "b")
    assert stage.calls == 2
    off = config("cache.enabled=false", cache_dir=tmp_path)
    _, metrics = cached_stage(off, "teacher", stage, tmp_path / "c")
    cached_stage(off, "teacher", stage, tmp_path / "d")
    assert stage.calls == 4 and metrics["cache"] == {"enabled": False}


def test_a_failed_stage_stores_nothing_and_releases_the_lock(tmp_path: Path) -> None:
    cfg = config(cache_dir=tmp_path)
    with pytest.raises(RuntimeError, match="diverged"):
        cached_stage(cfg, "teacher", Counter(fail=True), tmp_path / "a")
    stage = Counter()
    _, metrics = cached_stage(cfg, "teacher", stage, tmp_path / "b")
    assert stage.calls == 1 and metrics["cache"]["hit"] is False
    leftovers = [p.name for p in (tmp_path / "teacher").iterdir() if p.name.startswith(".")]
    assert leftovers == []  # no half-written temporary folder


def test_concurrent_jobs_train_once(tmp_path: Path) -> None:
    # Two jobs asking at once (threads here; processes lock the same way): one trains while
    # the other waits on the lock, then loads the stored entry.
    cfg = config(cache_dir=tmp_path)
    stage = Counter(delay=0.5)
    hits: list[bool] = []

    def job(name: str) -> None:
        hits.append(cached_stage(cfg, "teacher", stage, tmp_path / name)[1]["cache"]["hit"])

    threads = [threading.Thread(target=job, args=(f"job{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stage.calls == 1
    assert sorted(hits) == [False, True, True]


def test_other_ranks_follow_rank_zeros_decision_without_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rank > 0 neither locks nor writes: it loads or computes as rank 0 decided for its job."""
    cfg = config(cache_dir=tmp_path / "cache")
    job = tmp_path / "job"
    monkeypatch.setenv("KDL_HYDRA_JOB", '{"token": "run-1"}')
    first = Counter()
    cached_stage(cfg, "teacher", first, job)  # rank 0: a miss, stored, decision "miss"

    monkeypatch.setenv("RANK", "1")
    again = Counter()
    # rank 0 decided "miss" for this run (token run-1): rank 1 computes alongside it, even
    # though an entry exists by now (rank 0 stored it) -- it must not switch to loading
    _, metrics = cached_stage(cfg, "teacher", again, job)
    assert again.calls == 1 and metrics["cache"]["hit"] is False
    # a rerun's rank 1 (new token) waits for its own rank 0's decision, then follows it
    monkeypatch.setenv("KDL_HYDRA_JOB", '{"token": "run-2"}')
    done: dict = {}
    waiter = threading.Thread(
        target=lambda: done.update(r=cached_stage(cfg, "teacher", Counter(), job))
    )
    waiter.start()
    time.sleep(0.5)
    assert waiter.is_alive()  # still waiting: no decision for run-2 yet
    monkeypatch.setenv("RANK", "0")
    cached_stage(cfg, "teacher", Counter(), job)  # rank 0 of run-2: a hit
    waiter.join(timeout=10)
    assert done["r"][1]["cache"]["hit"] is True
    assert len(read_events(tmp_path / "cache")) == 2  # only the rank-0 calls were recorded
