"""The command line: ``python -m kdlightning.train`` / ``kdl-train`` (the job: :mod:`.run`).

Hydra composes the config; then, in this order:

1. the checks that need only the config (:mod:`kdlightning.job.precheck`), before torch and
   Lightning are imported: ``kd.temperature=abc`` or ``+kd.temprature=4`` answers in about a
   second, and so does tab completion, which imports nothing of the job;
2. the slow imports, then the checks that need them: every key of a ``_target_`` node is an
   argument of its target (:func:`kdlightning.job.keys.check_target_keys`) and the data
   module finds its files (its ``prepare_data``), before anything is trained or logged;
3. the job (:func:`kdlightning.job.run.job`), which checks the values' meaning first.

A user's mistake ends the command with one line ``error: <what>; <fix>`` and status 2, a bug
with its traceback and status 1 (:mod:`kdlightning.job.errors`; ``HYDRA_FULL_ERROR=1`` prints
the traceback of a user's mistake too). Inside a multirun a failed job is logged and the sweep
goes on with the others (Hydra's basic launcher); the command then ends with the first failure
(the Optuna sweeper, ``hparams_search=kd_optuna``, tells Optuna the trial failed and ends with
an error only when every trial failed).
Hydra itself would print its own message and exit 1 for both kinds: :func:`main` lets Hydra
re-raise (it sets ``HYDRA_FULL_ERROR=1`` for it, see :data:`~kdlightning.job.errors.FORCED_ENV`)
and tells them apart here.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from kdlightning.job import errors, progress
from kdlightning.job.claim import claim_explicit_run_dir
from kdlightning.job.conf_dir import config_dir
from kdlightning.job.keys import check_target_keys
from kdlightning.job.precheck import precheck
from kdlightning.job.relaunch import relaunch_safe
from kdlightning.job.resolvers import register_resolvers

log = logging.getLogger(__name__)

register_resolvers()  # conf/hydra/default.yaml names run dirs with ${kdl.run_id:}


def _local_rank_zero() -> bool:
    # the process that checks files and writes failed.json; Lightning's children skip it
    return os.environ.get("LOCAL_RANK", "0") == "0"


def check_data_files(cfg: DictConfig) -> None:
    """The data module's ``prepare_data`` (it checks, or downloads, its files) before any stage
    starts, so that ``data=mnist`` without its files stops before "Training the teacher".
    Lightning calls it again at each fit: it is cheap once the files are there."""
    from hydra.utils import instantiate

    if not _local_rank_zero():
        return
    try:
        dm = instantiate(cfg.data)  # constructors read no data
    except Exception:  # a bad data value: the job's own checks name it (check_config)
        return
    prepare = getattr(dm, "prepare_data", None)
    if callable(prepare):
        prepare()


def _stopped(err: Exception, output_dir: Path | None) -> None:
    """A user's mistake inside the job: one line and status 2 for a single run; in a multirun,
    a log line and the exception, for the launcher to go on with the other jobs."""
    if output_dir is not None and _local_rank_zero():
        errors.mark_failed(output_dir, err)
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        log.error("error: %s", errors.describe(err))
        raise err
    errors.report(err)


def task(cfg: DictConfig) -> float:
    """The Hydra task: checks, then :func:`kdlightning.job.run.job`; see the module doc."""
    hc = HydraConfig.get()
    progress.announce_job(hc)
    output_dir = Path(hc.runtime.output_dir)
    try:
        added = precheck(cfg, list(hc.overrides.task))
        progress.quiet()
        from kdlightning.job import run  # torch, Lightning: the slow imports

        check_target_keys(cfg, added)
        check_data_files(cfg)
    except Exception as err:
        if errors.user_error(err) is None:
            raise
        _stopped(err, output_dir)
    progress.quiet()  # again: Lightning's loggers exist now
    try:
        return run.job(cfg)
    except Exception as err:
        if errors.user_error(err) is None:
            raise
        _stopped(err, None)  # run.job wrote failed.json
        raise  # not reached: _stopped raises


@relaunch_safe  # a DDP child that Lightning starts runs its parent's job, not a new sweep
@claim_explicit_run_dir  # hydra.run.dir=<a folder>: claimed before Hydra writes into it
@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def _hydra_main(cfg: DictConfig) -> float:
    return task(cfg)


def main(cfg: DictConfig | None = None) -> Any:
    """``kdl-train``: Hydra's command line; a user's mistake is one line (module doc)."""
    if cfg is not None:  # called with a composed config, as a @hydra.main function can be
        return _hydra_main(cfg)
    forced = os.environ.get("HYDRA_FULL_ERROR") != "1"
    saved = {k: os.environ.get(k) for k in ("HYDRA_FULL_ERROR", errors.FORCED_ENV)}
    if forced:  # Hydra re-raises instead of printing a trace and exiting 1 itself
        os.environ["HYDRA_FULL_ERROR"] = os.environ[errors.FORCED_ENV] = "1"
    try:
        return _hydra_main()
    except Exception as err:
        mistake = errors.user_error(err)
        if mistake is None:
            raise
        errors.report(mistake)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
