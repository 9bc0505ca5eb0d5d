"""The CIFAR knowledge-distillation benchmark family (RepDistiller / CRD tables), written anew.

    resnet8x4(num_classes=100, input_shape=(3, 32, 32))      # 1.23M parameters on CIFAR-100
    wrn_40_2(num_classes=100, input_shape=(3, 32, 32))       # 2.26M

ResNets (He et al. 2016, CIFAR variant): 3 stages of basic blocks, depth = 6n + 2; the "x4"
models widen the stages to 64/128/256 channels (stem 32). Wide ResNets (Zagoruyko & Komodakis
2016): pre-activation blocks, depth = 6n + 4, widths 16k/32k/64k. VGG (bn variant of the
benchmarks): five conv blocks, max-pooling between them, global average pooling, one linear
layer. Parameter counts match the published CIFAR-100 ones (checked in
tests/unit/models/test_models_zoo.py).
Any input size works: the last feature map is globally average-pooled.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


def _init(model: nn.Module) -> None:
    # He initialisation for convolutions, unit BatchNorm: the benchmarks' initialisation.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _in_channels(input_shape: Sequence[int]) -> int:
    if len(input_shape) != 3:
        raise ValueError(f"expected an image input_shape (C, H, W), got {tuple(input_shape)}")
    return int(input_shape[0])


# --- ResNet --------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    """conv-bn-relu-conv-bn plus identity (or 1x1 conv-bn projection) shortcut, then relu."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv3x3(c_in, c_out, stride), nn.BatchNorm2d(c_out)
        self.conv2, self.bn2 = _conv3x3(c_out, c_out), nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR ResNet of ``depth`` = 6n + 2 layers; ``widths`` = (stem, stage1, stage2, stage3)."""

    def __init__(
        self,
        depth: int,
        widths: Sequence[int],
        num_classes: int,
        input_shape: Sequence[int] = (3, 32, 32),
    ) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"ResNet depth must be 6n + 2 (8, 20, 32, 56, 110), got {depth}")
        n = (depth - 2) // 6
        stem, *stages = (int(w) for w in widths)
        self.conv1 = _conv3x3(_in_channels(input_shape), stem)
        self.bn1 = nn.BatchNorm2d(stem)
        layers, c_in = [], stem
        for i, width in enumerate(stages):
            blocks = [BasicBlock(c_in, width, stride=1 if i == 0 else 2)]
            blocks += [BasicBlock(width, width) for _ in range(n - 1)]
            layers.append(nn.Sequential(*blocks))
            c_in = width
        self.layer1, self.layer2, self.layer3 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, int(num_classes))
        _init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.pool(x).flatten(1))


def resnet20(num_classes: int, input_shape: Sequence[int] = (3, 32, 32)) -> CifarResNet:
    return CifarResNet(20, (16, 16, 32, 64), num_classes, input_shape)


def resnet56(num_classes: int, input_shape: Sequence[int] = (3, 32, 32)) -> CifarResNet:
    return CifarResNet(56, (16, 16, 32, 64), num_classes, input_shape)


def resnet110(num_classes: int, input_shape: Sequence[int] = (3, 32, 32)) -> CifarResNet:
    return CifarResNet(110, (16, 16, 32, 64), num_classes, input_shape)


def resnet8x4(num_classes: int, input_shape: Sequence[int] = (3, 32, 32)) -> CifarResNet:
    return CifarResNet(8, (32, 64, 128, 256), num_classes, input_shape)


def resnet32x4(num_classes: int, input_shape: Sequence[int] = (3, 32, 32)) -> CifarResNet:
    return CifarResNet(32, (32, 64, 128, 256), num_classes, input_shape)


# --- Wide ResNet ---------------------------------------------------------------------------------
class WideBlock(nn.Module):
    """Pre-activation block: bn-relu-conv-bn-relu-conv; 1x1 conv shortcut when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(c_in), _conv3x3(c_in, c_out, stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(c_out), _conv3x3(c_out, c_out)
        self.dropout = float(dropout)
        self.shortcut: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = F.relu(self.bn1(x))
        # With a projection the shortcut also sees the pre-activated input (as in the original).
        skip = x if self.shortcut is None else self.shortcut(pre)
        out = F.relu(self.bn2(self.conv1(pre)))
        if self.dropout > 0:
            out = F.dropout(out, p=self.dropout, training=self.training)
        return self.conv2(out) + skip


class WideResNet(nn.Module):
    """WRN-``depth``-``widen``: depth = 6n + 4, stage widths 16k, 32k, 64k (k = ``widen``)."""

    def __init__(
        self,
        depth: int,
        widen: int,
        num_classes: int,
        input_shape: Sequence[int] = (3, 32, 32),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ValueError(f"WideResNet depth must be 6n + 4 (10, 16, 28, 40), got {depth}")
        n = (depth - 4) // 6
        widths = [16 * widen, 32 * widen, 64 * widen]
        self.conv1 = _conv3x3(_in_channels(input_shape), 16)
        stages, c_in = [], 16
        for i, width in enumerate(widths):
            blocks = [WideBlock(c_in, width, 1 if i == 0 else 2, dropout)]
            blocks += [WideBlock(width, width, 1, dropout) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            c_in = width
        self.block1, self.block2, self.block3 = stages
        self.bn = nn.BatchNorm2d(c_in)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, int(num_classes))
        _init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.fc(self.pool(F.relu(self.bn(x))).flatten(1))


def wrn_16_2(num_classes: int, input_shape: Sequence[int] = (3, 32, 32)) -> WideResNet:
    return WideResNet(16, 2, num_classes, input_shape)


def wrn_40_2(num_classes: int, input_shape: Sequence[int] = (3, 32, 32)) -> WideResNet:
    return WideResNet(40, 2, num_classes, input_shape)


# --- VGG -----------------------------------------------------------------------------------------
class CifarVGG(nn.Module):
    """Five blocks of [conv3x3(bias) -> bn -> relu] with 2x2 max-pooling after the first three
    (and after the fourth on inputs of 64 pixels or more), global average pooling, one linear."""

    def __init__(
        self,
        blocks: Sequence[Sequence[int]],
        num_classes: int,
        input_shape: Sequence[int] = (3, 32, 32),
    ) -> None:
        super().__init__()
        if len(blocks) != 5:
            raise ValueError(f"CifarVGG takes 5 blocks of conv widths, got {len(blocks)}")
        c_in = _in_channels(input_shape)
        # 32-pixel inputs keep a 4x4 map for the last two blocks; bigger inputs pool once more.
        pool_after = 4 if min(int(d) for d in input_shape[1:]) >= 64 else 3
        layers: list[nn.Module] = []
        for i, widths in enumerate(blocks):
            for w in widths:
                layers += [nn.Conv2d(c_in, int(w), 3, padding=1), nn.BatchNorm2d(int(w))]
                layers.append(nn.ReLU(inplace=True))
                c_in = int(w)
            if i < pool_after:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_in, int(num_classes))
        _init(self)
        nn.init.normal_(self.classifier.weight, 0, 0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


def vgg8(num_classes: int, input_shape: Sequence[int] = (3, 32, 32)) -> CifarVGG:
    return CifarVGG([[64], [128], [256], [512], [512]], num_classes, input_shape)


def vgg13(num_classes: int, input_shape: Sequence[int] = (3, 32, 32)) -> CifarVGG:
    return CifarVGG([[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]], num_classes,
                    input_shape)  # fmt: skip


#: name -> factory, for ``kdlightning.models.cifar_model(name=...)`` and the tests.
_FACTORIES = (resnet8x4, resnet32x4, resnet20, resnet56, resnet110, wrn_16_2, wrn_40_2, vgg8, vgg13)
CIFAR_MODELS = {f.__name__: f for f in _FACTORIES}


def cifar_model(name: str, num_classes: int, input_shape: Sequence[int] = (3, 32, 32)) -> nn.Module:
    """Build the benchmark model ``name`` (one of ``CIFAR_MODELS``)."""
    if name not in CIFAR_MODELS:
        raise ValueError(f"unknown CIFAR model {name!r}; choose one of {sorted(CIFAR_MODELS)}")
    return CIFAR_MODELS[name](num_classes=num_classes, input_shape=input_shape)
