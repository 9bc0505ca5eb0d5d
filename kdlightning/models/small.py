"""Small teachers and students for digits-scale data: an MLP and a compact CNN.

Every model factory in kdlightning takes ``num_classes`` and ``input_shape`` (C, H, W) as
keyword arguments; ``kdlightning.job.run`` fills them from the data module.

    MLP(num_classes=10, input_shape=(1, 8, 8), hidden_sizes=[32])
    SmallCNN(num_classes=10, input_shape=(1, 8, 8), channels=[32, 64], hidden=128)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn


def positive_ints(name: str, values: Sequence[int]) -> list[int]:
    out = [int(v) for v in values]
    if any(v < 1 for v in out):
        raise ValueError(f"{name} must be positive integers, got {list(values)!r}")
    return out


class MLP(nn.Sequential):
    """Flatten -> [Linear -> (BatchNorm) -> ReLU -> (Dropout)] * len(hidden_sizes) -> Linear."""

    def __init__(
        self,
        num_classes: int,
        input_shape: Sequence[int],
        hidden_sizes: Sequence[int] = (128,),
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        hidden = positive_ints("hidden_sizes", hidden_sizes)
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(int(d) for d in input_shape)
        for h in hidden:
            layers.append(nn.Linear(width, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(nn.ReLU(inplace=True))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, int(num_classes)))
        super().__init__(*layers)


class SmallCNN(nn.Module):
    """[Conv3x3 -> BatchNorm -> ReLU] * len(channels) with 2x2 max-pooling after each block
    (while the feature map is at least 2x2), then global average pooling -> MLP head."""

    def __init__(
        self,
        num_classes: int,
        input_shape: Sequence[int],
        channels: Sequence[int] = (32, 64),
        hidden: int = 128,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        chans = positive_ints("channels", channels)
        in_ch, size = int(input_shape[0]), min(int(d) for d in input_shape[1:])
        blocks: list[nn.Module] = []
        for c in chans:
            blocks += [nn.Conv2d(in_ch, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)]
            blocks.append(nn.ReLU(inplace=True))
            if size >= 4:  # keep at least a 2x2 map for the last block's features
                blocks.append(nn.MaxPool2d(2))
                size //= 2
            in_ch = c
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        head: list[nn.Module] = [nn.Flatten(), nn.Linear(in_ch, int(hidden)), nn.ReLU(inplace=True)]
        if dropout > 0:
            head.append(nn.Dropout(dropout))
        head.append(nn.Linear(int(hidden), int(num_classes)))
        self.head = nn.Sequential(*head)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pool(self.features(x)))
