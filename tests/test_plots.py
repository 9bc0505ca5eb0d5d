"""kdlightning.plots: softened distributions and their figure."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kdlightning.plots import plot_softmax_temperatures, softmax_at


def test_softmax_at_flattens_with_temperature() -> None:
    logits = torch.tensor([4.0, 1.0, 0.0])
    maxima = [softmax_at(logits, t).max().item() for t in (1, 2, 4, 8)]
    assert maxima == sorted(maxima, reverse=True)
    assert softmax_at(logits, 1).sum().item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="temperature"):
        softmax_at(logits, 0)


def test_figure_has_one_panel_per_temperature(tmp_path: Path) -> None:
    fig = plot_softmax_temperatures(torch.tensor([3.0, 1.0, 0.5]), [1, 4], ["a", "b", "c"])
    assert [ax.get_title() for ax in fig.axes] == ["T = 1", "T = 4"]
    heights = [bar.get_height() for bar in fig.axes[0].patches]
    assert heights == pytest.approx(softmax_at(torch.tensor([3.0, 1.0, 0.5]), 1).tolist())
    fig.savefig(tmp_path / "f.png")
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="one sample"):
        plot_softmax_temperatures(torch.zeros(2, 3))
