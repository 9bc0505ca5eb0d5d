"""The teacher / student-alone / distilled-student comparison the main job prints.

from kdlightning.deploy.compare import comparison_table
print(comparison_table(json.load(open("results.json"))))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

ROLES = (("teacher", "teacher"), ("baseline", "student alone"), ("distilled", "distilled student"))


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table, columns padded so it also reads well in a terminal."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def ratios(results: Mapping[str, Mapping[str, Any]], role: str) -> tuple[float, float]:
    """(compression, speed-up) of ``role`` against the teacher: params and latency ratios."""
    teacher, model = results["teacher"], results[role]
    return teacher["params"] / model["params"], teacher["latency_ms"] / model["latency_ms"]


def comparison_title(results: Mapping[str, Any]) -> str:
    """One line saying what the table compares: the KD settings and which labels each model had."""
    s = results.get("summary", {})
    if s.get("task") == "classify":
        return "The teacher trained alone on hard labels (task=classify)"
    # Only what the method has: kd=dml has no alpha, and alpha means another weight in dkd/dist.
    parts = [f"kd={s['method']}"] if s.get("method") else []
    parts += [f"{k}={s[k]:g}" for k in ("temperature", "alpha") if s.get(k) is not None]
    setting = ", ".join([*parts, f"seed {s.get('seed')}"])
    if s.get("num_labeled") is None:
        return f"Distillation with every training label ({setting})"
    return (
        f"Distillation on a transfer set ({setting}): the student alone learns from "
        f"{s['num_labeled']} labeled training images; the distilled student from the same labels "
        "plus the teacher's outputs on every training image, labeled or not; the teacher had "
        "every label"
    )


def _ms(r: Mapping[str, Any], key: str) -> str:
    """``median (IQR)`` in ms for ``key`` (``latency_ms``, ...); older results lack the IQR."""
    if r.get(key) is None:
        return "-"
    iqr = r.get(key.replace("latency_ms", "latency_iqr_ms"))
    return f"{r[key]:.3f}" + ("" if iqr is None else f" ({iqr:.3f})")


def _threads(n: Any) -> str:
    return f"{n} thread" + ("" if n == 1 else "s")


def latency_note(results: Mapping[str, Mapping[str, Any]]) -> str:
    """The line under the table saying how latency was measured (threads, device, batch)."""
    measured = [results[k] for k, _ in ROLES if k in results]
    if not measured or "latency_threads" not in measured[0]:
        return "latency: median ms per forward of a batch, on the CPU"
    r = measured[0]
    note = (
        f"latency: median (IQR) ms per forward, torch.utils.benchmark, "
        f"{_threads(r['latency_threads'])}, {r.get('latency_device', 'cpu')}, batch "
        f"{r.get('latency_batch_size', '?')} and batch 1"
    )
    ort = next((m for m in measured if m.get("ort_latency_ms") is not None), None)
    if ort is not None:
        note += (
            f"; ORT: the exported student.onnx under ONNX Runtime, "
            f"{_threads(ort.get('ort_latency_threads'))}, {ort.get('ort_latency_device')}"
        )
    return note + "; speed-up: the teacher's latency / the model's, measured in this process"


def comparison_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown table of accuracy, size and latency for each model present in ``results``, then
    :func:`latency_note`. An ``ORT`` column appears when the student was exported (export=onnx).
    """
    present = [(key, label) for key, label in ROLES if key in results]
    batch = next((results[k].get("latency_batch_size") for k, _ in present), None)
    at = f"b{batch}" if batch else "batch"
    ort = any(results[k].get("ort_latency_ms") is not None for k, _ in present)
    headers = ["model", "test acc", "val acc", "params", "size (KiB)", f"ms {at} (IQR)",
               "ms b1", *([f"ORT ms {at} (IQR)"] if ort else []), "compression", "speed-up",
               "fit (s)"]  # fmt: skip
    rows = []
    for key, label in present:
        r = results[key]
        compression, speedup = ratios(results, key)
        val = r.get("val/acc")
        rows.append(
            [
                label,
                f"{100 * r['test/acc']:.2f}%",
                "-" if val is None else f"{100 * val:.2f}%",
                f"{r['params']:,}",
                f"{r['size_bytes'] / 1024:.1f}",
                _ms(r, "latency_ms"),
                "-" if r.get("latency_ms_b1") is None else f"{r['latency_ms_b1']:.3f}",
                *([_ms(r, "ort_latency_ms")] if ort else []),
                f"{compression:.1f}x",
                f"{speedup:.1f}x",
                "-" if r.get("fit_seconds") is None else f"{r['fit_seconds']:.1f}",
            ]
        )
    return f"{markdown_table(headers, rows)}\n\n{latency_note(results)}"
