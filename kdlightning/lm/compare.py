"""The language-model comparison: loss, perplexity, bits per byte, size, speed and a sample.

    from kdlightning.lm.compare import lm_costs, lm_table
    results["distilled"].update(lm_costs(student, dm, cfg.benchmark))
    print(lm_table(results))

Bits per byte (bpb) is the loss in nats per token / ln 2 / UTF-8 bytes per token (1 for the
byte-level default): comparable across tokenizers, unlike perplexity and bits per token (the
loss / ln 2, the tokenizer's own unit; equal to bpb for bytes). Generation speed is the
tokens per second of sampling ``sample_tokens`` new tokens one at a time from a fixed prompt
(batch 1, CPU, no key/value cache: each step re-reads the whole context, as the GPT does).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from kdlightning.deploy.compare import ROLES, markdown_table, ratios
from kdlightning.deploy.measure import count_parameters, state_dict_bytes, time_call
from kdlightning.lm.data import TextDataModule
from kdlightning.lm.gpt import sample


@torch.no_grad()
def lm_costs(
    model: nn.Module, dm: TextDataModule, sample_tokens: int = 64, repeats: int = 3, seed: int = 0
) -> dict[str, Any]:
    """``params``, ``size_bytes``, ``latency_ms`` (one forward of a full block, batch 1),
    ``tokens_per_s`` (sampling) and ``sample`` (the prompt and its continuation, as text)."""
    cpu = copy.deepcopy(model).to("cpu").eval()
    block = dm.block_size
    ids = torch.randint(0, dm.vocab_size, (1, block), generator=torch.Generator().manual_seed(0))
    # one warm-up call (allocator and kernel choice settle), then the median of single calls
    latency = time_call(lambda: cpu(ids), threads=torch.get_num_threads(), warmup=1,
                        repeats=max(1, int(repeats)), min_run_time=0.0)  # fmt: skip
    prompt = dm.prompt(min(32, block // 2)).unsqueeze(0)
    start = time.perf_counter()
    out = sample(cpu, prompt, sample_tokens, block, temperature=0.8, top_k=20,
                 generator=torch.Generator().manual_seed(int(seed)))  # fmt: skip
    seconds = time.perf_counter() - start
    return {
        "params": count_parameters(model),
        "size_bytes": state_dict_bytes(model),
        "latency_ms": latency.median_ms,
        "tokens_per_s": sample_tokens / seconds,
        "sample": {
            "prompt": dm.tokenizer.decode(prompt[0].tolist()),
            "continuation": dm.tokenizer.decode(out[0, prompt.shape[1] :].tolist()),
        },
    }


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _one_line(text: str, width: int = 70) -> str:
    flat = " ".join(text.replace("`", "'").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def lm_title(results: Mapping[str, Any]) -> str:
    s = results.get("summary", {})
    if s.get("task") == "classify":
        return "The teacher language model trained alone (task=classify)"
    return (
        f"Token-level distillation ({s.get('method', '?')}, T={s.get('temperature', '?'):g}, "
        f"alpha={s.get('alpha', '?'):g}, seed {s.get('seed')})"
    )


def lm_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown table per model, then one short sample per model."""
    headers = ["model", "test bpb", "val bpb", "test bits/token", "test ppl", "test loss",
               "params", "size (KiB)", "tokens/s", "compression", "fit (s)"]  # fmt: skip
    rows, samples = [], []
    for key, label in ROLES:
        if key not in results:
            continue
        r = results[key]
        compression, _ = ratios(results, key)
        rows.append([
            label, _fmt(r.get("test/bpb"), ".4f"), _fmt(r.get("val/bpb"), ".4f"),
            _fmt(r.get("test/bpt"), ".4f"), _fmt(r.get("test/ppl"), ".3f"),
            _fmt(r.get("test/loss"), ".4f"), f"{r['params']:,}",
            f"{r['size_bytes'] / 1024:.1f}", _fmt(r.get("tokens_per_s"), ".0f"),
            f"{compression:.1f}x", _fmt(r.get("fit_seconds"), ".1f"),
        ])  # fmt: skip
        if r.get("sample"):
            prompt, cont = r["sample"]["prompt"], r["sample"]["continuation"]
            samples.append(f"- {label}: `{_one_line(prompt, 30)}` → `{_one_line(cont)}`")
    text = markdown_table(headers, rows)
    return text + ("\n\nSamples (T=0.8, top-k 20):\n" + "\n".join(samples) if samples else "")
