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
import time

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlightning.distill.modules import ClassifierModule, DistillationModule
from kdlightning.models import MLP, SmallCNN


class Bare(L.LightningModule):
    """The floor: cross-entropy, no logging, no metrics."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        return F.cross_entropy(self.model(batch[0]), batch[1])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=1e-3, weight_decay=1e-4)


class Ready:
    """Ready batches as one iterable (Lightning would take a plain list for several loaders)."""

    def __init__(self, batches: list) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.batches)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", choices=("bare", "classifier", "cached"), default="cached")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    g = torch.Generator().manual_seed(0)
    n, bs, shape = 8192, 128, (1, 28, 28)
    x, y = torch.randn(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g)
    teacher = SmallCNN(10, shape, channels=[32, 64, 128], hidden=256).eval()
    with torch.no_grad():
        cached = torch.cat([teacher(x[i : i + 1024]) for i in range(0, n, 1024)])
    batches = [(x[i : i + bs], y[i : i + bs], torch.arange(i, i + bs)) for i in range(0, n, bs)]
    student = MLP(10, shape, hidden_sizes=[16])
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
        where = file.split("site-packages/")[-1].split("wt-perf/")[-1]
        print(f"{1e6 * own / args.steps:11.1f} {1e6 * cum / args.steps:11.1f} "
              f"{calls / args.steps:10.1f}  {func} ({where}:{line})")  # fmt: skip


if __name__ == "__main__":
    main()
