"""The main job on 2 CPU processes (gloo), through the real CLI in a subprocess.

Lightning's ``strategy=ddp`` re-runs the command line for rank 1, so these runs cannot happen
inside pytest's own process (the one-process reference run does). Each test keeps to a few
batches: 2 processes on a busy CPU. What needs no second process (the job's environment, the
torchrun guard, children's clean-up) is checked in test_distributed.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import read_json, run_job, run_module

pytestmark = pytest.mark.slow

# DDP on the CPU with the gloo backend; trainer=ddp itself targets GPUs in bf16.
DDP_CPU = [
    "trainer=ddp",
    "trainer.devices=2",
    "trainer.accelerator=cpu",
    "trainer.precision=32-true",
]
QUICK = ["debug=fast", "baseline=false"]

# The same computation on 1 and on 2 processes: full-batch steps (the global batch is the whole
# training set, so neither the loader's shuffle nor the DistributedSampler's changes the mean
# gradient), an even training set so the sampler pads nothing (1256 train / 270 val / 271 test
# with test_fraction=0.1505), MLP teacher and student without BatchNorm or dropout (nothing
# per-process), plain SGD. The test split is odd (271): Lightning's DistributedSampler would pad
# it with a repeated sample; kdlightning's evaluation sampler counts every sample exactly once.
EQUAL = [
    "teacher=mlp",
    "teacher.model.dropout=0.0",
    "student=mlp",
    "data.test_fraction=0.1505",
    # every label: with a transfer set each rank averages the cross-entropy over its own
    # labeled samples, which is not the one-process mean over all of them
    "data.num_labeled=null",
    "trainer.max_epochs=12",
    "optim=sgd",
    "optim.optimizer.lr=0.2",
    *QUICK,
]
TRAIN_SIZE = 1256
# Each run takes well under a minute; a broken re-launch hangs instead (a child that starts a
# sweep of its own leaves its parent waiting): fail after minutes, not after pytest's 10.
TIMEOUT = 300
# Float32 sums in another order (two half-batch means averaged by all-reduce) through 12 SGD
# steps for the teacher, then 12 for the student: measured max |difference| 1.2e-7 for weights
# and val metrics. (AdamW magnifies such rounding where gradients are near zero: 2e-4 there.)
ATOL = 1e-5


def _only(paths: list[Path]) -> Path:
    assert len(paths) == 1, paths
    return paths[0]


def test_ddp_multirun_runs_each_job_once_and_matches_one_process(tmp_path: Path) -> None:
    """Lightning's re-launch under ``-m`` (Lightning issue 11617), and DDP's arithmetic.

    One sweep of two jobs on two processes each: every child runs its parent's job, once,
    in that job's directory; the second job of the sweep starts a process group of its own;
    rank 1 follows rank 0's cache decision (job 1 reuses job 0's teacher); and job 0 computes
    what one process computes (the reference run, in this process).
    """
    _, one = run_job(
        tmp_path, *EQUAL, "kd.temperature=2", f"data.batch_size={TRAIN_SIZE}", name="one",
        log_dir=tmp_path / "one-logs",
    )  # fmt: skip
    logs = tmp_path / "logs"
    proc = run_module(
        "kdlightning.train", "-m", "kd.temperature=2,4", *EQUAL, *DDP_CPU,
        f"data.batch_size={TRAIN_SIZE // 2}", f"paths.log_dir={logs}", timeout=TIMEOUT,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    # A DDP child that re-read `-m kd.temperature=2,4` would start a sweep of its own.
    assert out.count("Launching 2 jobs") == 1, out[-3000:]
    # the sweep dir and the teacher/baseline cache it shares (kdlightning.job.cache), nothing else:
    # no process made a timestamped run dir of its own
    assert sorted(p.name for p in logs.iterdir()) == ["cache", "distill"], "stray dirs"
    assert [p.name for p in (logs / "distill").iterdir()] == ["multiruns"], "stray dirs"
    sweep = _only(list((logs / "distill" / "multiruns").iterdir()))
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [j.name for j in jobs] == ["0", "1"]
    for job, temperature in zip(jobs, (2, 4), strict=True):
        # Rank 0 alone wrote the outputs, once, into the job's directory; rank 1 logged there.
        assert _only(sorted(job.rglob("results.json"))) == job / "results.json"
        assert _only(sorted(job.rglob("student.pt"))) == job / "student.pt"
        # best and last (resume), each written once: no best-v1.ckpt beside them
        ckpts = sorted(p.name for p in job.rglob("*.ckpt") if "distilled" in p.parts)
        assert ckpts == ["best.ckpt", "last.ckpt"]
        assert read_json(job / "results.json")["summary"]["temperature"] == temperature
        # rank 1 of this job ran exactly this job, in this directory, once
        rank1 = (job / "train_rank1.log").read_text()
        assert rank1.count(f"Distilling the student (kd=kd, T={temperature},") == 1, rank1
    # job 1 loaded job 0's teacher, and so did its rank 1 (it trained nothing alone)
    assert read_json(jobs[1] / "results.json")["teacher"]["cache"]["hit"] is True
    assert "Training the teacher" not in (jobs[1] / "train_rank1.log").read_text()

    two = jobs[0]
    s1 = torch.load(one / "student.pt", weights_only=True)
    s2 = torch.load(two / "student.pt", weights_only=True)
    assert s1.keys() == s2.keys()
    for key in s1:
        torch.testing.assert_close(s2[key], s1[key], atol=ATOL, rtol=0, msg=key)

    r1, r2 = read_json(one / "results.json"), read_json(two / "results.json")
    for role in ("teacher", "distilled"):
        compared = [key for key in r1[role] if key.startswith(("val/", "test/"))]
        assert {"val/acc", "test/acc"} <= set(compared)
        for key in compared:
            # val/ and test/ metrics are reduced over both ranks' shards (torchmetrics,
            # sync_dist): rank 0 alone would see half of each set, and a padded sampler would
            # count one test image twice.
            assert r2[role][key] == pytest.approx(r1[role][key], abs=ATOL), (role, key)
    assert r2["distilled"]["val/acc"] > 0.5  # it did learn: not two matching failures


def test_submitit_local_multirun_job_of_two_tasks(tmp_path: Path) -> None:
    # One job: what kdlightning adds to submitit (its tasks' ranks handed to Lightning, the
    # sweep dir shared) shows in one; more jobs would only start more processes.
    run_module(
        "kdlightning.train",
        "-m",
        "hydra/launcher=local",
        "kd.temperature=2",
        *DDP_CPU,
        *QUICK,
        f"paths.log_dir={tmp_path}",
        timeout=TIMEOUT,
    )
    sweep = _only(list((tmp_path / "distill" / "multiruns").iterdir()))
    results = sorted(sweep.rglob("results.json"))
    assert results == [sweep / "0" / "results.json"]  # rank 0 alone wrote, in the job's dir
    assert read_json(results[0])["summary"]["temperature"] == 2
    # the job ran as 2 submitit tasks that Lightning joined into one process group
    logs = "".join(p.read_text() for p in sweep.glob(".submitit/*/*_log.err"))
    assert logs.count("Starting with 2 processes") == 1, logs[-3000:]
    assert logs.count("MEMBER: 2/2") == 1, logs[-3000:]


def test_torchrun_two_processes_share_the_given_run_dir(tmp_path: Path) -> None:
    """torchrun's two ranks join one process group and write one run folder, the given one.

    The same run also covers cached teacher logits under DDP sharding: with a transfer set
    (data.num_labeled=60) each rank's DistributedSampler shard looks its rows up by sample index,
    and kd.verify_cached_logits=true recomputes the teacher's outputs and fails the job on the
    first misaligned row. (Without hydra.run.dir the ranks are refused up front:
    test_distributed.py checks that.)
    """
    torchrun = ["torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    run_dir = tmp_path / "run"
    cached = ["kd.teacher_logits=cached", "kd.verify_cached_logits=true", "data.num_labeled=60"]
    proc = run_module(
        *torchrun, "-m", "kdlightning.train", *DDP_CPU, *QUICK, *cached,
        f"hydra.run.dir={run_dir}", f"paths.log_dir={tmp_path / 'logs'}", timeout=TIMEOUT,
    )  # fmt: skip
    # both ranks joined one process group rather than each training alone
    assert "MEMBER: 2/2" in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]
    assert _only(sorted(tmp_path.rglob("results.json"))) == run_dir / "results.json"
    results = read_json(run_dir / "results.json")
    # the teacher learned (10 classes: chance is 0.1), on the two ranks together
    assert results["teacher"]["val/acc"] > 0.2, results["teacher"]
    teacher_acc = results["distilled"]["test/teacher_acc"]  # from the cached logits, by index
    assert teacher_acc == pytest.approx(results["teacher"]["test/acc"], abs=1e-6)
    # the student learned from the stored logits, verified row by row on both ranks
    assert results["distilled"]["teacher_logits"]["mode"] == "cached"
    assert results["summary"]["num_labeled"] == 60


def test_every_ddp_configuration_a_user_reaches_runs_to_the_end(tmp_path: Path) -> None:
    """The DDP matrix, progress bar on (debug=fast keeps it): a feature method (kd=at) and deep
    mutual learning (kd=dml), each with W&B (offline) and early stopping. Each once hung or could
    hang in a collective one rank never reached. baseline=false: the baseline trains as the
    teacher does (test_user_commands.py runs all three stages). The language-model job's
    collectives run on 2 processes, progress bar on, in
    test_lm_job.py::test_ddp_on_two_cpu_processes (forked: the stages are the same code for both
    tasks, and the CLI's re-launch is tested here)."""
    logs = tmp_path / "logs"
    run_module(
        "kdlightning.train", "-m", "kd=at,dml", "student=cnn", "logger=wandb",
        "callbacks=early_stopping", *DDP_CPU, *QUICK, f"paths.log_dir={logs}",
        timeout=TIMEOUT,
    )  # fmt: skip
    sweep = _only(list((logs / "distill" / "multiruns").iterdir()))
    for job, method in (("0", "at"), ("1", "dml")):
        assert read_json(sweep / job / "results.json")["summary"]["method"] == method
