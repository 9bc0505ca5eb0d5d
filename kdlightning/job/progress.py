"""Long work shows progress, routine work is quiet.

- :func:`announce_job`: each job of a sweep logs ``job k/N`` with its settings (Hydra's basic
  launcher logs ``#k : overrides`` and the count only once, before the first job);
- :class:`kdlightning.job.progress_bar.StageInProgressBar` (``conf/callbacks/default.yaml``):
  the progress bar's ``v_num`` shows the whole stage name;
- :func:`iterate` and :func:`limited`: a progress bar for a pass outside Lightning's loops
  (the teacher's logits over every split) and whether ``trainer.limit_*`` / ``debug=fast``
  make a job see a part of the data only;
- :func:`quiet`: the routine messages of the libraries are dropped: Lightning's litlogger tip
  (once per Trainer, three times a job), onnxscript's and onnx_ir's INFO lines on
  ``export=onnx``, W&B's warning about an ``anonymous`` setting nobody made (Lightning passes
  ``anonymous=None``; :func:`kdlightning.job.tracking.drop_anonymous`), torch's "No CUDA
  runtime is found" on import and a deprecation warning inside Lightning.

This module imports no torch or Lightning at import time (the command line calls
:func:`announce_job` before the slow imports).
"""

from __future__ import annotations

import functools
import logging
import sys
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

T = TypeVar("T")

_BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


@functools.cache
def sweep_size(sweep_dir: str) -> int | None:
    """How many jobs the multirun in ``sweep_dir`` launches (``None`` if it cannot be told):
    read from the ``multirun.yaml`` Hydra writes there before the first job."""
    path = Path(sweep_dir) / "multirun.yaml"
    try:
        hydra_cfg = OmegaConf.load(path).hydra
        sweeper = hydra_cfg.sweeper
        if sweeper.get("_target_") != _BASIC_SWEEPER:
            trials = sweeper.get("n_trials")  # optuna-style sweepers
            return int(trials) if trials is not None else None
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.override_parser.overrides_parser import OverridesParser

        gh = GlobalHydra.instance()
        loader = gh.config_loader() if gh.is_initialized() else None
        params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
        overrides = OverridesParser.create(config_loader=loader).parse_overrides(
            [*params, *hydra_cfg.overrides.task]
        )
        return sum(len(b) for b in BasicSweeper.split_arguments(overrides, None))
    except Exception as err:  # a count is a nicety: never fail a job over it
        log.debug("cannot count the jobs of %s: %s", sweep_dir, err)
        return None


def job_label(num: int, total: int | None) -> str:
    """``job 3/8`` (1-based, as a person counts), or ``job 3`` when the total is unknown."""
    return f"job {num + 1}/{total}" if total else f"job {num + 1}"


def announce_job(hc: Any) -> None:
    """In a multirun, log ``job k/N: <the job's settings>`` (``hc``: Hydra's runtime config)."""
    from hydra.types import RunMode

    if hc.mode != RunMode.MULTIRUN:
        return
    settings = " ".join(hc.overrides.task)
    log.info("%s: %s", job_label(int(hc.job.num), sweep_size(str(hc.sweep.dir))), settings)


def limited(trainer_cfg: DictConfig | dict | None) -> bool:
    """Whether the Trainer settings make a job see part of its data only: ``fast_dev_run``,
    ``overfit_batches`` or a ``limit_train_batches`` other than all (``debug=fast`` sets 3)."""
    t = trainer_cfg or {}
    limit = t.get("limit_train_batches")
    return (
        bool(t.get("fast_dev_run"))
        or bool(t.get("overfit_batches"))
        or (limit is not None and not (isinstance(limit, float) and limit >= 1.0))
    )


def iterate(items: Iterable[T], total: int | None, desc: str, enabled: bool = True) -> Iterator[T]:
    """``items`` with a progress bar on stderr (tqdm, which Lightning installs) when stderr is a
    terminal and ``enabled``; a plain iterator otherwise. ``leave=False``: the bar disappears
    once the pass is done, as Lightning's do."""
    if not enabled or not sys.stderr.isatty():
        yield from items
        return
    from tqdm.auto import tqdm

    yield from tqdm(items, total=total, desc=desc, leave=False, dynamic_ncols=True)


class _DropLitloggerTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in str(record.msg)


def quiet() -> None:
    """Drop the routine messages listed in the module doc; calling it again changes nothing.
    The command line calls it before the slow imports (some speak while being imported)."""
    # torch.utils.benchmark (latency) imports torch's C++-extension builder, which warns
    # "No CUDA runtime is found, using CUDA_HOME=..." on every CPU machine; nothing is built.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    # Lightning 2.6 with torch >= 2.9: a deprecation inside Lightning, nothing a user can act on
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropLitloggerTip) for f in rank_zero.filters):
        rank_zero.addFilter(_DropLitloggerTip())
    for name in ("onnxscript", "onnx_ir"):  # the exporter's optimizer passes, INFO per pass
        logging.getLogger(name).setLevel(logging.WARNING)
    # Lightning gives these loggers a plain handler of their own (and stops them propagating)
    # when it is imported before any logging is configured; the command line imports it after
    # Hydra configured the root logger, and every message would come out twice ("INFO: ..." from
    # the handler of the `lightning` logger, and Hydra's line): keep Lightning's own format.
    for name in ("lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        if logger.propagate and not logger.handlers:
            logger.addHandler(logging.StreamHandler())
            logger.propagate = False
