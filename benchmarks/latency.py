"""Latency of a run's models, measured side by side in one process: teacher, student alone and
distilled student in PyTorch, and the exported distilled student under ONNX Runtime.

    OMP_NUM_THREADS=1 python benchmarks/latency.py logs/distill/runs/<dir>
    python benchmarks/latency.py RUN_DIR --threads 4 --batch-size 64 --min-run-time 1
    python benchmarks/latency.py RUN_DIR --device cuda       # PyTorch rows on the GPU

Every figure is a median (IQR) per forward from ``torch.utils.benchmark.Timer``
(:func:`kdlightning.deploy.measure.time_call`), with the same thread count for PyTorch and
ONNX Runtime
(``intra_op_num_threads``), at batch 1 and at batch N. The speed-ups divide figures of this one
process. The models come from the run directory: ``student.pt`` and ``config.yaml``, the teacher
and the baseline from ``teacher/result`` and ``baseline/result``; the ONNX file is the run's
checked ``export/student.onnx`` (``kdl-export RUN_DIR``), else one exported and checked here into
a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import onnxruntime
import torch

from kdlightning.deploy.compare import markdown_table
from kdlightning.deploy.export import export_student, ort_latency
from kdlightning.deploy.measure import Latency, benchmark_settings, resolve_device, torch_latency
from kdlightning.job.rundir import RunDirError, load_run, load_stage_model, split_inputs

LABELS = {"teacher": "teacher", "baseline": "student alone", "distilled": "distilled student"}


def checked_onnx(run_dir: Path, student: torch.nn.Module, dm: object, tmp: Path) -> Path:
    """The run's export/student.onnx if export.json vouches for it, else a fresh checked one."""
    report = run_dir / "export" / "export.json"
    if report.is_file() and "onnx" in json.loads(report.read_text()).get("formats", {}):
        return run_dir / "export" / "student.onnx"
    export_student(student, split_inputs(dm, 256), tmp, formats=("onnx",))
    return tmp / "student.onnx"


def cell(lat: Latency) -> str:
    return f"{lat.median_ms:.3f} ({lat.iqr_ms:.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--batch-size", type=int, help="batch N (default: the run's benchmark)")
    parser.add_argument("--threads", type=int, help="torch and ORT threads (default: the run's)")
    parser.add_argument("--min-run-time", type=float, default=0.5, help="seconds per figure")
    parser.add_argument("--device", default="cpu", help="PyTorch rows: cpu, cuda or auto")
    args = parser.parse_args()
    try:
        run = load_run(args.run_dir)
    except RunDirError as err:
        parser.exit(1, f"benchmarks/latency.py: error: {err}\n")
    bench = benchmark_settings(run.cfg.get("benchmark") or {})
    batch = args.batch_size or bench["batch_size"]
    timing = {"threads": args.threads or bench["threads"], "warmup": bench["warmup"],
              "repeats": bench["repeats"], "min_run_time": args.min_run_time}  # fmt: skip
    device = resolve_device(args.device)
    shape = tuple(run.dm.input_shape)

    models = {"distilled": run.student}
    for stage in ("teacher", "baseline"):
        try:
            models[stage] = load_stage_model(run, stage)
        except RunDirError as err:  # baseline=false runs have no baseline: leave the row out
            print(f"(no {LABELS[stage]} row: {err})")
    figures: dict[str, tuple[Latency, Latency]] = {}
    for stage in ("teacher", "baseline", "distilled"):
        if stage in models:
            figures[f"{LABELS[stage]} (PyTorch, {device})"] = tuple(
                torch_latency(models[stage], shape, b, device=device, **timing) for b in (1, batch)
            )
    with tempfile.TemporaryDirectory() as tmp:
        onnx = checked_onnx(run.path, run.student, run.dm, Path(tmp))
        figures["distilled student (ONNX Runtime, cpu)"] = tuple(
            ort_latency(onnx, shape, b, **timing) for b in (1, batch)
        )

    base = next(iter(figures.values()))  # the teacher's row when the run kept its teacher
    rows = [
        [name, cell(one), cell(big), f"{base[0].median_ms / one.median_ms:.1f}x",
         f"{base[1].median_ms / big.median_ms:.1f}x"]
        for name, (one, big) in figures.items()
    ]  # fmt: skip
    headers = ["model", "ms b1 (IQR)", f"ms b{batch} (IQR)", "speed-up b1", f"speed-up b{batch}"]
    print(markdown_table(headers, rows))
    threads = f"{timing['threads']} thread" + ("" if timing["threads"] == 1 else "s")
    print(
        f"\nmedian (IQR) per forward, torch.utils.benchmark, {threads} for "
        f"torch and ONNX Runtime, >= {args.min_run_time:g} s per figure; speed-up: the first "
        f"row / each row, all measured in this process. torch {torch.__version__}, onnxruntime "
        f"{onnxruntime.__version__}, {os.cpu_count()} CPUs visible."
    )


if __name__ == "__main__":
    main()
