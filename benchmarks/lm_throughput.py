"""Language-model training throughput (tokens/s): distillation vs the student alone vs a plain
PyTorch loop, on the GPT pair of ``experiment=lm_pydocs``; and what the chunked KL costs.

    OMP_NUM_THREADS=1 python benchmarks/lm_throughput.py                 # 60 steps x 3 rounds
    OMP_NUM_THREADS=1 python benchmarks/lm_throughput.py --steps 100 --rounds 5
    OMP_NUM_THREADS=1 python benchmarks/lm_throughput.py --steps 2 --rounds 1 --max-documents 40 \\
        --kl-shapes 2x16x256 --kl-reps 1 --no-peak                      # seconds (the test's)

Throughput: the teacher, student, data (pydocs, 64-byte blocks, batch 32), optimizer and
``kd=forward_kl`` settings (T, alpha, ``chunk_size``, ``teacher_topk``) are composed from
``conf/`` as ``python -m kdlightning.train experiment=lm_pydocs`` would. The teacher keeps its
initial weights (training it would change no step's cost). In one process, same threads and
batches, every variant trains ``--steps`` optimizer steps:

- ``plain alone``: the student, a plain PyTorch loop (forward, next-token cross-entropy, step);
- ``plain KD online``: a plain loop running the teacher under no_grad, forward KL + CE;
- ``lightning alone``: ``LMModule`` through Lightning (the job's student-alone stage);
- ``lightning online``: ``LMDistillationModule``, the teacher on every batch;
- ``lightning cached top-k``: the same, the teacher's top-k logits computed once
  (``kdlightning.lm.cached``, not timed) and looked up by block index.

Lightning is timed from ``on_train_start`` to ``on_train_end`` (the steps, not the Trainer's
set-up); rounds are interleaved (every variant once per round), each variant's fastest round is
kept. tokens/s counts every input token of the batches (steps x batch x block).

Chunked KL: ``kdlightning.lm.losses.forward_kl`` forward + backward on random ``(batch, seq,
vocab)`` logits, unchunked (``chunk_size=None``) vs chunked; time is the median of ``--kl-reps``
(interleaved), peak memory the growth of the peak resident set (``VmHWM``, Linux) of a fresh
process (torch and the losses imported, nothing else) that runs one forward + backward, over
its resident set (psutil) just before: torch's CPU allocator gives large blocks back to the
system, so an RSS delta read after the fact would miss the peak, and tracemalloc does not see
torch's allocations at all.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor, nn

from kdlightning.job.build import optimizer_factories
from kdlightning.job.tasks.text import build_lm
from kdlightning.lm.cached import compute_topk
from kdlightning.lm.losses import forward_kl, next_token_ce
from kdlightning.lm.module import LMDistillationModule, LMModule

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def job_config(max_documents: int | None) -> DictConfig:
    """``experiment=lm_pydocs`` as the job composes it (fewer documents for a quick run)."""
    overrides = ["experiment=lm_pydocs"]
    if max_documents:
        overrides.append(f"data.max_documents={max_documents}")
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose("train", overrides=overrides)


class Clock(L.Callback):
    """Wall time of the training loop alone (not the Trainer's set-up)."""

    seconds = 0.0

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.seconds = time.perf_counter() - self.start


def lightning(module: L.LightningModule, loader: Any, steps: int) -> float:
    clock = Clock()
    trainer = L.Trainer(
        max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        num_sanity_val_steps=0, callbacks=[clock],
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=loader)
    return clock.seconds


def plain(
    student: nn.Module, teacher: nn.Module | None, loader: Any, steps: int, kd: DictConfig,
    make_optimizer: Callable[..., torch.optim.Optimizer],
) -> float:  # fmt: skip
    """A plain PyTorch loop: the same losses as the modules, no framework."""
    opt = make_optimizer(student.parameters())
    student.train()
    chunk = kd.get("chunk_size")
    done, start = 0, time.perf_counter()
    while done < steps:
        for x, y, mask, _ in loader:
            logits = student(x)
            loss = next_token_ce(logits, y, mask, chunk)
            if teacher is not None:
                with torch.no_grad():
                    t = teacher(x)
                kl = forward_kl(logits, t, mask, kd.temperature, chunk)
                loss = kd.alpha * kl + (1 - kd.alpha) * loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                break
    return time.perf_counter() - start


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    """Fastest-round seconds per variant and the tokens of one run."""
    cfg = job_config(args.max_documents)
    L.seed_everything(0)
    dm = instantiate(cfg.data)
    dm.setup("fit")
    teacher = build_lm(cfg.teacher.model, dm, "teacher").eval()
    student = build_lm(cfg.student.model, dm, "student")
    init = {k: v.clone() for k, v in student.state_dict().items()}
    kd, k = cfg.kd, int(cfg.kd.teacher_topk)
    topk = compute_topk(teacher, dm, k)
    factories = optimizer_factories(cfg)
    common = {"vocab_size": dm.vocab_size, "chunk_size": kd.get("chunk_size"), **factories}
    distill = {"method": "forward_kl", "temperature": kd.temperature, "alpha": kd.alpha}

    def fresh() -> nn.Module:
        student.load_state_dict(init)
        return student

    def loader() -> Any:
        return dm.loader(dm.split("train"), train=True, shard=False)

    variants: dict[str, Callable[[], float]] = {
        "plain alone": lambda: plain(fresh(), None, loader(), args.steps, kd,
                                     factories["optimizer"]),
        "plain KD online": lambda: plain(fresh(), teacher, loader(), args.steps, kd,
                                         factories["optimizer"]),
        "lightning alone": lambda: lightning(LMModule(fresh(), **common), loader(), args.steps),
        "lightning online": lambda: lightning(
            LMDistillationModule(teacher, fresh(), **distill, **common), loader(), args.steps),
        "lightning cached top-k": lambda: lightning(
            LMDistillationModule(teacher, fresh(), teacher_topk=topk, **distill, **common),
            loader(), args.steps),
    }  # fmt: skip
    best = {name: float("inf") for name in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            best[name] = min(best[name], fn())
    tokens = args.steps * int(dm.batch_size) * int(dm.block_size)
    return {"seconds": best, "tokens": tokens, "topk": k, "batch": int(dm.batch_size),
            "block": int(dm.block_size), "chunk_size": kd.get("chunk_size")}  # fmt: skip


def _kl_inputs(shape: tuple[int, int, int]) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    s = torch.randn(*shape, generator=g).requires_grad_(True)
    return s, torch.randn(*shape, generator=g), torch.ones(shape[:2], dtype=torch.bool)


def kl_step(s: Tensor, t: Tensor, mask: Tensor, chunk: int | None) -> None:
    forward_kl(s, t, mask, 1.0, chunk).backward()
    s.grad = None


# A fresh interpreter that imports torch and the losses only (no Lightning: its imports would
# set a higher peak than a small loss): the peak's growth over one forward + backward, in MiB.
_PEAK_CHILD = """
import sys, psutil, torch
from kdlightning.lm.losses import forward_kl
shape, chunk = tuple(int(x) for x in sys.argv[1].split("x")), eval(sys.argv[2])
g = torch.Generator().manual_seed(0)
s = torch.randn(*shape, generator=g).requires_grad_(True)
t, mask = torch.randn(*shape, generator=g), torch.ones(shape[:2], dtype=torch.bool)
before = psutil.Process().memory_info().rss
forward_kl(s, t, mask, 1.0, chunk).backward()
# VmHWM: this address space's peak (ru_maxrss would carry the forking parent's peak over)
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print((int(hwm.split()[1]) * 1024 - before) / 2**20)
"""


def peak_growth_mib(shape: str, chunk: int | None) -> float:
    """The peak resident set's growth over one forward + backward, in a fresh process."""
    # the caller's PYTHONPATH wins: the same kdlightning as this process (e.g. another checkout's)
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", str(ROOT))}
    out = subprocess.run([sys.executable, "-c", _PEAK_CHILD, shape, repr(chunk)], check=True,
                         capture_output=True, text=True, env=env).stdout  # fmt: skip
    return max(0.0, float(out.split()[-1]))


def chunked_kl(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for text in args.kl_shapes:
        shape = tuple(int(x) for x in text.split("x"))
        assert len(shape) == 3, f"--kl-shapes takes BxLxV, got {text}"
        s, t, mask = _kl_inputs(shape)  # type: ignore[arg-type]
        chunks: list[int | None] = [None, *args.kl_chunks]
        times: dict[int | None, list[float]] = {c: [] for c in chunks}
        for c in chunks:  # warm-up
            kl_step(s, t, mask, c)
        for _ in range(args.kl_reps):
            for c in chunks:
                start = time.perf_counter()
                kl_step(s, t, mask, c)
                times[c].append(time.perf_counter() - start)
        for c in chunks:
            peak = None
            if not args.no_peak:
                peak = peak_growth_mib(text, c)
            rows.append({"shape": text, "chunk": c, "ms": 1e3 * statistics.median(times[c]),
                         "peak_mib": peak})  # fmt: skip
    return rows


def report(tp: dict[str, Any], kl: list[dict[str, Any]], args: argparse.Namespace) -> str:
    sec = tp["seconds"]
    lines = [
        f"experiment=lm_pydocs GPT pair, batch {tp['batch']} x block {tp['block']}, "
        f"kd=forward_kl chunk_size={tp['chunk_size']}, top-k k={tp['topk']}, {args.steps} steps, "
        f"{args.rounds} interleaved rounds (fastest kept), {torch.get_num_threads()} thread(s)",
        "",
        "| variant | tokens/s | ms/step | time vs lightning alone |",
        "|---|---|---|---|",
    ]
    for name, s in sec.items():
        lines.append(f"| {name} | {tp['tokens'] / s:,.0f} | {1e3 * s / args.steps:.1f} "
                     f"| {s / sec['lightning alone']:.2f}x |")  # fmt: skip
    goal = sec["lightning cached top-k"] / sec["lightning alone"]
    lines += [
        "",
        f"lightning cached top-k / lightning alone = {goal:.2f}x (goal <= 1.3)",
        f"lightning alone / plain alone = {sec['lightning alone'] / sec['plain alone']:.2f}x",
        f"lightning online / plain KD online = "
        f"{sec['lightning online'] / sec['plain KD online']:.2f}x",
        "",
    ]
    return "\n".join(lines) + "\n" + report_kl(kl)


def report_kl(kl: list[dict[str, Any]]) -> str:
    lines = [
        "| KL logits (BxLxV) | chunk_size | fwd+bwd ms | vs unchunked | peak RSS growth (MiB) |",
        "|---|---|---|---|---|",
    ]
    base = {r["shape"]: r["ms"] for r in kl if r["chunk"] is None}
    for r in kl:
        peak = "n/a" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        lines.append(f"| {r['shape']} | {r['chunk'] or 'none'} | {r['ms']:.1f} "
                     f"| {r['ms'] / base[r['shape']]:.2f}x | {peak} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-documents", type=int, default=None)
    parser.add_argument("--kl-shapes", nargs="+", default=["32x64x256", "4x256x32000"])
    parser.add_argument("--kl-chunks", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--kl-reps", type=int, default=5)
    parser.add_argument("--no-peak", action="store_true", help="skip the peak-memory processes")
    parser.add_argument("--kl-only", action="store_true", help="the chunked-KL table alone")
    args = parser.parse_args(argv)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    start = time.perf_counter()
    kl = chunked_kl(args)
    if args.kl_only:
        print(report_kl(kl))
    else:
        tp = throughput(args)
        print(report(tp, kl, args))
    print(f"\nwall {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
