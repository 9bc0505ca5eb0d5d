"""A 1-D convolutional network for sequence data such as MNIST-1D (input shape (C, L)).

    CNN1D(num_classes=10, input_shape=(1, 40), channels=[32, 32, 32])

Modelled on the CNN of the MNIST-1D paper (Greydanus 2020: three stride-2 convolutions of
width 25, then a linear layer; about 94% test accuracy), with BatchNorm for faster training.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from kdlightning.models.small import positive_ints


class CNN1D(nn.Module):
    """[Conv1d(stride 2) -> BatchNorm -> ReLU] * len(channels) -> flatten -> Linear."""

    def __init__(
        self,
        num_classes: int,
        input_shape: Sequence[int],
        channels: Sequence[int] = (32, 32, 32),
        kernel_size: int = 5,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(input_shape) != 2:
            raise ValueError(
                f"CNN1D takes (channels, length) inputs, got input_shape={tuple(input_shape)}; "
                "use SmallCNN for images"
            )
        chans = positive_ints("channels", channels)
        in_ch = int(input_shape[0])
        layers: list[nn.Module] = []
        for c in chans:
            layers += [
                nn.Conv1d(in_ch, c, int(kernel_size), stride=2, padding=int(kernel_size) // 2),
                nn.BatchNorm1d(c),
                nn.ReLU(inplace=True),
            ]
            in_ch = c
        self.features = nn.Sequential(*layers)
        # The flattened width depends on the length after the strided convolutions: measure it.
        with torch.no_grad():
            width = self.features(torch.zeros(1, *(int(d) for d in input_shape))).numel()
        head: list[nn.Module] = [nn.Flatten()]
        if dropout > 0:
            head.append(nn.Dropout(dropout))
        head.append(nn.Linear(width, int(num_classes)))
        self.head = nn.Sequential(*head)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
