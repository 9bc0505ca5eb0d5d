"""A finished run's model evaluated again, on its own test split or on another data set.

    kdl-eval logs/distill/runs/<dir>                   # or: python -m kdlightning.eval RUN_DIR
    kdl-eval RUN_DIR --model teacher                   # the run's teacher (or baseline)
    kdl-eval RUN_DIR --onnx                            # export/student.onnx under ONNX Runtime
    kdl-eval RUN_DIR data.root=/new/place              # the run's data moved since
    kdl-eval RUN_DIR data=imagefolder data.root=other/ # another data set with the same classes

    from kdlightning.deploy.evaluate import evaluate_run
    report = evaluate_run("logs/distill/runs/<dir>")   # {"test/acc": ..., "val/acc": ..., ...}

The model is rebuilt from the run's ``config.yaml`` (:mod:`kdlightning.job.rundir`) and its
weights: ``student.pt`` (``task=classify``: ``teacher.pt``) after its SHA-256 matched the one
results.json recorded, or a stage's checksummed ``<stage>/result`` (``--model teacher``,
``--model baseline``); always ``torch.load(weights_only=True)``. ``--onnx`` runs the file
``export=onnx`` / ``kdl-export`` wrote, checked against export.json's SHA-256, on the data as
stored (its normalization is in the graph). Classifiers report test and validation accuracy,
language models loss, bits per byte, bits per token and perplexity, computed exactly as the
job's Lightning modules do (micro accuracy; token-weighted mean loss), so on the run's own data
the figures are results.json's. Nothing is written into the run folder: ``--json PATH`` writes
the report to a new file of your choice.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from kdlightning.deploy.compare import markdown_table
from kdlightning.deploy.measure import count_parameters, state_dict_bytes
from kdlightning.files import atomic_write, file_sha256
from kdlightning.job.build import build_model
from kdlightning.job.cache import DamagedEntry
from kdlightning.job.conf_dir import config_dir
from kdlightning.job.results import load_stage
from kdlightning.job.rundir import (
    RunDirError,
    _data_problem,
    apply_data_overrides,
    is_language_model,
    load_config,
    load_data,
    load_weights_file,
)
from kdlightning.job.runfiles import RunFileError, read_json, run_file

MODELS = ("student", "teacher", "baseline")
LABELS = {"student": "distilled student", "teacher": "teacher", "baseline": "student alone"}
#: the results.json entry each model's recorded figures are in
RESULT_KEYS = {"student": "distilled", "teacher": "teacher", "baseline": "baseline"}


class EvalError(RunDirError):
    """An evaluation that cannot be done as asked; the message names the value and the fix."""


# --- what to evaluate on ------------------------------------------------------------------------
def _conf_data_dir() -> Path:
    return Path(config_dir()) / "data"  # the tree the train command composes from


def eval_config(run_cfg: DictConfig, data_args: Sequence[str]) -> DictConfig:
    """The run's config with ``data=NAME`` (another data group, ``conf/data/NAME.yaml``, its
    ``${seed}`` and ``${paths...}`` taken from the run) and ``data.KEY=VALUE`` applied."""
    cfg = copy.deepcopy(run_cfg)
    groups = [a for a in data_args if a.startswith("data=")]
    if len(groups) > 1:
        raise EvalError(f"{' '.join(groups)}: name one data set (data=NAME), not several")
    if groups:
        name = groups[0].partition("=")[2]
        file = _conf_data_dir() / f"{name}.yaml"
        if not file.is_file():
            known = sorted(p.stem for p in _conf_data_dir().glob("*.yaml"))
            raise EvalError(f"{groups[0]}: no such data set; use one of {', '.join(known)}")
        OmegaConf.update(cfg, "data", OmegaConf.load(file), merge=False)
        cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    return apply_data_overrides(cfg, [a for a in data_args if not a.startswith("data=")])


def check_same_outputs(run_dm: Any, dm: Any, text: bool) -> None:
    """The other data set must have the run's classes (or vocabulary) and input shape."""
    if text:
        if dm.vocab_size != run_dm.vocab_size:
            raise EvalError(
                f"the data's tokenizer has {dm.vocab_size} tokens, the run's models score "
                f"{run_dm.vocab_size}: evaluate on text tokenized like the run's (its "
                "data.tokenizer)"
            )
        return
    if dm.num_classes != run_dm.num_classes:
        raise EvalError(
            f"{type(dm).__name__} has {dm.num_classes} classes, the run's models were trained "
            f"for {run_dm.num_classes} ({type(run_dm).__name__}): evaluate on a data set with "
            "the same classes, in the same order"
        )
    if tuple(dm.input_shape) != tuple(run_dm.input_shape):
        raise EvalError(
            f"{type(dm).__name__} serves inputs of shape {tuple(dm.input_shape)}, the run's "
            f"models take {tuple(run_dm.input_shape)}: resize the data (e.g. data.image_size) "
            "or pick a data set of that shape"
        )


# --- which model --------------------------------------------------------------------------------
def _builder(cfg: DictConfig, dm: Any, model: str, text: bool) -> Callable[[], nn.Module]:
    role = "teacher" if model == "teacher" else "student"
    if text:
        from kdlightning.job.tasks.text import build_lm

        return lambda: build_lm(cfg[role].model, dm, role)
    return lambda: build_model(cfg[role].model, dm, role)


def load_model(run_dir: Path, cfg: DictConfig, dm: Any, model: str) -> tuple[nn.Module, str]:
    """``(model in eval mode, where its weights came from)`` for ``student``, ``teacher`` or
    ``baseline``, rebuilt for the run's data module ``dm``."""
    if model not in MODELS:
        raise EvalError(f"--model {model}: choose one of {', '.join(MODELS)}")
    build = _builder(cfg, dm, model, is_language_model(cfg))
    task = cfg.get("task", "distill")
    if model == "teacher" and (run_dir / "teacher.pt").is_file():  # a task=classify run
        role = cfg.teacher.model._target_
        return load_weights_file(run_dir, "teacher.pt", build(), role).eval(), "teacher.pt"
    if model == "student":
        if task != "distill":
            raise EvalError(
                f"{run_dir} is a task={task} run: it has no distilled student; evaluate its "
                "teacher with --model teacher"
            )
        role = cfg.student.model._target_
        return load_weights_file(run_dir, "student.pt", build(), role).eval(), "student.pt"
    stage = RESULT_KEYS[model]
    try:
        done = load_stage(run_dir, stage, build)
    except DamagedEntry as err:
        raise EvalError(str(err)) from None
    if done is None:
        raise EvalError(f"{run_dir} has no {stage}/result: that job did not keep the {model}")
    return done[0].eval(), f"{stage}/result"


def onnx_file(run_dir: Path) -> Path:
    """``export/student.onnx``, checked against the SHA-256 in export.json."""
    from kdlightning.deploy.export import EXPORT_JSON

    report_path = run_dir / "export" / EXPORT_JSON
    if not report_path.is_file():
        raise EvalError(
            f"{run_dir} has no export/{EXPORT_JSON}: the student was not exported; run "
            f"kdl-export {run_dir} --formats onnx (or the job with export=onnx) first"
        )
    info = (read_json(report_path).get("formats") or {}).get("onnx")
    if info is None:
        raise EvalError(
            f"{report_path} lists no ONNX file; run kdl-export {run_dir} --formats onnx"
        )
    path = run_dir / "export" / info["file"]
    if not path.is_file() or file_sha256(path) != info.get("sha256"):
        raise EvalError(
            f"{path} is missing or does not match the SHA-256 in {report_path}: it was changed "
            f"after the export; export it again with kdl-export {run_dir} --formats onnx"
        )
    return path


# --- the figures --------------------------------------------------------------------------------
@torch.no_grad()
def accuracy(predict: Callable[[Tensor], Tensor], loader: Any) -> float:
    """Top-1 accuracy over every sample of ``loader`` (micro: what the job's test/acc is)."""
    correct = total = 0
    for batch in loader:
        x, y = batch[0], batch[1]
        correct += int((predict(x).argmax(dim=1) == y).sum())
        total += len(y)
    if total == 0:
        raise EvalError("the split is empty: there is nothing to evaluate on")
    return correct / total


@torch.no_grad()
def lm_loss(model: nn.Module, loader: Any) -> float:
    """Next-token cross-entropy in nats per scored token over ``loader``, token-weighted (as
    the job's ``{val,test}/loss``)."""
    from kdlightning.lm.losses import next_token_ce

    total, tokens = 0.0, 0
    for x, y, mask, _ in loader:
        n = int(mask.sum())
        total += float(next_token_ce(model(x), y, mask)) * n
        tokens += n
    if tokens == 0:
        raise EvalError("the split has no scored token: there is nothing to evaluate on")
    return total / tokens


def lm_metrics(loss: float, bytes_per_token: float, split: str) -> dict[str, float]:
    """Loss in nats per token as the LM table's figures: bits per byte, per token, perplexity."""
    return {
        f"{split}/loss": loss,
        f"{split}/bpb": loss / math.log(2) / bytes_per_token,
        f"{split}/bpt": loss / math.log(2),
        f"{split}/ppl": math.exp(loss),
    }


def onnx_predictor(path: Path, dm: Any) -> Callable[[Tensor], Tensor]:
    """The ONNX file as a function of the data module's (normalized) inputs: they are taken
    back to the values as stored, which is what the exported graph takes."""
    from kdlightning.deploy.export import INPUT_NAME, onnx_session

    session = onnx_session(path)
    raw = dm.raw_input() if hasattr(dm, "raw_input") else None

    def predict(x: Tensor) -> Tensor:
        inputs = raw.to_raw(x) if raw is not None else x
        feed = {INPUT_NAME: inputs.numpy().astype(np.float32)}
        return torch.from_numpy(session.run(None, feed)[0])

    return predict


def _recorded(run_dir: Path, model: str) -> dict[str, Any]:
    try:
        return read_json(run_file(run_dir, "results")).get(RESULT_KEYS[model]) or {}
    except RunFileError:  # a run without readable results: nothing to compare with
        return {}


def evaluate_run(
    run_dir: str | Path,
    model: str = "student",
    data_args: Sequence[str] = (),
    onnx: bool = False,
) -> dict[str, Any]:
    """Evaluate one model of a finished run (module doc); returns the figures, what was
    evaluated, and the run's recorded figures (``recorded``, on its own data only)."""
    path = Path(run_dir).expanduser()
    if not path.is_dir():
        raise EvalError(f"run directory {path} does not exist")
    run_cfg = load_config(path)
    cfg = eval_config(run_cfg, data_args)
    text = is_language_model(run_cfg)
    if text != is_language_model(cfg):
        raise EvalError(
            f"{cfg.data._target_} and the run's {run_cfg.data._target_} are not the same kind "
            "of data (text / classification); evaluate on data of the run's kind"
        )
    if onnx and (text or model != "student"):
        raise EvalError("--onnx evaluates the exported student of an image run only")
    try:
        run_dm = load_data(run_cfg)
        dm = run_dm if cfg.data == run_cfg.data else load_data(cfg)
    except (OSError, ValueError) as err:
        raise _data_problem(path, cfg, err, "kdl-eval", "to evaluate on it") from None
    check_same_outputs(run_dm, dm, text)
    if onnx:
        file = onnx_file(path)
        net, source = None, f"{file.relative_to(path)}, ONNX Runtime"
        predict = onnx_predictor(file, dm)
    else:
        net, source = load_model(path, run_cfg, run_dm, model)
        predict = net
    try:
        dm.setup("fit")
        dm.setup("test")
    except (OSError, ValueError) as err:
        raise _data_problem(path, cfg, err, "kdl-eval", "to evaluate on it") from None
    metrics: dict[str, Any] = {}
    for split, loader in (("test", dm.test_dataloader()), ("val", dm.val_dataloader())):
        if text:
            metrics.update(lm_metrics(lm_loss(net, loader), dm.bytes_per_token, split))
        else:
            metrics[f"{split}/acc"] = accuracy(predict, loader)
    size = file.stat().st_size if onnx else state_dict_bytes(net)
    own = cfg.data == run_cfg.data
    return {
        **metrics,
        "model": model,
        "source": source,
        "data": str(cfg.data._target_),
        "own_data": own,
        "params": None if net is None else count_parameters(net),
        "size_bytes": size,
        "recorded": _recorded(path, model) if own else {},
    }


def eval_table(report: dict[str, Any]) -> str:
    """One row, the job table's columns (accuracy or bits per byte, params, size), and
    results.json's figure beside it when the data is the run's own."""
    text = "test/bpb" in report
    key = "test/bpb" if text else "test/acc"

    def fmt(value: Any) -> str:
        if value is None:
            return "-"
        return f"{value:.4f}" if text else f"{100 * value:.2f}%"

    label = f"{LABELS[report['model']]} ({report['source']})"
    params = "-" if report["params"] is None else f"{report['params']:,}"
    if text:
        headers = ["model", "test bpb", "val bpb", "test bits/token", "test ppl", "test loss"]
        row = [label, fmt(report["test/bpb"]), fmt(report["val/bpb"]),
               f"{report['test/bpt']:.4f}", f"{report['test/ppl']:.3f}",
               f"{report['test/loss']:.4f}"]  # fmt: skip
    else:
        headers = ["model", "test acc", "val acc"]
        row = [label, fmt(report["test/acc"]), fmt(report["val/acc"])]
    headers += ["params", "size (KiB)", f"results.json {key.replace('/', ' ')}"]
    row += [params, f"{report['size_bytes'] / 1024:.1f}", fmt(report["recorded"].get(key))]
    return markdown_table(headers, [row])


# --- command line -------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """``kdl-eval RUN_DIR [data=NAME] [data.KEY=VALUE ...] [--model M] [--onnx] [--json PATH]``;
    a user's mistake is one line ``error: ...`` and exit status 2."""
    parser = argparse.ArgumentParser(
        prog="kdl-eval",
        description="Evaluate a finished run's distilled student (or teacher, or the student "
        "alone, or the exported ONNX file) on the test split of its data set or of another.",
    )
    parser.add_argument("run_dir", type=Path, help="a main-job run directory")
    parser.add_argument(
        "data_args",
        nargs="*",
        metavar="data=NAME | data.KEY=VALUE",
        help="another data set with the same classes (data=NAME, conf/data/NAME.yaml), or "
        "changed settings of the run's (data.root=/new/place)",
    )
    parser.add_argument("--model", choices=MODELS, default="student")
    parser.add_argument("--onnx", action="store_true", help="the run's export/student.onnx")
    parser.add_argument("--json", type=Path, help="also write the figures to this new file")
    args = parser.parse_args(argv)
    try:
        if args.json is not None and args.json.exists():
            raise EvalError(f"--json {args.json} exists; name a new file (nothing is overwritten)")
        report = evaluate_run(args.run_dir, args.model, args.data_args, args.onnx)
    except RunDirError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(eval_table(report))
    if args.json is not None:
        atomic_write(args.json, json.dumps(report, indent=2) + "\n")
        print(f"\nwritten to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
