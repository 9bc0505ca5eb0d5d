"""A finished job's run directory read back: its config, data, and models, for tools that come
after the job (``kdl-export``, ``benchmarks/latency.py``).

    from kdlightning.job.rundir import load_run, load_stage_model, split_inputs
    run = load_run("logs/distill/runs/<dir>")     # config.yaml + student.pt, checked
    run = load_run(dir, ["data.root=/new/place"]) # the data moved since the run
    run.student, run.dm, run.cfg                  # the distilled student (eval mode), its data
    teacher = load_stage_model(run, "teacher")    # from <dir>/teacher/result (checksummed)
    x = split_inputs(run.dm, max_samples=1024)    # real test inputs

The run's files are read through :mod:`kdlightning.job.runfiles` (the one reader of a run
directory; the sweep report uses it too); this module adds what needs torch: the data module and
the models. Weights are read with ``torch.load(weights_only=True)`` only, after their SHA-256
matched the one the job recorded in results.json (``summary.sha256``; runs from before that
record are read unchecked).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from kdlightning.files import file_sha256
from kdlightning.job.build import build_model
from kdlightning.job.cache import DamagedEntry
from kdlightning.job.results import load_stage
from kdlightning.job.runfiles import RESULTS, RunDirError, RunFileError, read_config, read_json


@dataclass
class Run:
    """A run directory read back: its folder, resolved config, data module, distilled student."""

    path: Path
    cfg: DictConfig
    dm: Any
    student: nn.Module


def load_config(run_dir: Path) -> DictConfig:
    """The composed config a job ran with (:func:`kdlightning.job.runfiles.read_config`)."""
    return read_config(run_dir)


#: data config keys that name files or folders: what a moved data set changes
DATA_PATH_KEYS = ("root", "data_dir", "paths", "load_from_disk", "path", "tokenizer")


def apply_data_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """``cfg`` with ``data.KEY=VALUE`` overrides applied (the data moved since the run); a key
    outside ``data`` or not in the run's data config is refused, naming the valid ones."""
    for override in overrides:
        key, sep, value = override.partition("=")
        name = key.removeprefix("data.")
        # keys(), not `in`: OmegaConf says a key whose value is ??? (data.root) is not in it
        if not sep or not key.startswith("data.") or name not in list(cfg.data.keys()):
            raise RunDirError(
                f"{override!r}: only data.KEY=VALUE settings of the run's data config can be "
                f"changed here ({', '.join('data.' + k for k in cfg.data if k != '_target_')})"
            )
        OmegaConf.update(cfg, key, yaml.safe_load(value) if value else None, merge=False)
    return cfg


def _data_problem(
    run_dir: Path,
    cfg: DictConfig,
    err: BaseException,
    command: str = "kdl-export",
    purpose: str = "to check the export",
) -> RunDirError:
    """A one-line error for data that cannot be loaded: which path is missing, how to point at
    its new place (with ``command``, the tool that needs the data for ``purpose``)."""
    cause = err.__cause__ if isinstance(err, InstantiationException) and err.__cause__ else err
    paths = {k: cfg.data[k] for k in DATA_PATH_KEYS if isinstance(cfg.data.get(k), str)}
    missing = [k for k, v in paths.items() if not Path(v).expanduser().exists()]
    key = (missing or list(paths) or ["root"])[0]
    where = (
        f"data.{key}={paths[key]} does not exist"
        if key in missing
        else f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}"
    )
    return RunDirError(
        f"the run's test data is needed {purpose}, and it cannot be loaded: {where}. "
        f"If the data moved, point at its new place: {command} {run_dir} data.{key}=NEW_PLACE"
    )


def load_data(cfg: DictConfig) -> Any:
    """The data module a run's config names (not set up)."""
    return instantiate(cfg.data)


def is_language_model(cfg: DictConfig) -> bool:
    """A run on text data (``experiment=lm_pydocs``, ``data=text_files``)."""
    return str(cfg.data.get("_target_", "")).startswith("kdlightning.lm.")


def load_teacher(run_dir: Path, cfg: DictConfig, dm: Any) -> nn.Module | None:
    """The teacher a run saved in ``teacher/result``, rebuilt for ``dm``; None if it saved none."""
    done = load_stage(run_dir, "teacher", lambda: build_model(cfg.teacher.model, dm, "teacher"))
    return done[0] if done else None


def load_run(run_dir: str | Path, data_overrides: Sequence[str] = ()) -> Run:
    """The distilled student of a ``task=distill`` run (``student.pt`` loaded, strict, eval
    mode), its data module and config; :class:`RunDirError` names what is missing or wrong.

    ``data_overrides`` (``["data.root=/new/place"]``) change the run's data config first: for
    data that moved since the run. A language-model run is refused (kdl-export exports image
    classifiers)."""
    path = Path(run_dir).expanduser()
    if not path.is_dir():
        raise RunDirError(f"run directory {path} does not exist")
    cfg = apply_data_overrides(load_config(path), data_overrides)
    if is_language_model(cfg):
        raise RunDirError(
            f"{path} is a language-model run ({cfg.data._target_}): kdl-export exports image "
            "classifiers only; its distilled GPT is student.pt, a state dict for "
            "kdlightning.lm.gpt.GPT built with the run's config.yaml (student.model)"
        )
    task = cfg.get("task", "distill")
    if task != "distill":
        raise RunDirError(
            f"{path} is a task={task} run, not a distillation run: it has no distilled student "
            "(its teacher's weights are in teacher.pt)"
        )
    weights_path(path, "student.pt")  # a missing file is said before the data loads
    try:
        dm = load_data(cfg)
    except (InstantiationException, OSError, ValueError) as err:
        raise _data_problem(path, cfg, err) from None
    student = build_model(cfg.student.model, dm, "student")
    load_weights_file(path, "student.pt", student, cfg.student.model._target_)
    return Run(path, cfg, dm, student.eval())


def recorded_sha256(run_dir: Path, name: str) -> str | None:
    """The SHA-256 of the weights file ``name`` that the job recorded in results.json
    (``summary.sha256``); ``None`` for a run that recorded none (or has no readable
    results.json)."""
    try:
        results = read_json(run_dir / RESULTS)
    except RunFileError:
        return None
    sums = (results.get("summary") or {}).get("sha256") if isinstance(results, dict) else None
    return sums.get(name) if isinstance(sums, dict) else None


def weights_path(run_dir: Path, name: str) -> Path:
    """``run_dir/name``; :class:`RunDirError` saying how to finish the job if it is missing."""
    weights = run_dir / name
    if not weights.is_file():
        raise RunDirError(
            f"{run_dir} has no {name}: the job did not finish (see failed.json there, if any); "
            f"run it to the end, or continue it with resume=true hydra.run.dir={run_dir}"
        )
    return weights


def load_weights_file(run_dir: Path, name: str, model: nn.Module, target: str = "") -> nn.Module:
    """Load ``run_dir/name`` (``student.pt``, ``teacher.pt``) into ``model`` (strict), after
    its checksum matched the run's record; :class:`RunDirError` names the file and the fix."""
    weights = weights_path(run_dir, name)
    expected = recorded_sha256(run_dir, name)
    if expected is not None and file_sha256(weights) != expected:
        raise RunDirError(
            f"{weights} does not match the SHA-256 the job recorded for it in "
            f"{run_dir / RESULTS} (summary.sha256): the file was changed or damaged after the "
            "job; restore it from a copy, or run the job again"
        )
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    except Exception as err:  # unpickling errors, truncation, wrong keys or shapes
        what = f"the model {target} that {run_dir}'s config builds" if target else "the model"
        raise RunDirError(
            f"{weights} cannot be loaded into {what} ({type(err).__name__}: {str(err)[:300]}): "
            "the file is damaged or from another job; run the job again"
        ) from None
    return model


def load_stage_model(run: Run, stage: str) -> nn.Module:
    """The ``teacher`` or ``baseline`` model a run kept in ``<stage>/result`` (eval mode)."""
    role = "teacher" if stage == "teacher" else "student"
    try:
        done = load_stage(run.path, stage, lambda: build_model(run.cfg[role].model, run.dm, role))
    except DamagedEntry as err:
        raise RunDirError(str(err)) from None
    if done is None:
        raise RunDirError(f"{run.path} has no {stage}/result: the job did not keep that stage")
    return done[0].eval()


def split_inputs(dm: Any, max_samples: int | None = 1024, run: Run | None = None) -> Tensor:
    """The first ``max_samples`` inputs of the data module's test split (all of it: ``None``).
    With ``run``, data that cannot be read is a :class:`RunDirError` saying how to point at it."""
    try:
        dm.setup("test")
    except (OSError, ValueError) as err:
        if run is None:
            raise
        raise _data_problem(run.path, run.cfg, err) from None
    chunks, n = [], 0
    for batch in dm.test_dataloader():
        chunks.append(batch[0])
        n += len(batch[0])
        if max_samples is not None and n >= max_samples:
            break
    if not chunks:
        raise RunDirError("the test split is empty: there are no inputs to run the models on")
    x = torch.cat(chunks)
    return x if max_samples is None else x[:max_samples]
