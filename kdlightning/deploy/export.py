"""The distilled student as ONNX and as a ``torch.export`` program, each checked before it is kept.

    kdl-export RUN_DIR                       # or: python -m kdlightning.export RUN_DIR
    kdl-export RUN_DIR data.root=/new/place  # the run's data moved since
    python -m kdlightning.train export=onnx  # at the end of the main job (export=all: both)

    from kdlightning.deploy.export import export_run, export_student, onnx_session
    report = export_run("logs/distill/runs/<dir>")      # -> <dir>/export/, the export.json dict
    report = export_student(student, x_test, "out/")    # any nn.Module and real inputs
    logits = onnx_session("out/student.onnx").run(None, {"input": x_test.numpy()})[0]

Files, loadable without this package, Lightning, the teacher or any connector module:

    student.onnx   ONNX (opset 18), input "input" with a dynamic batch axis, output "logits";
                   run it with onnxruntime. The input is the data as the data set stores it
                   (digits: 8x8 values 0-16; Fashion-MNIST: 28x28 values 0-255, as float32):
                   the data module's normalization is part of the graph
    student.pt2    a ``torch.export`` program: ``torch.export.load(path).module()(x)``;
                   ``student.ts`` (TorchScript, ``torch.jit.load``) only for a model that
                   torch.export cannot capture
    export.json    the input (name, shape, dtype, value range, the normalization folded in),
                   the output, the class names; tolerance, per format: max |logit difference|
                   against the PyTorch student on the test split, top-1 agreement, exporter,
                   sha256; versions

ONNX comes from ``torch.onnx.export(dynamo=True)``, the torch.export-based exporter (the default
since torch 2.9; the translation needs ``onnxscript``); it handles every model of the package
(MLP, SmallCNN, CNN1D, the CIFAR zoo, torchvision). A model torch.export cannot capture (Python
control flow on tensor values) falls back to the legacy TorchScript-based exporter, which traces
one path through the model; export.json names the exporter each file came from.

Every file is written under a temporary name, loaded back and run on real test inputs in batches
(and alone, at batch 1); only when every requested format matches the PyTorch student within
``atol`` and with the same top-1 are the files renamed into place and export.json written. On a
mismatch :class:`ExportMismatch` names the format, the difference and the tolerance, and no
student.onnx, student.pt2 or export.json is left (an earlier export there is removed first).
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from kdlightning.deploy.compare import markdown_table
from kdlightning.deploy.measure import Latency, benchmark_settings, latency_keys, time_call
from kdlightning.files import file_sha256
from kdlightning.job.results import write_json
from kdlightning.job.rundir import Run, RunDirError, load_run, split_inputs

log = logging.getLogger(__name__)

FORMATS = ("onnx", "torch_export")
#: ``export=`` values of the main job and the formats each writes.
EXPORT_CHOICES = {"onnx": ("onnx",), "all": FORMATS}
INPUT_NAME, OUTPUT_NAME = "input", "logits"
OPSET = 18
#: Float32 rounding between runtimes stays near 1e-6 for the package's models (measured, ONNX:
#: MLP 9e-8, ResNet-8x4 6e-7, WRN-16-2 7e-7, torchvision ResNet-18 1.5e-6; torch.export: 0);
#: 1e-4 leaves room for larger logits and other CPUs' kernels.
DEFAULT_ATOL = 1e-4
EXPORT_JSON = "export.json"


class ExportError(ValueError):
    """An argument the export cannot use (format, tolerance, batch size); says what to do.
    A folder that is not a finished run raises :class:`~kdlightning.job.rundir.RunDirError`."""


class ExportMismatch(RuntimeError):
    """An exported file whose outputs differ from the PyTorch student's; nothing was kept."""


# --- exporters (model, example, path) -> info; runners (path, inputs, batch, info) -> logits --
def _dynamic_batch() -> tuple[dict[int, Any], ...]:
    return ({0: torch.export.Dim("batch", min=1)},)


def _export_onnx(model: nn.Module, example: Tensor, path: Path) -> dict[str, Any]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation chatter
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                dynamic_shapes=_dynamic_batch(),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=OPSET,
                verbose=False,  # no progress lines on stdout
            )
        program.save(path, external_data=False)  # one self-contained file
        return {"exporter": "torch.onnx.export(dynamo=True)", "opset": OPSET}
    except Exception as err:
        log.warning(
            "torch.export cannot capture the student (%s); ONNX falls back to the "
            "TorchScript-based exporter",
            str(err).splitlines()[0][:200],
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            path,
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=OPSET,
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
    return {"exporter": "torch.onnx.export(dynamo=False), TorchScript trace", "opset": OPSET}


def _export_program(model: nn.Module, example: Tensor, path: Path) -> dict[str, Any]:
    try:
        program = torch.export.export(model, (example,), dynamic_shapes=_dynamic_batch())
        torch.export.save(program, path)
        return {"exporter": "torch.export", "file": "student.pt2"}
    except Exception as err:
        log.warning(
            "torch.export cannot capture the student (%s); saving TorchScript instead",
            str(err).splitlines()[0][:200],
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarning: the checks below run the traced file
        traced = torch.jit.trace(model, (example,))
        torch.jit.save(traced, str(path))  # TorchScript is deprecated, but still loads
    return {
        "exporter": "torch.jit.trace (torch.export could not capture the model)",
        "file": "student.ts",
    }


def onnx_session(path: str | Path, threads: int = 1) -> Any:
    """An ONNX Runtime CPU session with ``threads`` intra-op threads (and one inter-op)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _chunks(inputs: Tensor, batch_size: int) -> list[Tensor]:
    # The batches, then one sample alone: batch 1 is where a specialized batch axis shows.
    return [*inputs.split(int(batch_size)), inputs[:1]]


def _run_onnx(path: Path, inputs: Tensor, batch_size: int, info: dict) -> np.ndarray:
    session = onnx_session(path)
    outs = [session.run(None, {INPUT_NAME: c.numpy()})[0] for c in _chunks(inputs, batch_size)]
    return np.concatenate(outs)


def _run_program(path: Path, inputs: Tensor, batch_size: int, info: dict) -> np.ndarray:
    if info["file"].endswith(".ts"):  # the TorchScript fallback
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(path))
    else:
        module = torch.export.load(path).module()
    with torch.no_grad():
        return np.concatenate([module(c).numpy() for c in _chunks(inputs, batch_size)])


EXPORTERS: dict[str, tuple[str, Callable[..., dict], Callable[..., np.ndarray]]] = {
    "onnx": ("student.onnx", _export_onnx, _run_onnx),
    "torch_export": ("student.pt2", _export_program, _run_program),
}


# --- the check ----------------------------------------------------------------------------------
def compare_logits(reference: np.ndarray, exported: np.ndarray, atol: float) -> dict[str, Any]:
    """Max |difference| and top-1 agreement of ``exported`` against ``reference`` logits.

    A sample whose two largest reference logits are within ``2 * atol`` is a tie: a difference
    inside the tolerance may flip its top-1, so it is counted in ``top1_ties`` and not held
    against the export. ``ok``: every difference within ``atol``, every other top-1 the same.
    """
    if reference.shape != exported.shape:
        return {
            "ok": False,
            "max_abs_diff": float("inf"),
            "top1_agree": 0,
            "top1_total": len(reference),
            "top1_ties": 0,
            "reason": f"output shape {exported.shape} != {reference.shape}",
        }
    diff = float(np.abs(reference.astype(np.float64) - exported).max())
    same = reference.argmax(1) == exported.argmax(1)
    top2 = np.sort(reference, axis=1)[:, -2:] if reference.shape[1] > 1 else None
    ties = (top2[:, 1] - top2[:, 0] <= 2 * atol) if top2 is not None else np.zeros_like(same)
    ok = diff <= atol and bool(np.all(same | ties))  # a NaN diff fails `<=`
    return {
        "ok": ok,
        "max_abs_diff": diff,
        "top1_agree": int(same.sum()),
        "top1_total": len(same),
        "top1_ties": int(ties.sum()),
    }


def versions() -> dict[str, str]:
    """torch, onnx, onnxruntime and onnxscript versions: what the files were made and run with."""
    import onnx
    import onnxruntime
    import onnxscript

    return {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnxscript": onnxscript.__version__,
    }


def _check_args(formats: Sequence[str], atol: float, batch_size: int) -> tuple[str, ...]:
    formats = tuple(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ExportError(f"unknown export format(s) {unknown or formats!r}; use {FORMATS}")
    if not float(atol) > 0:
        raise ExportError(f"atol={atol!r} must be a positive number (e.g. {DEFAULT_ATOL})")
    if int(batch_size) < 1:
        raise ExportError(f"batch_size={batch_size!r} must be >= 1")
    return formats


def export_student(
    student: nn.Module,
    inputs: Tensor,
    out_dir: str | Path,
    formats: Sequence[str] = FORMATS,
    atol: float = DEFAULT_ATOL,
    batch_size: int = 64,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Export ``student`` in ``formats`` into ``out_dir``, check every file on ``inputs`` against
    PyTorch, and keep them (and ``export.json``, whose content is returned) only if all match.

    ``inputs``: real inputs (N, *input_shape), e.g. :func:`split_inputs`. ``meta`` is added to
    export.json. Raises :class:`ExportMismatch` when a file's logits differ by more than
    ``atol`` or its top-1 differs (ties within the tolerance aside).
    """
    formats = _check_args(formats, atol, batch_size)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = copy.deepcopy(student).cpu().eval()  # the caller's model keeps its device and mode
    inputs = inputs.detach().cpu()
    with torch.no_grad():
        reference = np.concatenate([model(c).numpy() for c in _chunks(inputs, batch_size)])
    # An earlier export must not outlive a failed one: remove it before anything is written.
    for name in (EXPORT_JSON, "student.onnx", "student.pt2", "student.ts"):
        (out_dir / name).unlink(missing_ok=True)
    example = inputs[:2] if len(inputs) > 1 else inputs.repeat(2, *[1] * (inputs.dim() - 1))
    report: dict[str, Any] = {
        "atol": float(atol),
        "n_samples": len(inputs),
        "batch_size": int(batch_size),
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "dynamic_axes": {INPUT_NAME: [0]},
        **(meta or {}),
        "versions": versions(),
        "formats": {},
    }
    temporary: dict[Path, Path] = {}
    try:
        for fmt in formats:
            default_name, export, run = EXPORTERS[fmt]
            # a hidden name with the real suffix (torch.export.load wants .pt2)
            tmp = out_dir / f".tmp-{os.getpid()}-{default_name}"
            temporary[tmp] = tmp
            info = {"file": default_name, **export(model, example, tmp)}
            outputs = run(tmp, inputs, batch_size, info)
            check = compare_logits(reference[:-1], outputs[:-1], atol)  # the N samples
            alone = compare_logits(reference[-1:], outputs[-1:], atol)  # the batch-1 rerun
            check["max_abs_diff"] = max(check["max_abs_diff"], alone["max_abs_diff"])
            check["ok"] = check["ok"] and alone["ok"]
            if not check.pop("ok"):
                raise ExportMismatch(
                    f"the {fmt} export ({info['exporter']}) of the student does not match "
                    f"PyTorch on {len(inputs)} test inputs: max |logit difference| "
                    f"{check['max_abs_diff']:.3g} (tolerance atol={atol:g}), top-1 agreement "
                    f"{check['top1_agree']}/{check['top1_total']}"
                    + (f" ({check['reason']})" if "reason" in check else "")
                    + f"; nothing was kept in {out_dir}. A larger atol helps only if this is "
                    "float rounding."
                )
            temporary[tmp] = out_dir / info["file"]
            report["formats"][fmt] = {
                **info,
                **check,
                "sha256": file_sha256(tmp),
                "size_bytes": tmp.stat().st_size,
            }
        for tmp, final in temporary.items():
            os.replace(tmp, final)
        write_json(out_dir / EXPORT_JSON, report)  # last: its presence means every file passed
    finally:
        for tmp in temporary:
            tmp.unlink(missing_ok=True)
    return report


class WithInputs(nn.Module):
    """The student behind its data module's normalization: it takes the data as stored."""

    def __init__(self, normalize: nn.Module, student: nn.Module) -> None:
        super().__init__()
        self.normalize, self.student = normalize, student

    def forward(self, x: Tensor) -> Tensor:
        return self.student(self.normalize(x))


def deployable(
    student: nn.Module, dm: Any, max_samples: int | None = None, run: Run | None = None
) -> tuple[nn.Module, Tensor, dict[str, Any]]:
    """``(model, raw test inputs, export.json's input keys)``: the student with the data
    module's normalization in front (when it has one), the first ``max_samples`` test inputs
    as the data set stores them, and what a user of the file needs to know about them."""
    inputs = split_inputs(dm, max_samples, run)
    raw = dm.raw_input() if hasattr(dm, "raw_input") else None
    model = student
    if raw is not None and not raw.is_identity:
        model = WithInputs(raw.normalizer(), student)
        inputs = raw.to_raw(inputs)
    shape = ["batch", *(int(d) for d in inputs.shape[1:])]
    names = list(getattr(dm, "class_names", [])) or [str(i) for i in range(dm.num_classes)]
    meta = {
        "input": {"name": INPUT_NAME, "shape": shape, "dtype": "float32",
                  **(raw.as_dict() if raw is not None else {})},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", int(dm.num_classes)],
                   "dtype": "float32", "values": "logits, one per class (argmax: the class)"},
        "class_names": names,
    }  # fmt: skip
    return model, inputs, meta


def _meta(cfg: DictConfig, dm: Any, run_dir: Path) -> dict[str, Any]:
    return {
        "run_dir": str(run_dir.resolve()),
        "split": "test",
        "student": str(cfg.student.model._target_),
        "num_classes": int(dm.num_classes),
        "input_shape": list(dm.input_shape),
    }


def export_run(
    run_dir: str | Path,
    formats: Sequence[str] = FORMATS,
    atol: float = DEFAULT_ATOL,
    batch_size: int = 64,
    max_samples: int | None = 1024,
    data_overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Export the distilled student of a main-job run directory into ``RUN_DIR/export/``,
    checked on the first ``max_samples`` test inputs (``None``: the whole test split).

    The files take the inputs as the data set stores them (:func:`deployable`).
    ``data_overrides`` (``["data.root=/new/place"]``): the run's data moved since. Raises
    :class:`~kdlightning.job.rundir.RunDirError` for a folder that is not a finished
    distillation run of an image classifier (no config, no student.pt, damaged weights, a
    language model) or whose test data cannot be loaded."""
    formats = _check_args(formats, atol, batch_size)
    run = load_run(run_dir, data_overrides)
    model, inputs, meta = deployable(run.student, run.dm, max_samples, run)
    meta = {**_meta(run.cfg, run.dm, run.path), **meta}
    return export_student(model, inputs, run.path / "export", formats, atol, batch_size, meta)


# --- the main job's hook ------------------------------------------------------------------------
def ort_latency(
    path: str | Path,
    input_shape: Sequence[int],
    batch_size: int,
    threads: int = 1,
    warmup: int = 10,
    repeats: int = 20,
    min_run_time: float = 0.2,
) -> Latency:
    """ONNX Runtime latency of ``path`` (CPU, ``threads`` intra-op threads), timed like PyTorch
    models are in :mod:`kdlightning.deploy.measure`."""
    session = onnx_session(path, threads)
    x = np.random.default_rng(0).standard_normal((int(batch_size), *input_shape), np.float32)
    return time_call(
        lambda: session.run(None, {INPUT_NAME: x}), threads, warmup, repeats, min_run_time
    )


def export_job(cfg: DictConfig, student: nn.Module, dm: Any, output_dir: Path) -> dict[str, Any]:
    """``export=onnx|all`` of the main job: export into ``output_dir/export`` (printing where
    the files went and the check's figures), then the keys the distilled student's results
    gain (ONNX Runtime latency at batch 1 and at the benchmark batch, with the benchmark's
    thread count, and the path of export.json)."""
    formats = EXPORT_CHOICES[str(cfg.export)]
    out = output_dir / "export"
    model, inputs, meta = deployable(student, dm, max_samples=1024)
    meta = {**_meta(cfg, dm, output_dir), **meta}
    report = export_student(model, inputs, out, formats, meta=meta)
    print(f"\nexport={cfg.export}:\n{_summary(report)}\n{_written(report, out)}")
    b = benchmark_settings(cfg.benchmark)
    timing = {k: b[k] for k in ("threads", "warmup", "repeats", "min_run_time")}
    shape = dm.input_shape
    large = ort_latency(out / "student.onnx", shape, b["batch_size"], **timing)
    one = ort_latency(out / "student.onnx", shape, 1, **timing)
    return {
        **latency_keys(large, one, prefix="ort_"),
        "ort_latency_device": "cpu",
        "export": str(out / EXPORT_JSON),
    }


# --- command line -------------------------------------------------------------------------------
def _summary(report: dict[str, Any]) -> str:
    rows = [
        [
            fmt,
            r["file"],
            r["exporter"],
            f"{r['max_abs_diff']:.2e}",
            f"{r['top1_agree']}/{r['top1_total']}",
            f"{r['size_bytes'] / 1024:.1f}",
        ]
        for fmt, r in report["formats"].items()
    ]
    headers = ["format", "file", "exporter", "max abs diff", "same top-1", "KiB"]
    text = (
        f"{markdown_table(headers, rows)}\n\nchecked on {report['n_samples']} test inputs "
        f"against the PyTorch student, tolerance atol={report['atol']:g}"
    )
    spec = report.get("input") or {}
    if spec.get("values"):
        low_high = spec.get("value_range")
        span = f", values {low_high[0]:g}-{low_high[1]:g}" if low_high else ""
        shape = "(" + ", ".join(str(d) for d in spec["shape"]) + ")"
        text += (f"\ninput {spec['name']!r}: {spec['dtype']} {shape}{span} "
                 f"({spec['values']}); output {OUTPUT_NAME!r}: one logit per class")  # fmt: skip
    return text


def _written(report: dict[str, Any], out: Path) -> str:
    files = [r["file"] for r in report["formats"].values()] + [EXPORT_JSON]
    return f"written to {out}: {', '.join(files)}"


def main(argv: Sequence[str] | None = None) -> int:
    """``kdl-export RUN_DIR [data.KEY=VALUE ...] [--formats onnx torch_export] [--atol A]
    [--max-samples N]``; a user's mistake is one line ``error: ...`` and exit status 2."""
    parser = argparse.ArgumentParser(
        prog="kdl-export",
        description="Export a run's distilled student as ONNX and as a "
        "torch.export program, each checked against PyTorch on the test split.",
    )
    parser.add_argument("run_dir", type=Path, help="a main-job run directory (has student.pt)")
    parser.add_argument(
        "data_overrides",
        nargs="*",
        metavar="data.KEY=VALUE",
        help="change the run's data config, for data that moved: data.root=/new/place",
    )
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    parser.add_argument(
        "--atol",
        type=float,
        default=DEFAULT_ATOL,
        help="max |logit difference| allowed (default %(default)g)",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--max-samples",
        type=int,
        default=1024,
        help="test inputs to check on; 0: the whole test split",
    )
    args = parser.parse_args(argv)
    try:
        report = export_run(
            args.run_dir, args.formats, args.atol, args.batch_size, args.max_samples or None,
            args.data_overrides,
        )  # fmt: skip
    except (ExportError, RunDirError, ExportMismatch) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(_summary(report))
    print(f"\n{_written(report, Path(args.run_dir) / 'export')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
