"""Size and CPU speed of the Fashion-MNIST students against the teacher (issue 22's bar: a
student >= 10x smaller and >= 5x faster at batch 256), measured in one process.

    OMP_NUM_THREADS=1 python benchmarks/fashion_students_speed.py [--rounds 3] [--batch 256]

Each model's forward (eval mode, no grad) is timed with ``torch.utils.benchmark``'s
``blocked_autorange`` in interleaved rounds (teacher, students, teacher, ...), so that a load
change on a shared machine hits every model alike; the median over rounds is reported, and each
speed-up is a ratio of medians from the same rounds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence

import torch
import torch.utils.benchmark as tb

from kdlightning.models import MLP, SmallCNN

SHAPE = (1, 28, 28)
MODELS = {
    "teacher: cnn 32-64-128, hidden 256": lambda: SmallCNN(
        num_classes=10, input_shape=SHAPE, channels=(32, 64, 128), hidden=256, dropout=0.2
    ),
    "student=cnn: 8-16, hidden 32": lambda: SmallCNN(
        num_classes=10, input_shape=SHAPE, channels=(8, 16), hidden=32
    ),
    "cnn 16-32, hidden 64": lambda: SmallCNN(
        num_classes=10, input_shape=SHAPE, channels=(16, 32), hidden=64
    ),
    "student=mlp16": lambda: MLP(num_classes=10, input_shape=SHAPE, hidden_sizes=[16]),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--min-run-time", type=float, default=0.3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    x = torch.randn(args.batch, *SHAPE)
    models = {name: make().eval() for name, make in MODELS.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            with torch.no_grad():
                timer = tb.Timer("m(x)", globals={"m": model, "x": x})
                times[name].append(timer.blocked_autorange(min_run_time=args.min_run_time).median)
    teacher_name = next(iter(models))
    teacher_params = sum(p.numel() for p in models[teacher_name].parameters())
    teacher_ms = statistics.median(times[teacher_name]) * 1e3
    print(f"| model | parameters | fewer | ms per batch of {args.batch} | faster |")
    print("|---|---|---|---|---|")
    for name, model in models.items():
        params = sum(p.numel() for p in model.parameters())
        ms = statistics.median(times[name]) * 1e3
        print(f"| {name} | {params:,} | {teacher_params / params:.1f}x | {ms:.2f} | "
              f"{teacher_ms / ms:.1f}x |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
