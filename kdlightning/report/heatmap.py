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
    """Temperature × alpha heatmaps of mean validation and test accuracy; ``None`` (nothing
    drawn) when there is no finished job or more than one setting besides T and alpha."""
    if not rows or len({r["setting"] for r in rows}) > 1:
        return None
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
            grid[temps.index(r["temperature"]), alphas.index(r["alpha"])] = r[f"{split}_acc_mean"]
        image = ax.imshow(100 * grid, cmap="viridis", aspect="auto")
        fig.colorbar(image, ax=ax)
        low, high = image.get_clim()
        for r in rows:
            i, j = temps.index(r["temperature"]), alphas.index(r["alpha"])
            mean, std = 100 * r[f"{split}_acc_mean"], 100 * r[f"{split}_acc_std"]
            text = f"{mean:.1f}" + (f"\n±{std:.1f}" if r["n"] > 1 else "")
            dark = mean < (low + high) / 2  # white on the dark end of viridis, black on yellow
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")  # fmt: skip
        if best is not None:  # chosen on validation; outlined in both panels
            i, j = temps.index(best["temperature"]), alphas.index(best["alpha"])
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="red", lw=2.5))
        ax.set_xticks(range(len(alphas)), [f"{a:g}" for a in alphas])
        ax.set_yticks(range(len(temps)), [f"{t:g}" for t in temps])
        ax.set_xlabel("alpha (weight of the KD term)")
        ax.set_ylabel("temperature T")
        ax.set_title(f"student {split} accuracy (%)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
