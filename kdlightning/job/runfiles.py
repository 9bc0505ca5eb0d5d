"""The files of a run directory, and the one place that reads them back.

    from kdlightning.job.runfiles import read_config, read_json, run_file
    cfg = read_config(run_dir)                      # config.yaml, else Hydra's .hydra/config.yaml
    results = read_json(run_file(run_dir, "results"))

A job (``kdlightning.job.results``) writes ``config.yaml`` (its resolved config),
``results.json`` (metrics and costs) or ``failed.json`` (why it stopped), beside Hydra's
``.hydra/{config,hydra,overrides}.yaml``. Everything that comes after a job reads them through
this module: ``kdl-export``, ``kdl-report`` (``kdlightning.report.collect``, which turns a problem
into a job status), ``kdl-figures``, the resume check (``kdlightning.job.claim``). Light on
purpose (OmegaConf and json only): the report imports it without torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

__all__ = [
    "CONFIG",
    "FAILED",
    "HYDRA_DIR",
    "RESULTS",
    "RunDirError",
    "RunFileError",
    "read_config",
    "read_json",
    "read_overrides",
    "read_yaml",
    "run_file",
]

CONFIG = "config.yaml"
RESULTS = "results.json"
FAILED = "failed.json"
HYDRA_DIR = ".hydra"
_NAMES = {"config": CONFIG, "results": RESULTS, "failed": FAILED}


class RunDirError(ValueError):
    """A folder that is not a usable run directory; the message says what to do instead."""


class RunFileError(RunDirError):
    """One file of a run directory that is missing, unreadable or holds something unexpected;
    the message starts with the file's name relative to the run (``.hydra/config.yaml: ...``)."""


def run_file(run_dir: Path, name: str) -> Path:
    """The path of a run's ``config``, ``results`` or ``failed`` file."""
    return Path(run_dir) / _NAMES[name]


def _label(path: Path) -> str:
    return f"{HYDRA_DIR}/{path.name}" if path.parent.name == HYDRA_DIR else path.name


def read_json(path: Path) -> Any:
    """A JSON file of a run; :class:`RunFileError` naming it when it cannot be read."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:  # ValueError: bad JSON or bad UTF-8
        raise RunFileError(f"{_label(Path(path))}: {type(err).__name__}: {err}") from err


def read_yaml(path: Path) -> DictConfig | ListConfig:
    """A YAML file of a run, unresolved; :class:`RunFileError` naming it when unreadable."""
    try:
        return OmegaConf.load(path)
    except Exception as err:  # yaml.YAMLError, OSError, UnicodeDecodeError, ...
        raise RunFileError(f"{_label(Path(path))}: {type(err).__name__}: {err}") from err


def read_overrides(run_dir: Path) -> list[str]:
    """The command-line overrides Hydra recorded for the job (``.hydra/overrides.yaml``)."""
    overrides = read_yaml(Path(run_dir) / HYDRA_DIR / "overrides.yaml")
    if not isinstance(overrides, ListConfig):
        raise RunFileError(f"{HYDRA_DIR}/overrides.yaml is not a list of overrides")
    return [str(o) for o in overrides]


def read_config(run_dir: Path) -> DictConfig:
    """The composed config a job ran with, resolved: ``config.yaml``, else Hydra's
    ``.hydra/config.yaml`` resolved against that job's ``.hydra/hydra.yaml``."""
    run_dir = Path(run_dir)
    if (run_dir / CONFIG).is_file():
        cfg = read_yaml(run_dir / CONFIG)
        if not isinstance(cfg, DictConfig):
            raise RunFileError(f"{CONFIG} is not a mapping")
        return cfg
    hydra_dir = run_dir / HYDRA_DIR
    if not (hydra_dir / "config.yaml").is_file() or not (hydra_dir / "hydra.yaml").is_file():
        raise RunDirError(
            f"{run_dir} has no {CONFIG} (nor {HYDRA_DIR}/config.yaml): not a run directory of "
            "the main job; pass the folder a `python -m kdlightning.train` job wrote"
        )
    # ${hydra:runtime.cwd} (data and log paths) must mean what it meant in that job: read it
    # as a plain interpolation into that job's own .hydra/hydra.yaml
    # (and so must ${kdl.cwd:}, the folder that job started in: Hydra's runtime.cwd)
    text = (hydra_dir / "config.yaml").read_text().replace("${hydra:", "${hydra.")
    text = text.replace("${kdl.cwd:}", "${hydra.runtime.cwd}")
    merged = OmegaConf.merge(OmegaConf.create(text), read_yaml(hydra_dir / "hydra.yaml"))
    plain = {k: merged[k] for k in merged if k != "hydra"}  # scalars come back resolved
    return OmegaConf.create(
        {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
         for k, v in plain.items()}
    )  # fmt: skip
