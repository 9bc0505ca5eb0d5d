"""Accuracy against size and speed: the teacher, the student alone and the distilled student.

    from kdlightning.figures import tradeoff_figure
    fig = tradeoff_figure(json.load(open("RUN_DIR/results.json")))
    fig.savefig("tradeoff.png")

Left: test accuracy against parameters; right: against latency (the job's median CPU forward
of a batch); both axes of size and time on a log scale, since the models differ by orders of
magnitude. An arrow shows what distillation added to the same student.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from kdlightning.deploy.compare import ROLES

COLORS = {"teacher": "tab:blue", "baseline": "tab:gray", "distilled": "tab:orange"}


def _points(results: Mapping[str, Any], key: str) -> list[tuple[str, str, float, float]]:
    """(role, label, x, test accuracy in %) of each role whose results hold ``key``."""
    out = []
    for role, label in ROLES:
        r = results.get(role) or {}
        if isinstance(r.get("test/acc"), int | float) and isinstance(r.get(key), int | float):
            out.append((role, label, float(r[key]), 100.0 * float(r["test/acc"])))
    return out


def _panel(ax: Axes, points: list[tuple[str, str, float, float]], xlabel: str) -> None:
    for role, label, x, acc in points:
        ax.scatter([x], [acc], s=90, color=COLORS[role], zorder=3, label=label)
        ax.annotate(f"{label}\n{acc:.1f}%", (x, acc), textcoords="offset points",
                    xytext=(9, -4), fontsize=9, va="center")  # fmt: skip
    by_role = {role: (x, acc) for role, _, x, acc in points}
    if "baseline" in by_role and "distilled" in by_role:
        (x0, a0), (x1, a1) = by_role["baseline"], by_role["distilled"]
        ax.annotate("", xy=(x1, a1), xytext=(x0, a0),
                    arrowprops={"arrowstyle": "-|>", "color": "tab:orange", "lw": 1.2,
                                "shrinkA": 6, "shrinkB": 6})  # fmt: skip
        ax.annotate(f"{a1 - a0:+.1f} points", ((x0 * x1) ** 0.5, (a0 + a1) / 2),
                    textcoords="offset points", xytext=(8, 0), ha="left",
                    fontsize=9, color="tab:orange")  # fmt: skip
    xs = [p[2] for p in points]
    ax.set_xscale("log")
    # Room on the right of the largest model for its label, on a log axis.
    ax.set_xlim(min(xs) / 3, max(xs) * 12)
    ax.set_xlabel(xlabel)
    ax.grid(True, which="major", alpha=0.3)


def tradeoff_figure(results: Mapping[str, Any]) -> Figure:
    """Test accuracy vs parameters (and vs latency when measured) for each role in ``results``
    (``results.json``: ``teacher`` / ``baseline`` / ``distilled`` with ``test/acc``,
    ``params``, ``latency_ms``). Raises ``ValueError`` with fewer than two models to compare."""
    by_params = _points(results, "params")
    if len(by_params) < 2:
        raise ValueError(
            f"needs test/acc and params of at least two of teacher / baseline / distilled in the "
            f"results; found {[p[0] for p in by_params] or 'none'}"
        )
    by_latency = _points(results, "latency_ms")
    panels = 2 if len(by_latency) >= 2 else 1
    fig = Figure(figsize=(5.2 * panels, 4.0), layout="constrained")
    axes = fig.subplots(1, panels, sharey=True, squeeze=False)[0]
    _panel(axes[0], by_params, "parameters (log scale)")
    axes[0].set_ylabel("test accuracy (%)")
    if panels == 2:
        batch = next((results[p[0]].get("latency_batch_size") for p in by_latency), None)
        per = f"batch of {batch}" if batch else "batch"
        _panel(axes[1], by_latency, f"latency, ms per {per} (log scale)")
    accs = [p[3] for p in by_params]
    low, high = min(accs), max(accs)
    pad = max(2.0, 0.15 * (high - low))
    axes[0].set_ylim(max(0.0, low - pad), min(100.0, high + pad))
    fig.suptitle("Accuracy against size and speed")
    return fig
