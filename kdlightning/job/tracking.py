"""Weights & Biases tracking: one W&B run per stage, one group per sweep, offline without a key.

    python -m kdlightning.train logger=wandb                                  # a group per run
    python -m kdlightning.train -m logger=wandb kd.temperature=1,4 kd.alpha=0.5,0.9
    python -m kdlightning.train logger=wandb logger.wandb.project=mine logger.wandb.group=g1

Every stage (teacher / baseline / distilled) is its own W&B run with ``job_type`` set to the
stage; all runs of one job, or of one multirun, share a ``group`` (``sweep-<multirun dir>``)
so the dashboard can group or filter by it. Each run's config is the job's full resolved
config, flattened to dotted keys; its summary holds the stage's final val/test metrics; the
distilled run also gets the comparison table as a ``wandb.Table``.

Without credentials (no ``WANDB_API_KEY``, no ``~/.netrc`` entry for the W&B host) and
without an explicit ``WANDB_MODE``, runs are written offline and a one-line hint says how to
upload them with ``wandb sync``. Nothing here prompts or waits on the network.
"""

from __future__ import annotations

import logging
import netrc
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from kdlightning.deploy.compare import ROLES, ratios

log = logging.getLogger(__name__)

_hinted: set[str] = set()  # save dirs whose offline hint was already printed
_auto_offline = False  # True once ensure_mode itself chose offline mode in this process


def has_credentials() -> bool:
    """True when W&B could log in without a prompt: ``WANDB_API_KEY`` or a netrc entry."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host or "") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def ensure_mode(save_dir: str | Path) -> str:
    """Pick the W&B mode before ``wandb.init``: an explicit ``WANDB_MODE`` wins, else offline
    when there are no credentials (with a one-line ``wandb sync`` hint), else online."""
    global _auto_offline
    mode = os.environ.get("WANDB_MODE")
    if mode and not _auto_offline:
        return mode
    if not mode and has_credentials():
        return "online"
    os.environ["WANDB_MODE"] = "offline"  # read by wandb.init; never prompts for a key
    _auto_offline = True
    if str(save_dir) not in _hinted:  # once per job folder, not once per stage
        _hinted.add(str(save_dir))
        log.warning(
            "W&B: no credentials, logging offline; upload later: wandb sync %s/wandb/offline-run-*",
            save_dir,
        )
    return "offline"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``: W&B's run table filters and groups flat keys."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def default_group(sweep_dir: str | Path) -> str:
    """The W&B group of every job of the multirun in ``sweep_dir`` (used by the report too)."""
    return f"sweep-{Path(sweep_dir).name}"


def _job_context() -> tuple[str, str]:
    """(group, job label) from Hydra: the multirun folder for sweeps, the run folder alone."""
    if not HydraConfig.initialized():
        return "kdlightning", ""
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:
        return default_group(hc.sweep.dir), f"{hc.job.num}:{hc.job.override_dirname}"
    return f"run-{Path(hc.runtime.output_dir).name}", hc.job.override_dirname


def stage_kwargs(
    logger_cls: type, lg_cfg: DictConfig, cfg: DictConfig, stage: str
) -> dict[str, Any] | None:
    """Per-stage constructor arguments for a W&B logger (``lg_cfg``), ``None`` for others.

    Each stage is its own W&B run: the sweep's group, ``job_type=stage``, the job's whole
    resolved config (flat), and offline mode when there are no credentials. Settings the user
    gave in ``logger.wandb`` (group, name) win.
    """
    from lightning.pytorch.loggers import WandbLogger

    if not issubclass(logger_cls, WandbLogger):
        return None
    finish()  # WandbLogger would silently reuse a run still open from the previous stage
    ensure_mode(lg_cfg.get("save_dir") or ".")
    group, label = _job_context()
    return {
        "job_type": stage,
        "group": lg_cfg.get("group") or group,
        "name": lg_cfg.get("name") or " ".join(p for p in (stage, label) if p),
        "config": flatten(OmegaConf.to_container(cfg, resolve=True)),  # type: ignore[arg-type]
    }


def drop_anonymous(logger: Any) -> Any:
    """``logger``, with the ``anonymous=None`` Lightning's ``WandbLogger`` always hands to
    ``wandb.init`` removed: W&B warns that the setting "has no effect" whenever it is given,
    even as ``None`` (a message about a setting nobody made). Other loggers are returned as is.
    """
    init = getattr(logger, "_wandb_init", None)
    if isinstance(init, dict) and init.get("anonymous") is None:
        init.pop("anonymous", None)
    return logger


def summarize(loggers: list[Any], metrics: Mapping[str, Any]) -> None:
    """Put a stage's final metrics into the summary of its W&B run(s), if it has any."""
    from lightning.pytorch.loggers import WandbLogger

    numbers = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
    for lg in loggers:
        if isinstance(lg, WandbLogger):
            # on DDP ranks > 0 the experiment is Lightning's DummyExperiment, whose attributes
            # are no-op functions: only rank 0's run has a summary
            summary = getattr(lg.experiment, "summary", None)
            if hasattr(summary, "update"):
                summary.update(numbers)


def log_comparison(results: Mapping[str, Any]) -> None:
    """Log the job's comparison as a ``wandb.Table`` (and the others' test accuracy) into the
    W&B run still open, the distilled stage's; no-op when W&B is not in use."""
    run = _open_run()
    if run is None:
        return
    import wandb

    columns = ["model", "test/acc", "val/acc", "params", "size_bytes", "latency_ms",
               "compression", "speedup"]  # fmt: skip
    table = wandb.Table(columns=columns)
    for key, label in ROLES:
        if key in results:
            r = results[key]
            compression, speedup = ratios(results, key)
            table.add_data(label, r["test/acc"], r.get("val/acc"), r["params"], r["size_bytes"],
                           r["latency_ms"], compression, speedup)  # fmt: skip
    run.log({"comparison": table})
    extra = {f"{key}/test/acc": results[key]["test/acc"] for key, _ in ROLES if key in results}
    run.summary.update({**extra, **results.get("summary", {})})


def log_images(paths: Sequence[str | Path]) -> None:
    """Log each PNG in ``paths`` as ``figures/<file stem>`` (a ``wandb.Image``) into the W&B
    run still open, the distilled stage's; no-op when W&B is not in use."""
    run = _open_run()
    if run is None or not paths:
        return
    import wandb

    run.log({f"figures/{Path(p).stem}": wandb.Image(str(p)) for p in paths})


def _open_run() -> Any:
    # wandb not imported yet means no run can be open: do not pay its import time for nothing.
    wandb = sys.modules.get("wandb")
    return None if wandb is None else wandb.run


def finish(exit_code: int | None = None) -> None:
    """Close the open W&B run, if any, so that the next stage or job starts a new one."""
    run = _open_run()
    if run is not None:
        run.finish(exit_code=exit_code)


def log_report(
    sweep_dir: str | Path,
    report: Mapping[str, Any],
    wandb_settings: Mapping[str, Any] | None = None,
) -> None:
    """Log a sweep report (heatmap image, aggregate and job tables, best setting) as one W&B
    run with ``job_type=report`` in the jobs' project and group.

    ``report`` is what ``kdlightning.report.write_report`` returns, plain values only: ``jobs``
    (one dict per job, the columns of report.csv), ``aggregate``, ``best``, ``counts`` and
    ``heatmap``. ``wandb_settings``: the jobs' ``logger.wandb`` project / entity / group.
    """
    import wandb

    settings = wandb_settings or {}
    ensure_mode(sweep_dir)
    run = wandb.init(
        project=settings.get("project") or "kdlightning",
        entity=settings.get("entity"),
        group=settings.get("group") or default_group(sweep_dir),
        job_type="report",
        name=f"report {Path(sweep_dir).name}",
        dir=str(sweep_dir),
        config={
            "sweep_dir": str(sweep_dir),
            **{f"jobs.{k}": v for k, v in report["counts"].items()},
        },
    )
    try:
        rows = [{**r, "seeds": " ".join(map(str, r["seeds"]))} for r in report["aggregate"]]
        payload: dict[str, Any] = {}
        if rows:
            payload["aggregate"] = wandb.Table(
                columns=list(rows[0]), data=[list(r.values()) for r in rows]
            )
        columns = ["num", "temperature", "alpha", "seed", "val_acc", "test_acc", "test_agreement",
                   "status", "error"]  # fmt: skip
        jobs = [[row.get(c) for c in columns] for row in report["jobs"]]
        payload["jobs"] = wandb.Table(columns=columns, data=jobs)
        if report.get("heatmap"):
            payload["heatmap"] = wandb.Image(str(report["heatmap"]))
        run.log(payload)
        best = report.get("best") or {}
        run.summary.update({f"best/{k}": v for k, v in best.items() if k != "seeds"})
    finally:
        run.finish()
