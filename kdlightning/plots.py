"""Plots a person would rather look at than read: softened teacher outputs at several T.

from kdlightning.plots import plot_softmax_temperatures
fig = plot_softmax_temperatures(teacher_logits_of_one_image, [1, 2, 4, 8])
fig.savefig("softmax.png")
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from matplotlib.figure import Figure

from kdlightning.losses import check_temperature


def softmax_at(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``softmax(logits / T)`` over the last dimension, in float32."""
    return torch.softmax(logits.float() / check_temperature(temperature), dim=-1)


def plot_softmax_temperatures(
    logits: torch.Tensor,
    temperatures: Sequence[float] = (1, 2, 4, 8),
    class_names: Sequence[str] | None = None,
    title: str | None = None,
) -> Figure:
    """One bar chart per temperature of ``softmax(logits / T)`` for a single sample's logits."""
    if logits.ndim != 1:
        raise ValueError(
            f"give the logits of one sample (shape (classes,)), got {tuple(logits.shape)}"
        )
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(logits))]
    if len(names) != len(logits):
        raise ValueError(f"{len(names)} class names for {len(logits)} logits")
    # The object-oriented API (no pyplot): no GUI backend, no global figure state to leak.
    fig = Figure(figsize=(3.2 * len(temperatures), 2.8))
    axes = fig.subplots(1, len(temperatures), sharey=True, squeeze=False)
    for ax, t in zip(axes[0], temperatures, strict=True):
        probs = softmax_at(logits, t).numpy()
        ax.bar(names, probs, color="tab:blue")
        ax.set_title(f"T = {t:g}")
        ax.set_ylim(0, 1)
        ax.set_xlabel("class")
    axes[0][0].set_ylabel("probability")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
