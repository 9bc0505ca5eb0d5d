"""The temperature × alpha heatmap of a sweep (report_heatmap.png).

from kdlightning.report import aggregate, best_setting, collect_jobs
from kdlightning.report.heatmap import plot_heatmap
rows = aggregate(collect_jobs(DIR))
plot_heatmap(rows, best_setting(rows), "my sweep", Path("heatmap.png"))
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def plot_heatmap(
    rows: Sequence[dict[str, Any]], best: dict[str, Any] | None, title: str, path: Path
) -> Path | None:
    """Temperature × alpha heatmaps of mean validation and test accuracy (language models:
    bits per byte, lower is better, on a reversed color map so that better is brighter in
    both); ``None`` (nothing drawn) when there is no finished job, more than one setting
    besides T and alpha, or a mix of language models and image jobs."""
    if not rows or len({r["setting"] for r in rows}) > 1:
        return None
    kinds = {r.get("kind", "image") for r in rows}
    if len(kinds) > 1:
        return None
    lm = kinds == {"lm"}
    metric, scale, unit = ("bpb", 1.0, "bits per byte (lower is better)") if lm else (
        "acc", 100.0, "accuracy (%)")  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and in CI
    import matplotlib.pyplot as plt
    import numpy as np

    temps = sorted({r["temperature"] for r in rows})
    alphas = sorted({r["alpha"] for r in rows})
    width = max(9.0, 2 * (2.0 + 0.9 * len(alphas)))
    fig, axes = plt.subplots(1, 2, figsize=(width, max(3.8, 2.0 + 0.6 * len(temps))))
    for ax, split in zip(axes, ("val", "test"), strict=True):
        grid = np.full((len(temps), len(alphas)), np.nan)
        for r in rows:
            value = r[f"{split}_{metric}_mean"]
            grid[temps.index(r["temperature"]), alphas.index(r["alpha"])] = value
        image = ax.imshow(scale * grid, cmap="viridis_r" if lm else "viridis", aspect="auto")
        fig.colorbar(image, ax=ax)
        low, high = image.get_clim()
        digits = 3 if lm else 1
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
        ax.set_xlabel("alpha (weight of the KD term)")
        ax.set_ylabel("temperature T")
        ax.set_title(f"student {split} {unit}")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
