"""A signal always ends a DDP job: on 2 CPU processes (gloo), through the real CLI.

- SIGTERM to the parent mid-training: exit 143 and failed.json naming SIGTERM, children gone
  (Lightning's own SIGTERM handler broadcast inside the handler and deadlocked: issue 19);
- SIGINT to the whole process group: exit 130;
- a rank blocked in a collective (its peer is stopped) still ends on SIGTERM, after the grace
  period, with failed.json (Python handlers cannot run while gloo blocks: the watchdog acts);
- a diverging DDP run ends with the DivergenceError line, not "DDP child process(es) failed".
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from conftest import read_json, start_train, wait_for_path

pytestmark = pytest.mark.slow

DDP_CPU = ["trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu",
           "trainer.precision=32-true"]  # fmt: skip


def _start(tmp_path: Path, *overrides: str) -> subprocess.Popen:
    return start_train(*DDP_CPU, f"paths.log_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}",
                       "cache.enabled=false", "baseline=false", *overrides)  # fmt: skip


def _finish(proc: subprocess.Popen, timeout: float) -> str:
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out = proc.communicate()[0]
        pytest.fail(f"the job did not end within {timeout} s of the signal:\n{out[-3000:]}")


def _no_survivors(pgid: int) -> None:
    time.sleep(1.0)
    # zombies are dead (exit status not yet collected: no init process reaps them here)
    alive = [p for p in psutil.process_iter(["pid", "status"])
             if _pgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE]  # fmt: skip
    for p in alive:
        p.kill()
    assert not alive, f"processes of the job still running: {[p.pid for p in alive]}"


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


@pytest.mark.parametrize(("sig", "whom"), [(signal.SIGTERM, "parent"), (signal.SIGINT, "group")])
def test_a_signal_mid_training_ends_the_ddp_job_with_its_status(
    tmp_path: Path, sig: int, whom: str
) -> None:
    proc = _start(tmp_path, "trainer.max_epochs=300")
    wait_for_path(tmp_path / "run" / "teacher" / "checkpoints" / "last.ckpt", proc)
    time.sleep(3.0)
    if whom == "parent":
        os.kill(proc.pid, sig)
    else:
        os.killpg(proc.pid, sig)
    out = _finish(proc, timeout=90)
    assert proc.returncode == 128 + sig, out[-3000:]
    assert read_json(tmp_path / "run" / "failed.json")["signal"] == signal.Signals(sig).name
    _no_survivors(proc.pid)


def test_sigterm_ends_a_rank_blocked_in_a_collective(tmp_path: Path) -> None:
    proc = _start(tmp_path, "trainer.max_epochs=300", "distributed.signal_grace_s=3")
    wait_for_path(tmp_path / "run" / "teacher" / "checkpoints" / "last.ckpt", proc)
    time.sleep(3.0)
    children = psutil.Process(proc.pid).children(recursive=True)
    assert children, "no DDP child process"
    for child in children:
        child.suspend()  # rank 1 stops answering: rank 0 soon waits in a collective for it
    time.sleep(3.0)
    os.kill(proc.pid, signal.SIGTERM)
    out = _finish(proc, timeout=60)
    assert proc.returncode == 143, out[-3000:]
    failed = read_json(tmp_path / "run" / "failed.json")
    assert failed["signal"] == "SIGTERM"
    _no_survivors(proc.pid)


def test_a_diverging_ddp_run_says_so_in_one_error(tmp_path: Path) -> None:
    proc = _start(tmp_path, "trainer.max_epochs=3", "optim.optimizer.lr=1e12", "debug=fast")
    out = _finish(proc, timeout=240)
    assert proc.returncode != 0
    assert "DivergenceError" in out and "loss became" in out, out[-3000:]
    assert "DDP child process(es) failed" not in out, out[-3000:]
