"""The temperature × alpha heatmap of a sweep (report_heatmap.png).

from kdlightning.report import aggregate, best_setting, collect_jobs
from kdlightning.report.heatmap import plot_heatmap
rows = aggregate(collect_jobs(DIR))
plot_heatmap(rows, best_setting(rows), "my sweep", Path("heatmap.png"))

Its two panels (validation, test) share one colour scale and one colour bar, so a colour means
the same value in both. Settings that do not fill a grid (an Optuna search: every trial its own
T and alpha) are drawn as a scatter, T on a log axis, each point coloured by its accuracy:
a grid of mostly empty cells would hide them (:func:`is_grid`).

A sweep that varies anything besides T, alpha and the seed (``kd=``, ``student=``, ...), or
mixes language models and image jobs, has no heatmap: :func:`why_no_heatmap` says why, and
report.md says it where the heatmap would be.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def why_no_heatmap(rows: Sequence[dict[str, Any]]) -> str | None:
    """Why the sweep of these aggregate rows gets no T × alpha heatmap; ``None`` if it does."""
    if not rows:
        return "no job finished, so there is nothing to map"
    kinds = {r.get("kind", "image") for r in rows}
    if len(kinds) > 1:
        return (
            "the sweep mixes language models (bits per byte) and image classifiers "
            "(accuracy), which one colour scale cannot show"
        )
    settings = sorted({r["setting"] for r in rows})
    if len(settings) > 1:
        keys = sorted({pair.split("=", 1)[0] for s in settings for pair in s.split()})
        return (
            f"the sweep varies {', '.join(keys)} besides T and alpha ({len(settings)} settings: "
            f"{'; '.join(settings)}), and one T × alpha grid would mix them; the table above "
            "keeps each setting apart (sweep kd.temperature and kd.alpha with the rest fixed "
            "for a heatmap)"
        )
    return None


def is_grid(rows: Sequence[dict[str, Any]]) -> bool:
    """Whether the settings lie on a T × alpha grid: at least half of the cells their T and
    alpha values span hold one. A grid with a failed job still is one; an Optuna search's
    trials (12 T and 12 alpha values: 12 of 144 cells) are not."""
    cells = {(r["temperature"], r["alpha"]) for r in rows}
    temps, alphas = {t for t, _ in cells}, {a for _, a in cells}
    return 2 * len(cells) >= len(temps) * len(alphas)


def _scatter(
    ax: Any, rows: Sequence[dict[str, Any]], values: list[float], digits: int, **style: Any
) -> Any:
    """One panel of scattered settings: alpha across, T up (log), the value as colour."""
    alphas, temps = [r["alpha"] for r in rows], [r["temperature"] for r in rows]
    image = ax.scatter(alphas, temps, c=values, s=70, edgecolors="black", linewidths=0.5, **style)
    for a, t, v in zip(alphas, temps, values, strict=True):
        ax.annotate(f"{v:.{digits}f}", (a, t), xytext=(5, 4), textcoords="offset points",
                    fontsize=7)  # fmt: skip
    if min(temps) > 0:
        from matplotlib.ticker import ScalarFormatter

        ax.set_yscale("log", base=2)
        ax.yaxis.set_major_formatter(ScalarFormatter())  # 1, 2, 4, 8, 16: not 2^0 ... 2^4
    ax.set_xlim(-0.05, 1.05)
    return image


def plot_heatmap(
    rows: Sequence[dict[str, Any]], best: dict[str, Any] | None, title: str, path: Path
) -> Path | None:
    """Temperature × alpha heatmaps of mean validation and test accuracy (language models:
    bits per byte, lower is better, on a reversed color map so that better is brighter in
    both), or a scatter of the same when the rows are no grid (:func:`is_grid`); ``None``
    (nothing drawn) when :func:`why_no_heatmap` gives a reason. Both panels share one colour
    scale (and one colour bar)."""
    if why_no_heatmap(rows) is not None:
        return None
    lm = {r.get("kind", "image") for r in rows} == {"lm"}
    metric, scale, unit = ("bpb", 1.0, "bits per byte (lower is better)") if lm else (
        "acc", 100.0, "accuracy (%)")  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and in CI
    import matplotlib.pyplot as plt
    import numpy as np

    temps = sorted({r["temperature"] for r in rows})
    alphas = sorted({r["alpha"] for r in rows})
    on_grid = is_grid(rows)
    width = max(9.0, 2 * (2.0 + 0.9 * len(alphas))) if on_grid else 10.0
    height = max(3.8, 2.0 + 0.6 * len(temps)) if on_grid else 4.8
    fig, axes = plt.subplots(1, 2, figsize=(width, height), layout="constrained")
    grids = {}
    for split in ("val", "test"):
        grid = np.full((len(temps), len(alphas)), np.nan)
        for r in rows:
            value = r[f"{split}_{metric}_mean"]
            grid[temps.index(r["temperature"]), alphas.index(r["alpha"])] = value
        grids[split] = scale * grid
    # one colour scale for both panels: the same colour is the same value in each
    finite = np.concatenate([g[np.isfinite(g)] for g in grids.values()])
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if low == high:
        low, high = low - 0.5, high + 0.5
    cmap, digits = ("viridis_r", 3) if lm else ("viridis", 1)
    for ax, split in zip(axes, ("val", "test"), strict=True):
        ax.set_xlabel("alpha (weight of the KD term)")
        ax.set_ylabel("temperature T")
        ax.set_title(f"student {split} {unit}")
        if not on_grid:
            values = [scale * r[f"{split}_{metric}_mean"] for r in rows]
            image = _scatter(ax, rows, values, digits, cmap=cmap, vmin=low, vmax=high)
            if best is not None:  # chosen on validation; ringed in both panels
                ax.scatter([best["alpha"]], [best["temperature"]], s=260, facecolors="none",
                           edgecolors="red", linewidths=2.5)  # fmt: skip
            continue
        image = ax.imshow(grids[split], cmap=cmap, aspect="auto", vmin=low, vmax=high)
        for r in rows:
            i, j = temps.index(r["temperature"]), alphas.index(r["alpha"])
            mean, std = scale * r[f"{split}_{metric}_mean"], scale * r[f"{split}_{metric}_std"]
            text = f"{mean:.{digits}f}" + (f"\n±{std:.{digits}f}" if r["n"] > 1 else "")
            # white on the dark end of viridis, black on yellow (the bright end: the better one)
            dark = (mean > (low + high) / 2) if lm else (mean < (low + high) / 2)
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")  # fmt: skip
        if best is not None:  # chosen on validation; outlined in both panels
            i, j = temps.index(best["temperature"]), alphas.index(best["alpha"])
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="red", lw=2.5))
        ax.set_xticks(range(len(alphas)), [f"{a:g}" for a in alphas])
        ax.set_yticks(range(len(temps)), [f"{t:g}" for t in temps])
    fig.colorbar(image, ax=list(axes), label=f"{unit}: one scale for both panels")
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
