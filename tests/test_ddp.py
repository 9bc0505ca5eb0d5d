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
# per-process), plain SGD. Only the test split is padded by one repeated sample on 2 processes.
EQUAL = [
    "teacher=mlp",
    "teacher.model.dropout=0.0",
    "student=mlp",
    "data.test_fraction=0.1505",
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


def test_ddp_two_processes_match_one_process(tmp_path: Path) -> None:
    # The reference runs in this process: only the DDP run needs the command line.
    _, one = run_job(tmp_path, *EQUAL, f"data.batch_size={TRAIN_SIZE}", name="one")
    two = tmp_path / "two"
    run_module(
        "kdlightning.train",
        *EQUAL,
        *DDP_CPU,
        f"data.batch_size={TRAIN_SIZE // 2}",
        f"hydra.run.dir={two}",
        f"paths.log_dir={tmp_path / 'logs'}",
        timeout=TIMEOUT,
    )
    # Rank 0 alone wrote the outputs, once, into the one run directory; rank 1 logged there.
    assert _only(sorted(two.rglob("results.json"))) == two / "results.json"
    assert _only(sorted(two.rglob("student.pt"))) == two / "student.pt"
    _only(sorted((two / "distilled").rglob("*.ckpt")))
    assert (two / "train_rank1.log").is_file()
    assert not list(tmp_path.rglob("runs")), "a process made its own timestamped run dir"

    s1 = torch.load(one / "student.pt", weights_only=True)
    s2 = torch.load(two / "student.pt", weights_only=True)
    assert s1.keys() == s2.keys()
    for key in s1:
        torch.testing.assert_close(s2[key], s1[key], atol=ATOL, rtol=0, msg=key)

    r1, r2 = read_json(one / "results.json"), read_json(two / "results.json")
    for role in ("teacher", "distilled"):
        for key, value in r1[role].items():
            # val/ metrics are reduced over both ranks' shards (torchmetrics, sync_dist):
            # rank 0 alone would see half of the validation set and report other values.
            if key.startswith("val/"):
                assert r2[role][key] == pytest.approx(value, abs=ATOL), (role, key)
    assert r2["distilled"]["val/acc"] > 0.5  # it did learn: not two matching failures


def test_multirun_with_ddp_runs_each_job_once_on_two_processes(tmp_path: Path) -> None:
    proc = run_module(
        "kdlightning.train",
        "-m",
        "kd.temperature=2,4",
        *DDP_CPU,
        *QUICK,
        f"paths.log_dir={tmp_path}",
        timeout=TIMEOUT,
    )
    out = proc.stdout + proc.stderr
    # A DDP child that re-read `-m kd.temperature=2,4` would start a sweep of its own.
    assert out.count("Launching 2 jobs") == 1, out[-3000:]
    # the sweep dir and the teacher/baseline cache it shares (kdlightning.cache), nothing else
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "multiruns"], "stray dirs"
    sweep = _only(list((tmp_path / "multiruns").iterdir()))
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [j.name for j in jobs] == ["0", "1"]
    for job, temperature in zip(jobs, (2, 4), strict=True):
        assert _only(sorted(job.rglob("results.json"))) == job / "results.json"
        assert read_json(job / "results.json")["summary"]["temperature"] == temperature
        # rank 1 of this job ran exactly this job, in this directory, once
        rank1 = (job / "train_rank1.log").read_text()
        assert rank1.count(f"Distilling the student (T={temperature},") == 1, rank1


def test_submitit_local_multirun_two_jobs_of_two_tasks(tmp_path: Path) -> None:
    run_module(
        "kdlightning.train",
        "-m",
        "hydra/launcher=local",
        "kd.temperature=2,4",
        *DDP_CPU,
        *QUICK,
        f"paths.log_dir={tmp_path}",
        timeout=TIMEOUT,
    )
    sweep = _only(list((tmp_path / "multiruns").iterdir()))
    results = sorted(sweep.glob("*/results.json"))
    assert [p.parent.name for p in results] == ["0", "1"]
    assert [read_json(p)["summary"]["temperature"] for p in results] == [2, 4]
    # each job ran as 2 submitit tasks that Lightning joined into one process group
    logs = "".join(p.read_text() for p in sweep.glob(".submitit/*/*_log.err"))
    assert logs.count("Starting with 2 processes") == 2, logs[-3000:]


def test_torchrun_two_processes_share_the_given_run_dir(tmp_path: Path) -> None:
    # (Without hydra.run.dir the ranks are refused up front: test_distributed.py checks that.)
    torchrun = ["torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    run_dir = tmp_path / "run"
    proc = run_module(
        *torchrun, "-m", "kdlightning.train", *DDP_CPU, *QUICK, f"hydra.run.dir={run_dir}",
        f"paths.log_dir={tmp_path / 'logs'}", timeout=TIMEOUT,
    )  # fmt: skip
    # both ranks joined one process group rather than each training alone
    assert "MEMBER: 2/2" in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]
    assert _only(sorted(tmp_path.rglob("results.json"))) == run_dir / "results.json"
    results = read_json(run_dir / "results.json")
    # the teacher learned (10 classes: chance is 0.1), on the two ranks together
    assert results["teacher"]["val/acc"] > 0.2, results["teacher"]
    teacher_acc = results["distilled"]["test/teacher_acc"]  # from the cached logits, by index
    assert teacher_acc == pytest.approx(results["teacher"]["test/acc"], abs=1e-6)
