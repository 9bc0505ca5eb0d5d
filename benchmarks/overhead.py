"""What Lightning and kdlightning add to a training step, measured against plain PyTorch loops.

    OMP_NUM_THREADS=1 python benchmarks/overhead.py --pair mlp --steps 300 --rounds 5
    OMP_NUM_THREADS=1 python benchmarks/overhead.py --pair cnn --steps 300 --rounds 5

In one process, on the same models, batches and threads, it times N optimizer steps of:

- ``plain alone``: the student alone, a plain PyTorch loop (forward, cross-entropy, step);
- ``plain KD``: a plain PyTorch KD loop (teacher forward under no_grad + student + KD loss);
- ``plain KD cached``: the same loop with the teacher's logits looked up by sample index: what
  the KD loss itself costs over cross-entropy, with no framework;
- ``bare (loader)`` / ``bare (tensors)`` / ``bare (fast)``: a bare LightningModule
  (cross-entropy, nothing logged) on the data modules' DataLoader / on ready tensor batches
  (Lightning's own loop, the floor) / on the whole-tensor batches below;
- ``alone``: ``ClassifierModule`` through Lightning (the student-alone stage);
- ``online`` / ``cached``: ``DistillationModule``, the teacher run on every batch / its logits
  computed once and looked up by index, on the DataLoader (``data.on_device=false``) and on the
  whole-tensor batches of ``kdlightning.data.fast`` (``fast``; ``data.on_device=auto``);
- ``cached (fast), bar``: the same with a progress bar on, as a user runs the job: Lightning's
  default bar (Rich when installed, else tqdm redrawn every batch) and the job's
  (``conf/callbacks/default.yaml``'s ``progress_bar``), each writing to a file as when the
  output is piped (a terminal only adds drawing).

Each run's fixed start-up (Trainer, fit set-up, first batches) is reported apart from its per-step
time, timed from step ``--warmup`` on, as the process's CPU time (one thread: the work done, not the
waits for a core on a shared machine; ``--clock wall`` for wall time). Rounds are interleaved (every
variant once per round) and each variant's fastest round is kept, which filters out the noise of a
shared machine. The ratios printed are the goals: cached (fast) / plain alone <= 2.0 for the MLP
pair (issue 20; the floor is ``bare (tensors)``), and for the CNN pair online / plain KD <= 1.10 and
cached / plain alone <= 1.15; cached minus bare (on the same batches) within 0.2 ms per step. That
difference is then split: ``plain KD cached`` minus ``plain alone`` is what the KD loss itself
costs, with no framework; the rest is the module's own bookkeeping; the bar rows minus ``cached
(fast)`` are what the bar adds. The data are random tensors of Fashion-MNIST's shape (speed does not
depend on pixel values).

As in the job, torch's NVML probe is skipped on a machine without the NVIDIA driver
(:mod:`kdlightning.job.nvml`: Lightning's import asks for it, and it costs ~70 µs on every AdamW
step there); ``--nvml-probe keep`` times every variant with it, as before that change.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import Tensor, nn
from torch.utils.data import DataLoader

from kdlightning.data.base import EpochShuffler, IndexedTensors, batch_as_is
from kdlightning.data.fast import TensorBatches
from kdlightning.distill.functional import distillation_loss
from kdlightning.distill.modules import ClassifierModule, DistillationModule
from kdlightning.job.nvml import skip_nvml_probe_without_driver
from kdlightning.models import MLP, SmallCNN


def make_models(pair: str, input_shape: tuple[int, ...]) -> tuple[torch.nn.Module, torch.nn.Module]:
    if pair == "cnn":  # the pair the goals were set on: CNN teacher (33k) -> tiny CNN (2.1k)
        teacher = SmallCNN(10, input_shape, channels=[16, 32, 64], hidden=128, dropout=0.1)
        return teacher.eval(), SmallCNN(10, input_shape, channels=[8, 16], hidden=32)
    # today's experiment=fashion_mnist: CNN teacher (128k) -> MLP with 16 hidden units (12.7k)
    teacher = SmallCNN(10, input_shape, channels=[32, 64, 128], hidden=256, dropout=0.2)
    return teacher.eval(), MLP(10, input_shape, hidden_sizes=[16])


def loader(data: IndexedTensors, batch_size: int) -> DataLoader:
    """What ``data.on_device=false`` serves (kdlightning.data.base.make_loader)."""
    return DataLoader(data, batch_size=batch_size, sampler=EpochShuffler(len(data), 0),
                      drop_last=True, collate_fn=batch_as_is)  # fmt: skip


def fast(data: IndexedTensors, batch_size: int) -> TensorBatches:
    """What ``data.on_device=auto`` serves."""
    return TensorBatches(data.inputs, data.targets, data.positions, batch_size, train=True)


class Ready:
    """Ready tensor batches, one iterable (Lightning reads a plain list as several loaders)."""

    def __init__(self, batches: list[tuple[Tensor, ...]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.batches)


class Bare(L.LightningModule):
    """The floor: cross-entropy and AdamW, nothing logged, no metrics."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        return F.cross_entropy(self.model(batch[0]), batch[1])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=3e-3)


class Clock:
    """Start-up (until step ``warmup`` begins) and per-step time after it, read from ``now``:
    the process's CPU time by default (one thread: the work done, whatever else the machine
    runs; on a shared machine wall time also counts the waits for a core), else wall time."""

    def __init__(self, warmup: int, now: Callable[[], float] = time.process_time) -> None:
        self.warmup, self.now = warmup, now
        self.launch = now()
        self.first = self.last = self.launch
        self.steps = 0

    def step_start(self, i: int) -> None:
        if i == self.warmup:
            self.first = self.now()

    def step_end(self, i: int) -> None:
        self.last, self.steps = self.now(), i + 1

    def split(self) -> tuple[float, float]:
        per_step = (self.last - self.first) / (self.steps - self.warmup)
        return (self.last - self.launch) - self.steps * per_step, per_step


class ClockCallback(L.Callback):
    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        self.clock.step_start(trainer.global_step)

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        self.clock.step_end(trainer.global_step - 1)


def plain(student: torch.nn.Module, teacher: torch.nn.Module | Tensor | None, dl: Iterable,
          steps: int, clock: Clock) -> None:  # fmt: skip
    """A plain loop: the student alone (``teacher=None``), KD with the teacher run on each
    batch (a module), or KD with its logits looked up by the batch's sample index (a tensor)."""
    opt = torch.optim.AdamW(student.parameters(), lr=3e-3)
    student.train()
    done = 0
    while done < steps:
        for x, y, index in dl:
            clock.step_start(done)
            if teacher is None:
                loss = F.cross_entropy(student(x), y)
            else:
                if isinstance(teacher, Tensor):
                    t = teacher.index_select(0, index)
                else:
                    with torch.no_grad():
                        t = teacher(x)
                loss = distillation_loss(student(x), t, y, temperature=4.0, alpha=0.9)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            clock.step_end(done)
            done += 1
            if done == steps:
                return


#: The job's progress bar: conf/callbacks/default.yaml's entry, as the job instantiates it.
CALLBACKS_YAML = Path(__file__).resolve().parents[1] / "conf" / "callbacks" / "default.yaml"


def job_bar() -> L.Callback:
    return instantiate(OmegaConf.load(CALLBACKS_YAML).progress_bar)


def lightning(module: L.LightningModule, dl: Iterable, steps: int, clock: Clock,
              bar: str = "off") -> None:  # fmt: skip
    """``bar``: ``off``, ``lightning`` (the Trainer's default bar) or ``job`` (:func:`job_bar`);
    a bar writes to a temporary file (the bars write to stdout)."""
    callbacks = [ClockCallback(clock), *([job_bar()] if bar == "job" else [])]
    trainer = L.Trainer(
        max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=bar != "off", enable_model_summary=False, limit_val_batches=0,
        num_sanity_val_steps=0, callbacks=callbacks,
    )  # fmt: skip
    with tempfile.TemporaryFile("w+") as out, contextlib.redirect_stdout(out):
        trainer.fit(module, train_dataloaders=dl)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=20, help="steps left out of ms/step")
    parser.add_argument(
        "--clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="cpu: the process's CPU time (robust on a shared machine)",
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--samples", type=int, default=8192)
    parser.add_argument(
        "--pair",
        choices=("cnn", "mlp"),
        default="cnn",
        help="cnn: CNN 33k -> CNN 2.1k; mlp: CNN 128k -> MLP 12.7k",
    )
    parser.add_argument("--nvml-probe", choices=("skip", "keep"), default="skip",
                        help="skip: as the job does where no NVIDIA driver is")  # fmt: skip
    args = parser.parse_args(argv)
    skipped = args.nvml_probe == "skip" and skip_nvml_probe_without_driver()
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

    ready = Ready(
        [
            data.__getitems__(range(i, i + args.batch_size))
            for i in range(0, args.samples - args.batch_size + 1, args.batch_size)
        ]
    )
    bs, n = args.batch_size, args.steps

    def kd(logits: dict[str, Tensor] | None = None) -> DistillationModule:
        return DistillationModule(teacher, fresh(), 4.0, 0.9, teacher_logits=logits)

    variants: dict[str, Callable[[Clock], None]] = {
        "plain alone": lambda c: plain(fresh(), None, loader(data, bs), n, c),
        "plain KD": lambda c: plain(fresh(), teacher, loader(data, bs), n, c),
        "plain KD cached": lambda c: plain(fresh(), cached["train"], loader(data, bs), n, c),
        "bare (loader)": lambda c: lightning(Bare(fresh()), loader(data, bs), n, c),
        "bare (tensors)": lambda c: lightning(Bare(fresh()), ready, n, c),
        "bare (fast)": lambda c: lightning(Bare(fresh()), fast(data, bs), n, c),
        "alone (loader)": lambda c: lightning(ClassifierModule(fresh(), num_classes=10),
                                              loader(data, bs), n, c),
        "online (loader)": lambda c: lightning(kd(), loader(data, bs), n, c),
        "cached (loader)": lambda c: lightning(kd(cached), loader(data, bs), n, c),
        "online (fast)": lambda c: lightning(kd(), fast(data, bs), n, c),
        "cached (fast)": lambda c: lightning(kd(cached), fast(data, bs), n, c),
        "cached (fast), Lightning's bar": lambda c: lightning(kd(cached), fast(data, bs), n, c,
                                                              "lightning"),
        "cached (fast), job's bar": lambda c: lightning(kd(cached), fast(data, bs), n, c, "job"),
    }  # fmt: skip
    if args.pair == "mlp":  # the 128k teacher's forward is the whole online step: CNN pair only
        for name in ("plain KD", "online (loader)", "online (fast)"):
            del variants[name]
    best = {name: (float("inf"), float("inf")) for name in variants}
    started = time.perf_counter()
    for _ in range(args.rounds):
        for name, fn in variants.items():
            clock = Clock(
                args.warmup, time.perf_counter if args.clock == "wall" else time.process_time
            )
            fn(clock)
            startup, per_step = clock.split()
            best[name] = (min(best[name][0], startup), min(best[name][1], per_step))
    print(f"pair: {args.pair}, threads: {torch.get_num_threads()}, steps: {n} "
          f"({args.warmup} warm-up), batch: {bs}, rounds: {args.rounds} (fastest kept), "
          f"clock: {args.clock}, NVML probe: {'skipped' if skipped else 'as Lightning set it'}, "
          f"wall {time.perf_counter() - started:.0f} s")  # fmt: skip
    print(f"{'variant':30s} {'ms/step':>8s} {'x plain':>8s} {'start-up s':>10s}")
    ms = {name: 1000 * per_step for name, (_, per_step) in best.items()}
    for name, (startup, _) in best.items():
        print(f"{name:30s} {ms[name]:8.3f} {ms[name] / ms['plain alone']:8.2f} {startup:10.3f}")

    def ratio(a: str, b: str, goal: str) -> None:
        print(f"{a + ' / ' + b:36s} = {ms[a] / ms[b]:.3f}x ({goal})")

    ratio("cached (fast)", "plain alone", "MLP goal <= 2.0, CNN goal <= 1.15")
    ratio("cached (loader)", "plain alone", "the DataLoader path")
    ratio("bare (tensors)", "plain alone", "Lightning's floor")
    if "plain KD" in ms:
        ratio("online (fast)", "plain KD", "CNN goal <= 1.10")
        ratio("online (loader)", "plain KD", "the DataLoader path")
    for a, b in (("cached (loader)", "bare (loader)"), ("cached (fast)", "bare (fast)")):
        print(f"{a + ' - ' + b:36s} = {ms[a] - ms[b]:+.3f} ms/step (goal <= 0.2)")
    # What the KD loss itself adds, with no framework: a lookup, the KD term and a cross-entropy
    # in place of a cross-entropy. The rest of cached - bare is the module's own bookkeeping.
    loss_cost = ms["plain KD cached"] - ms["plain alone"]
    print(f"{'plain KD cached - plain alone':36s} = {loss_cost:+.3f} ms/step (the loss itself)")
    for path, bare in (("loader", "bare (loader)"), ("fast", "bare (fast)")):
        own = ms[f"cached ({path})"] - ms[bare] - loss_cost
        print(f"{'module own cost beyond the loss, ' + path:36s} = {own:+.3f} ms/step")
    lightning_bar = L.Trainer(logger=False).progress_bar_callback  # the one Lightning picks here
    for who, bar in (("Lightning's", lightning_bar), ("job's", job_bar())):
        added = ms[f"cached (fast), {who} bar"] - ms["cached (fast)"]
        label = f"progress bar, {who} ({type(bar).__name__})"
        print(f"{label:36s} = {added:+.3f} ms/step")


if __name__ == "__main__":
    main()
