"""The teacher / student-alone / distilled-student comparison the main job prints.

from kdlightning.compare import comparison_table
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
    setting = (
        f"T={s.get('temperature', '?'):g}, alpha={s.get('alpha', '?'):g}, seed {s.get('seed')}"
    )
    if s.get("num_labeled") is None:
        return f"Distillation with every training label ({setting})"
    return (
        f"Distillation on a transfer set ({setting}): the student alone learns from "
        f"{s['num_labeled']} labeled training images; the distilled student from the same labels "
        "plus the teacher's outputs on every training image, labeled or not; the teacher had "
        "every label"
    )


def comparison_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown table of accuracy, size and latency for each model present in ``results``."""
    headers = ["model", "test acc", "val acc", "params", "size (KiB)", "latency (ms)",
               "compression", "speed-up", "fit (s)"]  # fmt: skip
    rows = []
    for key, label in ROLES:
        if key not in results:
            continue
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
                f"{r['latency_ms']:.3f}",
                f"{compression:.1f}x",
                f"{speedup:.1f}x",
                "-" if r.get("fit_seconds") is None else f"{r['fit_seconds']:.1f}",
            ]
        )
    return markdown_table(headers, rows)
