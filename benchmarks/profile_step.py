"""Where a training step's time goes: cProfile of Lightning fitting a bare module vs ours.

    OMP_NUM_THREADS=1 python benchmarks/profile_step.py                 # cached KD, MLP-16 student
    OMP_NUM_THREADS=1 python benchmarks/profile_step.py --module bare   # cross-entropy only
    OMP_NUM_THREADS=1 python benchmarks/profile_step.py --top 25 --steps 2000

The batches are ready tensors (a list, no DataLoader), so what is left is Lightning's loop plus
the module's own work. Prints the functions with the most own time (``tottime``) per step, in
microseconds, and the module's per-step total for comparison with the other modules.
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import pstats
import sys
import time
from pathlib import Path

import lightning as L
import torch
from torch import Tensor, nn

from kdlightning.distill.modules import ClassifierModule, DistillationModule

sys.path.insert(0, str(Path(__file__).resolve().parent))  # overhead.py, beside this script
from overhead import Bare, Ready, make_models


def build(name: str, teacher: nn.Module, student: nn.Module, cached: Tensor) -> L.LightningModule:
    if name == "bare":
        return Bare(student)
    if name == "classifier":
        return ClassifierModule(student, num_classes=10)
    return DistillationModule(teacher, student, teacher_logits={"train": cached})


def fit(module: L.LightningModule, batches: list, steps: int) -> None:
    trainer = L.Trainer(
        max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=Ready(batches))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", choices=("bare", "classifier", "cached"), default="cached")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args(argv)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    g = torch.Generator().manual_seed(0)
    n, bs, shape = 8192, 128, (1, 28, 28)
    x, y = torch.randn(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g)
    teacher, student = make_models("mlp", shape)  # CNN 128k -> MLP-16, as overhead.py --pair mlp
    with torch.no_grad():
        cached = torch.cat([teacher(x[i : i + 1024]) for i in range(0, n, 1024)])
    batches = [(x[i : i + bs], y[i : i + bs], torch.arange(i, i + bs)) for i in range(0, n, bs)]
    fit(build(args.module, teacher, student, cached), batches, 50)  # warm-up, not profiled
    module = build(args.module, teacher, student, cached)
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    fit(module, batches, args.steps)
    profiler.disable()
    seconds = time.perf_counter() - start
    print(f"{args.module}: {1000 * seconds / args.steps:.3f} ms/step under cProfile "
          f"({args.steps} steps, start-up included)")  # fmt: skip
    stats = pstats.Stats(profiler)
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[: args.top]  # type: ignore[attr-defined]
    print(f"{'own us/step':>11} {'cum us/step':>11} {'calls/step':>10}  function")
    for (file, line, func), (_, calls, own, cum, _) in rows:
        where = file.split("site-packages/")[-1].removeprefix(str(Path.cwd()) + "/")
        print(f"{1e6 * own / args.steps:11.1f} {1e6 * cum / args.steps:11.1f} "
              f"{calls / args.steps:10.1f}  {func} ({where}:{line})")  # fmt: skip


if __name__ == "__main__":
    main()
