"""One Hydra job on several processes: Lightning's DDP re-launch made safe, and rank helpers.

    python -m kdlightning.train trainer=ddp trainer.devices=2                         # 1 job
    python -m kdlightning.train -m kd.temperature=2,4 trainer=ddp trainer.devices=2   # 2 jobs
    torchrun --nproc-per-node 2 -m kdlightning.train trainer=ddp trainer.devices=2 \
        hydra.run.dir=logs/runs/torchrun              # ranks started by torchrun, one run dir

Lightning's ``strategy=ddp`` (and ``fsdp``) starts ranks 1..N-1 by running the command line
again (``_SubprocessScriptLauncher``). Under Hydra it appends ``hydra.run.dir=<run.dir>``, which
is right for a single run but wrong under ``-m`` (Lightning issue 11617): each child sees
``-m kd.temperature=2,4`` and starts a multirun of its own, and ``hydra.run.dir`` is not the
job's directory. The fix has two halves, :func:`job_scope` and :func:`relaunch_safe`:

1. around each job, the launching process publishes the job's own overrides and output
   directory in ``$KDL_HYDRA_JOB`` (Lightning copies the environment into the children it
   starts); after the job it waits for those children, destroys the process group and removes
   the variables Lightning set (``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_PORT``, ...), so the
   next job of a sweep starts its own group instead of believing it is rank 0 of a dead one;
2. before Hydra reads the command line, a process that Lightning started for such a job
   (``LOCAL_RANK`` and ``$KDL_HYDRA_JOB`` set) replaces its arguments with that job's overrides,
   ``hydra.run.dir=<job dir>`` and ``hydra.output_subdir=null``: a single run of exactly its
   parent's job, writing into the parent's directory.

Processes started by someone else (torchrun, SLURM ``srun``, submitit) are left alone: each
composes the config itself, so all ranks must be told the directory. Hydra multiruns through
submitit share the sweep directory by construction (Hydra pickles the resolved timestamp);
torchrun ranks get ``hydra.run.dir=...`` (or ``hydra.sweep.dir=...`` under ``-m``) on the
command line, and without it they stop at once (``WORLD_SIZE`` > 1) rather than each writing
into a timestamped directory of its own. We chose an explicit directory over having rank 0
broadcast its directory: Hydra creates the run directory and its log file before any process
group exists, so a late broadcast would still leave a stray directory per rank. A plain ``srun``
of several tasks sets no ``WORLD_SIZE``: pass ``hydra.run.dir`` there too.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import lightning as L
import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities import rank_zero_only

# The re-launch half lives in kdlightning.job.relaunch (no torch: the command-line entry wraps
# its @hydra.main function with it before the slow imports); its names stay importable here.
from kdlightning.job.relaunch import (  # noqa: F401
    JOB_ENV,
    _adopt_parent_job,
    _config_flags,
    relaunch_safe,
)

log = logging.getLogger(__name__)

# What Lightning's launcher and process-group set-up write into os.environ of the launching
# process; left behind, they make the next job of a sweep skip launching its children.
_LAUNCH_ENV = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

# How long the end of a job waits for children that are past their last collective operation.
_CHILD_EXIT_TIMEOUT_S = 300


def is_global_zero() -> bool:
    """True on the process that writes results: global rank 0, or the only process."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    # Before the process group exists, read the launcher's variables now: Lightning's
    # rank_zero_only.rank was fixed when it was imported, before _export_submitit_local_env
    # (or anything else) exported the rank. The global rank first, then the per-node one.
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if key in os.environ:
            return int(os.environ[key]) == 0
    return rank_zero_only.rank == 0


def _external_world_size() -> int:
    """Processes started outside Lightning for this run (torchrun and the like), else 1."""
    return int(os.environ.get("WORLD_SIZE", "1"))


# Variables that every process of one externally launched run shares (torchrun, SLURM, submitit).
_RUN_ID_ENV = ("TORCHELASTIC_RUN_ID", "SLURM_JOB_ID", "SLURM_STEP_ID", "SUBMITIT_LOCAL_JOB_ID",
               "MASTER_ADDR", "MASTER_PORT")  # fmt: skip


def job_token() -> str:
    """An id that all processes of the current job share and a rerun of it does not.

    Processes that Lightning starts inherit the token ``job_scope`` put in ``$KDL_HYDRA_JOB``;
    processes a launcher started (torchrun, SLURM, submitit) derive it from that launcher's
    variables.
    """
    raw = os.environ.get(JOB_ENV)
    if raw and "token" in (job := json.loads(raw)):
        return str(job["token"])
    return "|".join(os.environ.get(k, "") for k in _RUN_ID_ENV)


def _export_submitit_local_env() -> None:
    """Under ``hydra/launcher=submitit_local`` with several tasks, say who is who to Lightning.

    SLURM tasks are recognized by Lightning (``SLURMEnvironment``); submitit's local executor
    only sets ``SUBMITIT_LOCAL_*``, so translate them with submitit's own helper into the
    torch variables (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT) that Lightning reads.
    """
    if os.environ.get("SUBMITIT_EXECUTOR") != "local" or "LOCAL_RANK" in os.environ:
        return
    if int(os.environ.get("SUBMITIT_LOCAL_NTASKS", "1")) < 2:
        return
    from submitit.helpers import TorchDistributedEnvironment

    # Keep every GPU visible: Lightning picks the rank's device from LOCAL_RANK itself.
    env = TorchDistributedEnvironment()
    env.export(set_cuda_visible_devices=False)
    # Lightning read the rank when it was imported (as 0): correct it for rank-zero-only work.
    rank_zero_only.rank = env.rank


def _check_external_run_dir() -> None:
    """All ranks started by torchrun must be given one directory: refuse to guess one each."""
    # Our own DDP children get it from $KDL_HYDRA_JOB; submitit tasks share the sweep dir.
    if JOB_ENV in os.environ or "SUBMITIT_EXECUTOR" in os.environ or _external_world_size() < 2:
        return
    hc = HydraConfig.get()
    key = "hydra.run.dir" if hc.mode == RunMode.RUN else "hydra.sweep.dir"
    if not any(o.startswith(f"{key}=") for o in hc.overrides.hydra):
        raise RuntimeError(
            f"{_external_world_size()} processes were started for this run (torchrun or the "
            f"like) and each would time-stamp its own output directory: pass the same "
            f"{key}=<dir> to all of them, e.g. {key}=logs/runs/my_run"
        )


@contextmanager
def job_scope() -> Iterator[list[L.Trainer]]:
    """Around one Hydra job: publish it for Lightning's children, clean up after them.

    Yields the list the job appends its Trainers to; at the end, the DDP children those
    Trainers started are waited for (or killed, when the job failed).
    """
    _export_submitit_local_env()
    _check_external_run_dir()
    launching = "LOCAL_RANK" not in os.environ  # Lightning may start children from here
    saved = {k: os.environ.get(k) for k in (*_LAUNCH_ENV, JOB_ENV)}
    if launching:
        hc = HydraConfig.get()
        job = {"overrides": list(hc.overrides.task), "run_dir": hc.runtime.output_dir}
        # token: names this run of this job, so its ranks can tell its files from a rerun's
        token = uuid.uuid4().hex
        os.environ[JOB_ENV] = json.dumps({**job, "job_name": hc.job.name, "token": token})
    trainers: list[L.Trainer] = []
    finished = False
    try:
        yield trainers
        finished = True
    finally:
        procs = _children(trainers)
        if not finished:  # rank 0 failed: its children would wait for it in a collective
            kill_children(trainers)
        failed = [p.args for p in procs if _wait(p) != 0]
        if launching:
            if dist.is_available() and dist.is_initialized():
                dist.destroy_process_group()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            rank_zero_only.rank = 0
        # Only when this process succeeded: after its own error (a DivergenceError, a signal) the
        # children's failure is a consequence, and raising it here would replace the cause.
        if failed and finished:
            raise RuntimeError(f"{len(failed)} DDP child process(es) failed: {failed}")
        if failed:
            log.info("%d DDP child process(es) ended with this job's error", len(failed))


def _children(trainers: list[L.Trainer]) -> list[subprocess.Popen]:
    # strategy=ddp/fsdp: the Popen children of Lightning's script launcher (ddp_spawn's
    # multiprocessing workers are joined by Lightning after each fit/validate/test).
    launched = [getattr(t.strategy.launcher, "procs", []) for t in trainers]
    return [p for ps in launched for p in ps if isinstance(p, subprocess.Popen)]


def kill_children(trainers: list[L.Trainer]) -> None:
    """SIGKILL the DDP children the job's Trainers started (they would wait in a collective for
    a parent that is gone)."""
    for p in _children(trainers):
        if p.poll() is None:
            p.kill()


def _wait(proc: subprocess.Popen) -> int:
    try:
        return proc.wait(timeout=_CHILD_EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        log.error("DDP child %d still runs after the job ended; killing it", proc.pid)
        proc.kill()
        return proc.wait()
