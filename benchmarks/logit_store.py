"""Memory and lookup cost of the cached-logit store, per process, on 2 DDP processes.

    OMP_NUM_THREADS=1 python benchmarks/logit_store.py                  # 200,000 x 1,000, k=5
    OMP_NUM_THREADS=1 python benchmarks/logit_store.py --rows 2000 --classes 100 --lookups 5 \\
        --rounds 1 --procs 1                              # seconds, in this process (the test's)

A synthetic store (``--rows`` x ``--classes`` random float32 logits, ImageNet-sized by default:
0.8 GB) is written once in four layouts (``kdlightning.distill.logit_store``):

* ``in-RAM float32``: ``tensors.pt`` read with ``torch.load(weights_only=True)``: what every
  process did before the store (one private copy per process);
* ``mmap float32`` / ``mmap float16``: a safetensors file, memory-mapped;
* ``mmap top-k``: the top ``--k`` values (float16) and class ids (int16) per row, memory-mapped.

Memory: for each layout a fresh pair of processes (``torch.multiprocessing``, a gloo process
group, as DDP ranks are) opens the store and looks up ``--lookups`` random batches of ``--batch``
rows each (every rank its own rows), reading its own ``/proc`` numbers with psutil: RSS (every
page it maps, file pages shared with the other rank included), USS (its private pages, what a
copy per process costs) and PSS (shared pages split between the processes that map them: the
sum over ranks is what the node pays). The files were just written, so the page cache is warm:
the numbers are the processes' own, not the disk's.

Lookup cost: one more pair of processes opens every layout and times ``table.lookup(rows)``
(gather the rows, build the dense float32 ``(batch, classes)`` logits a step uses) in
interleaved rounds, every layout once per round, the median per batch of the fastest round kept;
ratios are to ``in-RAM float32`` in the same processes.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from kdlightning.distill.logit_store import (
    LogitTable,
    open_tables,
    save_tables,
    tables,
    to_layout,
)

LAYOUTS = ("in-RAM float32", "mmap float32", "mmap float16", "mmap top-k")
MiB = 2**20


def write_store(folder: Path, rows: int, classes: int, k: int) -> dict[str, int]:
    """The four layouts' files in ``folder``; their sizes in bytes."""
    g = torch.Generator().manual_seed(0)
    logits = {"train": 3 * torch.randn(rows, classes, generator=g)}
    torch.save(logits, folder / "full32.pt")
    save_tables(to_layout(logits), folder / "full32.safetensors")
    save_tables(to_layout(logits, "float16"), folder / "full16.safetensors")
    save_tables(to_layout(logits, "float16", topk=k), folder / "topk.safetensors")
    names = ("full32.pt", "full32.safetensors", "full16.safetensors", "topk.safetensors")
    return {layout: (folder / n).stat().st_size for layout, n in zip(LAYOUTS, names, strict=True)}


def open_layout(folder: Path, layout: str, classes: int) -> LogitTable:
    """One layout's ``train`` table, opened as the job opens it."""
    if layout == "in-RAM float32":
        loaded = torch.load(folder / "full32.pt", map_location="cpu", weights_only=True)
        return tables(loaded, classes)["train"]
    name = {"mmap float32": "full32", "mmap float16": "full16", "mmap top-k": "topk"}[layout]
    return tables(open_tables(folder / f"{name}.safetensors"), classes)["train"]


def memory_mib() -> dict[str, float]:
    """This process's RSS, USS and PSS in MiB (Linux /proc via psutil)."""
    info = psutil.Process().memory_full_info()
    return {"rss": info.rss / MiB, "uss": info.uss / MiB, "pss": info.pss / MiB}


def _random_rows(n: int, rows: int, batch: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, rows, (batch,), generator=g) for _ in range(n)]


def _memory_worker(rank: int, args: argparse.Namespace, layout: str, port: int) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=args.procs)  # fmt: skip
    before = memory_mib()
    start = time.perf_counter()
    table = open_layout(args.dir, layout, args.classes)
    opened_s = time.perf_counter() - start
    dist.barrier()
    after_open = memory_mib()
    for rows in _random_rows(args.lookups, args.rows, args.batch, seed=100 + rank):
        table.lookup(rows)
    dist.barrier()  # both ranks hold their pages now: PSS splits the shared ones
    after = memory_mib()
    out = {"before": before, "after_open": after_open, "after_lookups": after, "open_s": opened_s}
    (args.dir / f"mem_{LAYOUTS.index(layout)}_{rank}.json").write_text(json.dumps(out))
    dist.destroy_process_group()


def _timing_worker(rank: int, args: argparse.Namespace, port: int) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=args.procs)  # fmt: skip
    opened = {layout: open_layout(args.dir, layout, args.classes) for layout in LAYOUTS}
    batches = _random_rows(args.lookups, args.rows, args.batch, seed=200 + rank)
    for table in opened.values():  # warm-up: first touches of the pages, allocator
        for rows in batches[:3]:
            table.lookup(rows)
    best: dict[str, float] = {}
    for _ in range(args.rounds):
        for layout, table in opened.items():
            times = []
            for rows in batches:
                t0 = time.perf_counter()
                table.lookup(rows)
                times.append(time.perf_counter() - t0)
            med = statistics.median(times)
            best[layout] = min(best.get(layout, float("inf")), med)
        dist.barrier()
    (args.dir / f"time_{rank}.json").write_text(json.dumps(best))
    dist.destroy_process_group()


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _launch(worker: Any, args: tuple[Any, ...], procs: int) -> None:
    # --procs 1 runs in this process (the test's seconds-long mode: no interpreter start-ups)
    if procs == 1:
        worker(0, *args)
    else:
        mp.spawn(worker, args=args, nprocs=procs, join=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Write the store, run the memory and timing pairs; the per-layout figures."""
    sizes = write_store(args.dir, args.rows, args.classes, args.k)
    memory = {}
    for layout in LAYOUTS:
        _launch(_memory_worker, (args, layout, _port()), args.procs)
        ranks = [json.loads((args.dir / f"mem_{LAYOUTS.index(layout)}_{r}.json").read_text())
                 for r in range(args.procs)]  # fmt: skip
        memory[layout] = ranks
        gc.collect()
    _launch(_timing_worker, (args, _port()), args.procs)
    timing = [json.loads((args.dir / f"time_{r}.json").read_text()) for r in range(args.procs)]
    return {"sizes": sizes, "memory": memory, "timing": timing}


def table(result: dict[str, Any], args: argparse.Namespace) -> str:
    """The markdown table: file size, memory per process (mean over ranks), lookup cost."""
    lines = [
        f"{args.rows:,} x {args.classes:,} logits, top-k k={args.k}, {args.procs} processes, "
        f"{args.lookups} random batches of {args.batch} rows per process",
        "",
        "| layout | file (MiB) | RSS after open | RSS after lookups | USS after lookups "
        "| PSS after lookups | open (s) | lookup ms/batch | vs in-RAM |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    base = statistics.mean(t["in-RAM float32"] for t in result["timing"])

    def mean(ranks: list[dict[str, Any]], when: str, what: str) -> float:
        return statistics.mean(r[when][what] - r["before"][what] for r in ranks)

    for layout in LAYOUTS:
        ranks = result["memory"][layout]
        ms = statistics.mean(t[layout] for t in result["timing"])
        lines.append(
            f"| {layout} | {result['sizes'][layout] / MiB:.1f} "
            f"| {mean(ranks, 'after_open', 'rss'):.1f} | {mean(ranks, 'after_lookups', 'rss'):.1f} "
            f"| {mean(ranks, 'after_lookups', 'uss'):.1f} "
            f"| {mean(ranks, 'after_lookups', 'pss'):.1f} "
            f"| {statistics.mean(r['open_s'] for r in ranks):.2f} | {1e3 * ms:.3f} "
            f"| {ms / base:.2f}x |"
        )
    lines.append("")
    lines.append("memory: MiB per process, growth over the process before opening the store "
                 "(mean of the ranks)")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lookups", type=int, default=200, help="batches per process")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=None, help="where the store is written")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        args.dir = Path(tmp)
        result = run(args)
    print(table(result, args))
    print(f"\nwall {time.perf_counter() - start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
