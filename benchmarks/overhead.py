"""What Lightning and kdlightning add to a training step, measured against plain PyTorch loops.

    OMP_NUM_THREADS=1 python benchmarks/overhead.py                  # fashion_mnist-sized pair
    OMP_NUM_THREADS=1 python benchmarks/overhead.py --steps 300 --rounds 5
    OMP_NUM_THREADS=1 python benchmarks/overhead.py --pair mlp        # today's fashion pair

In one process, on the same models, batches and threads, it times N optimizer steps of:

- ``plain alone``: the student alone, a plain PyTorch loop (forward, cross-entropy, step);
- ``plain KD``: a plain PyTorch KD loop (teacher forward under no_grad + student + KD loss);
- ``lightning online``: ``DistillationModule`` through Lightning, the teacher on every batch;
- ``lightning cached``: the same with the teacher's logits computed once and looked up by index;
- ``lightning alone``: ``ClassifierModule`` through Lightning (for reference).

Rounds are interleaved (every variant once per round) and each variant's fastest round is kept,
which filters out the noise of a shared machine. The ratios printed are the issue's goals:
Lightning online / plain KD (goal <= 1.10) and Lightning cached / plain alone (goal <= 1.15).
The data are random tensors of the data set's shape (speed does not depend on pixel values),
served by the same whole-batch loader the data modules use.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from kdlightning.data.base import IndexedTensors, batch_as_is
from kdlightning.distill.functional import distillation_loss
from kdlightning.distill.modules import ClassifierModule, DistillationModule
from kdlightning.models import MLP, SmallCNN


def make_models(pair: str, input_shape: tuple[int, ...]) -> tuple[torch.nn.Module, torch.nn.Module]:
    if pair == "cnn":  # the pair the goals were set on: CNN teacher (33k) -> tiny CNN (2.1k)
        teacher = SmallCNN(10, input_shape, channels=[16, 32, 64], hidden=128, dropout=0.1)
        return teacher.eval(), SmallCNN(10, input_shape, channels=[8, 16], hidden=32)
    # today's experiment=fashion_mnist: CNN teacher (128k) -> MLP with 16 hidden units (12.7k)
    teacher = SmallCNN(10, input_shape, channels=[32, 64, 128], hidden=256, dropout=0.2)
    return teacher.eval(), MLP(10, input_shape, hidden_sizes=[16])


def loader(data: IndexedTensors, batch_size: int) -> DataLoader:
    return DataLoader(data, batch_size=batch_size, shuffle=True, drop_last=True,
                      collate_fn=batch_as_is)  # fmt: skip


def plain(student: torch.nn.Module, teacher: torch.nn.Module | None, dl: DataLoader,
          steps: int) -> None:  # fmt: skip
    opt = torch.optim.AdamW(student.parameters(), lr=3e-3)
    student.train()
    done = 0
    while done < steps:
        for x, y, _ in dl:
            if teacher is None:
                loss = F.cross_entropy(student(x), y)
            else:
                with torch.no_grad():
                    t = teacher(x)
                loss = distillation_loss(student(x), t, y, temperature=4.0, alpha=0.9)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                return


def lightning(module: L.LightningModule, dl: DataLoader, steps: int) -> None:
    trainer = L.Trainer(
        max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=dl)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--samples", type=int, default=8192)
    parser.add_argument(
        "--pair",
        choices=("cnn", "mlp"),
        default="cnn",
        help="cnn: CNN 33k -> CNN 2.1k; mlp: CNN 128k -> MLP 12.7k",
    )
    args = parser.parse_args()
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    shape = (1, 28, 28)
    g = torch.Generator().manual_seed(0)
    data = IndexedTensors(torch.randn(args.samples, *shape, generator=g),
                          torch.randint(0, 10, (args.samples,), generator=g))  # fmt: skip
    teacher, student = make_models(args.pair, shape)
    with torch.no_grad():
        cached = {"train": torch.cat([teacher(data.inputs[i : i + 1024])
                                      for i in range(0, args.samples, 1024)])}  # fmt: skip
    init = {k: v.clone() for k, v in student.state_dict().items()}

    def fresh() -> torch.nn.Module:
        student.load_state_dict(init)
        return student

    variants: dict[str, Callable[[], None]] = {
        "plain alone": lambda: plain(fresh(), None, loader(data, args.batch_size), args.steps),
        "plain KD": lambda: plain(fresh(), teacher, loader(data, args.batch_size), args.steps),
        "lightning online": lambda: lightning(
            DistillationModule(teacher, fresh(), 4.0, 0.9), loader(data, args.batch_size),
            args.steps),
        "lightning cached": lambda: lightning(
            DistillationModule(teacher, fresh(), 4.0, 0.9, teacher_logits=cached),
            loader(data, args.batch_size), args.steps),
        "lightning alone": lambda: lightning(
            ClassifierModule(fresh(), num_classes=10), loader(data, args.batch_size), args.steps),
    }  # fmt: skip
    best = {name: float("inf") for name in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    print(f"pair: {args.pair}, threads: {torch.get_num_threads()}, steps: {args.steps}, "
          f"batch: {args.batch_size}, "
          f"rounds: {args.rounds} (fastest kept)")  # fmt: skip
    for name, seconds in best.items():
        print(f"{name:18s} {seconds:7.3f} s  {1000 * seconds / args.steps:6.2f} ms/step")
    online = best["lightning online"] / best["plain KD"]
    cached_ratio = best["lightning cached"] / best["plain alone"]
    print(f"lightning online / plain KD    = {online:.3f}x (goal <= 1.10)")
    print(f"lightning cached / plain alone = {cached_ratio:.3f}x (goal <= 1.15)")
    print(f"plain KD / plain alone         = {best['plain KD'] / best['plain alone']:.3f}x")


if __name__ == "__main__":
    main()
