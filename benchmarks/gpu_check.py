"""bf16-mixed distillation on one GPU: training samples/s and peak memory, student alone vs KD.

    python benchmarks/gpu_check.py            # one GPU, CIFAR-sized ResNets, about a minute
    python benchmarks/gpu_check.py --smoke    # tiny models on whatever device there is (tests)

A CIFAR-shaped synthetic data set (3x32x32, 10 classes) lives on the GPU, so the loader costs
nothing and the figures are the models' own. The teacher is a ResNet-50 and the student a
ResNet-18, both with the CIFAR stem (3x3 conv, no max-pool). Both runs use the same Lightning
Trainer settings as ``trainer=gpu`` (bf16-mixed); the distillation run adds the frozen
teacher's forward pass. Each run also checks that the training loss stays float32 while the
student's logits are bf16 (the KD loss upcasts inside). Prints one Markdown table.

Then the real job runs end to end on the GPU (``debug=fast``): ``trainer=gpu`` and, as FSDP
needs a GPU in Lightning, ``trainer=fsdp trainer.devices=1``; a second table gives each exit
status and distilled validation accuracy. ``--smoke`` runs ``trainer=cpu`` there instead.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler, TensorDataset
from torchvision.models import resnet18, resnet50

from kdlightning.deploy.compare import markdown_table
from kdlightning.distill.modules import ClassifierModule, DistillationModule
from kdlightning.models import MLP, SmallCNN


def cifar_resnet(builder: Any, num_classes: int = 10) -> nn.Module:
    """A torchvision ResNet with the CIFAR stem: 32x32 inputs keep their resolution."""
    model = builder(num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


class StepTimer(L.Callback):
    """Times the training steps after ``warmup`` and checks the dtypes bf16 autocast gives."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start: float | None = None
        self.steps = 0
        self.loss_dtypes: set[torch.dtype] = set()

    def _sync(self, module: L.LightningModule) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_batch_start(self, trainer: L.Trainer, module: Any, batch: Any, idx: int) -> None:
        if idx == self.warmup:
            self._sync(module)
            self.start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, module: Any, outputs: Any, batch: Any, idx: int
    ) -> None:
        self.loss_dtypes.add(outputs["loss"].dtype)
        if idx >= self.warmup:
            self.steps += 1

    def elapsed(self, module: L.LightningModule) -> float:
        self._sync(module)
        assert self.start is not None, "fewer steps than warm-up steps"
        return time.perf_counter() - self.start


def measure(module: L.LightningModule, loader: DataLoader, args: argparse.Namespace) -> dict:
    """Train ``module`` for ``args.steps`` steps; samples/s after warm-up and peak memory."""
    timer = StepTimer(args.warmup)
    trainer = L.Trainer(
        accelerator=args.accelerator, devices=1, precision="bf16-mixed", max_steps=args.steps,
        limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
    )  # fmt: skip
    cuda = torch.cuda.is_available() and args.accelerator != "cpu"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(module, loader)
    seconds = timer.elapsed(module)
    assert timer.loss_dtypes == {torch.float32}, f"training loss dtypes {timer.loss_dtypes}"
    x = loader.dataset.tensors[0][: args.batch_size].to(module.device)  # type: ignore[attr-defined]
    with trainer.precision_plugin.forward_context():
        logits_dtype = module(x).dtype
    return {
        "samples/s": timer.steps * args.batch_size / seconds,
        "ms/step": 1000 * seconds / timer.steps,
        "peak MiB": torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan"),
        "logits": str(logits_dtype).removeprefix("torch."),
        "loss": ",".join(sorted(str(d).removeprefix("torch.") for d in timer.loss_dtypes)),
    }


def cli_runs(trainer_args: list[list[str]], timeout_s: int = 150) -> list[list[str]]:
    """Run ``python -m kdlightning.train debug=fast <args>``; one table row per run."""
    rows = []
    for args in trainer_args:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "kdlightning.train", "debug=fast", "baseline=false",
                   *args, f"hydra.run.dir={tmp}"]  # fmt: skip
            start = time.perf_counter()
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
                status, tail = str(proc.returncode), proc.stdout[-1500:] + proc.stderr[-1500:]
            except subprocess.TimeoutExpired:
                status, tail = f"timeout {timeout_s}s", ""
            seconds = time.perf_counter() - start
            results = Path(tmp) / "results.json"
            acc = (
                json.loads(results.read_text())["distilled"]["val/acc"]
                if results.exists()
                else None
            )
            if status != "0":
                print(f"--- {' '.join(args)} failed ({status}):\n{tail}", flush=True)
        rows.append(
            [" ".join(args), status, f"{seconds:.0f}", "-" if acc is None else f"{acc:.3f}"]
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, any device (tests)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--image-size", type=int, default=32)
    args = parser.parse_args()
    if args.smoke:
        args.batch_size, args.steps, args.warmup, args.image_size = 8, 3, 1, 8
    args.accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    if not args.smoke and args.accelerator == "cpu":
        raise SystemExit("no GPU found: run with --smoke for the CPU check of this script")
    device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")
    torch.backends.cudnn.benchmark = True

    n = args.batch_size * args.steps  # one epoch holds every step: no loader restart
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, args.image_size, args.image_size, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    data = TensorDataset(x.to(device), y.to(device))
    # One gather per batch (the sampler yields index lists), not one indexing op per sample.
    batches = BatchSampler(SequentialSampler(data), args.batch_size, drop_last=True)
    loader = DataLoader(data, sampler=batches, batch_size=None)

    L.seed_everything(0, verbose=False)
    if args.smoke:  # bf16 on a CPU is emulated and slow: tiny models check the plumbing only
        shape = (3, args.image_size, args.image_size)
        names = ("SmallCNN", "MLP")
        teacher = SmallCNN(num_classes=10, input_shape=shape, channels=[8, 16], hidden=16)
        make_student = functools.partial(MLP, num_classes=10, input_shape=shape, hidden_sizes=[16])
    else:
        names = ("ResNet-50", "ResNet-18")
        teacher = cifar_resnet(resnet50)
        make_student = functools.partial(cifar_resnet, resnet18)
    rows = []
    for name, module in (
        (f"student alone ({names[1]})", ClassifierModule(make_student(), num_classes=10)),
        (f"distill {names[0]} -> {names[1]}", DistillationModule(teacher, make_student())),
    ):
        r = measure(module, loader, args)
        rows.append([name, f"{r['samples/s']:,.0f}", f"{r['ms/step']:.2f}",
                     f"{r['peak MiB']:,.0f}", r["logits"], r["loss"]])  # fmt: skip
        print(name, r, flush=True)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"\n{where}, bf16-mixed, batch {args.batch_size}, {args.image_size}x{args.image_size}, "
          f"{args.steps - args.warmup} timed steps after {args.warmup} warm-up, "
          f"torch {torch.__version__}\n")  # fmt: skip
    headers = ["run", "samples/s", "ms/step", "peak GPU MiB", "student logits", "loss"]
    print(markdown_table(headers, rows))

    runs = (
        [["trainer=cpu"]]
        if args.smoke
        else [["trainer=gpu"], ["trainer=fsdp", "trainer.devices=1"]]
    )
    print("\npython -m kdlightning.train debug=fast baseline=false ...\n")
    print(markdown_table(["overrides", "exit", "seconds", "distilled val/acc"], cli_runs(runs)))


if __name__ == "__main__":
    main()
