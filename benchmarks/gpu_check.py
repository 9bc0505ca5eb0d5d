"""bf16-mixed distillation on one GPU: samples/s online vs cached vs on-device, vs a plain loop.

    python benchmarks/gpu_check.py            # one GPU, resnet32x4 -> resnet8x4 (sized for < 5 min)
    python benchmarks/gpu_check.py --smoke    # tiny models on whatever device there is (tests)

The CIFAR-100 pair of the KD literature (resnet32x4, 7.4M parameters -> resnet8x4, 1.2M) on a
CIFAR-100-shaped synthetic set (3x32x32, 100 classes; speed does not depend on pixel values).
Every run is bf16-mixed with the Trainer settings of ``trainer=gpu``, and prints samples/s,
ms/step (after warm-up) and peak GPU memory:

- ``plain loop``: the student alone, then plain KD (teacher under no_grad), in a hand-written
  PyTorch loop with bf16 autocast on device-resident batches: what the others compare against,
  on the same card in the same process;
- ``student alone``: ``ClassifierModule`` through Lightning, batches on the device;
- ``online`` / ``cached``: ``DistillationModule`` with the teacher on every batch / its logits
  computed once, fed by a DataLoader from host memory (``data.on_device=false``, batches copied
  to the GPU each step) or by whole-tensor batches already on the GPU (``data.on_device=auto``,
  :mod:`kdlightning.data.fast`).

The ratios printed are Lightning's cost over the plain loop on this card: cached on-device /
plain alone (issue 20's goal on CPU: <= 1.15 for a CNN pair) and online on-device / plain KD
(<= 1.10). Each run also checks that the training loss stays float32 while the student's logits
are bf16 (the KD loss upcasts inside).

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
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from kdlightning.data.base import EpochShuffler, IndexedTensors, batch_as_is
from kdlightning.data.fast import TensorBatches
from kdlightning.deploy.compare import markdown_table
from kdlightning.distill.functional import distillation_loss
from kdlightning.distill.modules import ClassifierModule, DistillationModule
from kdlightning.models import MLP, SmallCNN
from kdlightning.models.cifar import resnet8x4, resnet32x4


class StepTimer(L.Callback):
    """Times the training steps after ``warmup`` and checks the dtypes bf16 autocast gives."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start: float | None = None
        self.steps = 0
        self.loss_dtypes: set[torch.dtype] = set()

    def _sync(self, module: L.LightningModule) -> None:
        _sync(module.device)

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


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float:
    return (
        torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    )


def measure(module: L.LightningModule, batches: Iterable, x: Tensor, args: argparse.Namespace,
            device: torch.device) -> dict:  # fmt: skip
    """Train ``module`` for ``args.steps`` steps; samples/s after warm-up and peak memory."""
    timer = StepTimer(args.warmup)
    trainer = L.Trainer(
        accelerator=args.accelerator, devices=1, precision="bf16-mixed", max_steps=args.steps,
        limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
    )  # fmt: skip
    _peak_reset(device)
    trainer.fit(module, train_dataloaders=batches)
    seconds = timer.elapsed(module)
    assert timer.loss_dtypes == {torch.float32}, f"training loss dtypes {timer.loss_dtypes}"
    with trainer.precision_plugin.forward_context():
        logits_dtype = module(x[: args.batch_size].to(module.device)).dtype
    return {
        "samples/s": timer.steps * args.batch_size / seconds,
        "ms/step": 1000 * seconds / timer.steps,
        "peak MiB": _peak_mib(device),
        "logits": str(logits_dtype).removeprefix("torch."),
        "loss": ",".join(sorted(str(d).removeprefix("torch.") for d in timer.loss_dtypes)),
    }


def plain_loop(student: nn.Module, teacher: nn.Module | None, batches: TensorBatches,
               args: argparse.Namespace, device: torch.device) -> dict:  # fmt: skip
    """The hand-written bf16 loop on device-resident batches: the comparison point."""
    student.to(device).train()
    if teacher is not None:
        teacher.to(device).eval()
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3, weight_decay=1e-4)
    done, start = 0, time.perf_counter()
    _peak_reset(device)
    while done < args.steps:
        batches.set_epoch(done)
        for x, y, _ in batches:
            if done == args.warmup:
                _sync(device)
                start = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16):
                s = student(x)
                if teacher is None:
                    loss = F.cross_entropy(s.float(), y)
                else:
                    with torch.no_grad():
                        t = teacher(x)
                    loss = distillation_loss(s, t, y, temperature=4.0, alpha=0.9)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done == args.steps:
                break
    _sync(device)
    seconds = time.perf_counter() - start
    steps = args.steps - args.warmup
    return {"samples/s": steps * args.batch_size / seconds, "ms/step": 1000 * seconds / steps,
            "peak MiB": _peak_mib(device), "logits": "bfloat16",
            "loss": str(loss.dtype).removeprefix("torch.")}  # fmt: skip


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    args.samples = args.batch_size * 40  # several epochs in a run: loader restarts included
    args.accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    if not args.smoke and args.accelerator == "cpu":
        raise SystemExit("no GPU found: run with --smoke for the CPU check of this script")
    device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")
    torch.backends.cudnn.benchmark = True

    classes = 10 if args.smoke else 100
    shape = (3, args.image_size, args.image_size)
    g = torch.Generator().manual_seed(0)
    data = IndexedTensors(torch.randn(args.samples, *shape, generator=g),
                          torch.randint(0, classes, (args.samples,), generator=g))  # fmt: skip
    L.seed_everything(0, verbose=False)
    if args.smoke:  # bf16 on a CPU is emulated and slow: tiny models check the plumbing only
        names = ("SmallCNN", "MLP")
        teacher = SmallCNN(num_classes=classes, input_shape=shape, channels=[8, 16], hidden=16)
        make_student: Callable[[], nn.Module] = functools.partial(
            MLP, num_classes=classes, input_shape=shape, hidden_sizes=[16]
        )
    else:  # the teacher is untrained: its speed, not its accuracy, is measured
        names = ("resnet32x4", "resnet8x4")
        teacher = resnet32x4(classes, shape)
        make_student = functools.partial(resnet8x4, classes, shape)
    teacher.eval()
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
        on_gpu = teacher.to(device)
        logits = torch.cat([on_gpu(data.inputs[i : i + 512].to(device)).float().cpu()
                            for i in range(0, args.samples, 512)])  # fmt: skip
    cached = {"train": logits}
    bs = args.batch_size

    def host_loader() -> DataLoader:  # data.on_device=false: batches copied each step
        return DataLoader(data, batch_size=bs, sampler=EpochShuffler(args.samples, 0),
                          drop_last=True, collate_fn=batch_as_is,
                          pin_memory=device.type == "cuda")  # fmt: skip

    def on_device() -> TensorBatches:  # data.on_device=auto
        return TensorBatches(data.inputs, data.targets, data.positions, bs, train=True,
                             device=device)  # fmt: skip

    def kd(logits: dict[str, Tensor] | None) -> DistillationModule:
        return DistillationModule(teacher, make_student(), teacher_logits=logits)

    t, s = names  # teacher, student
    runs: list[tuple[str, Callable[[], dict]]] = [
        (f"plain loop, {s} alone, on device",
         lambda: plain_loop(make_student(), None, on_device(), args, device)),
        (f"plain loop, KD {t} -> {s}, on device",
         lambda: plain_loop(make_student(), teacher, on_device(), args, device)),
        (f"student alone ({s}), on device",
         lambda: measure(ClassifierModule(make_student(), num_classes=classes), on_device(),
                         data.inputs, args, device)),
        ("distill online, DataLoader", lambda: measure(kd(None), host_loader(), data.inputs,
                                                       args, device)),
        ("distill cached, DataLoader", lambda: measure(kd(cached), host_loader(), data.inputs,
                                                       args, device)),
        ("distill online, on device", lambda: measure(kd(None), on_device(), data.inputs, args,
                                                      device)),
        ("distill cached, on device", lambda: measure(kd(cached), on_device(), data.inputs, args,
                                                      device)),
    ]  # fmt: skip
    rows, speed = [], {}
    for name, run in runs:
        r = run()
        speed[name] = r["samples/s"]
        rows.append([name, f"{r['samples/s']:,.0f}", f"{r['ms/step']:.2f}",
                     f"{r['peak MiB']:,.0f}", r["logits"], r["loss"]])  # fmt: skip
        print(name, r, flush=True)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"\n{where}, bf16-mixed, {t} -> {s}, {classes} classes, batch {bs}, "
          f"{args.image_size}x{args.image_size}, {args.steps - args.warmup} timed steps after "
          f"{args.warmup} warm-up, torch {torch.__version__}\n")  # fmt: skip
    headers = ["run", "samples/s", "ms/step", "peak GPU MiB", "student logits", "loss"]
    print(markdown_table(headers, rows))
    plain_alone, plain_kd = speed[runs[0][0]], speed[runs[1][0]]
    cached_dev, cached_host = (
        speed["distill cached, on device"],
        speed["distill cached, DataLoader"],
    )
    print(f"\ncompared with the plain loop on the same card (time per step, lower is better):\n"
          f"  distill cached, on device / plain alone = "
          f"{plain_alone / cached_dev:.3f}x (CPU goal <= 1.15)\n"
          f"  distill online, on device / plain KD    = "
          f"{plain_kd / speed['distill online, on device']:.3f}x (CPU goal <= 1.10)\n"
          f"  distill cached, DataLoader / on device  = "
          f"{cached_dev / cached_host:.3f}x")  # fmt: skip

    cli_args = (
        [["trainer=cpu"]]
        if args.smoke
        else [["trainer=gpu"], ["trainer=fsdp", "trainer.devices=1"]]
    )
    print("\npython -m kdlightning.train debug=fast baseline=false ...\n")
    print(markdown_table(["overrides", "exit", "seconds", "distilled val/acc"], cli_runs(cli_args)))


if __name__ == "__main__":
    main()
