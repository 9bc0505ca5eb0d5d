"""Connectors: the learnable maps that bring a student's features to a teacher's shape.

    from kdlightning.distill.connectors import make_connector
    conn = make_connector((16, 4, 4), (64, 4, 4), "features.6", "features.6")  # 1x1 conv + BN
    conn = make_connector((32,), (256,), "head.1", "head.1")                    # nn.Linear

FitNets (Romero et al. 2015, arXiv 1412.6550) regress the student's guided layer onto the
teacher's hint layer. Shapes are per sample (no batch dimension):

* equal shapes: no connector (``nn.Identity``);
* feature maps ``(C, *spatial)``: the student's map is average-pooled down to the teacher's
  spatial size when it is larger, then a 1x1 convolution + BatchNorm maps its channels (the
  regressor of RepDistiller's ``ConvReg``, without its ReLU, so that negative hints can be met);
* vectors ``(D,)``: ``nn.Linear``.

Anything else (a vector against a map, a student map *smaller* than the teacher's) cannot be
bridged: :class:`ShapeMismatch` says so before training, naming both layers and shapes.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

__all__ = ["ShapeMismatch", "make_connector", "pool_to"]

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_POOL = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}


class ShapeMismatch(ValueError):
    """Student and teacher layers whose shapes no connector can bridge."""


def pool_to(spatial: Sequence[int]) -> nn.Module:
    """Adaptive average pooling to ``spatial`` (1 to 3 spatial dimensions)."""
    return _POOL[len(spatial)](tuple(int(s) for s in spatial))


def make_connector(
    student_shape: Sequence[int],
    teacher_shape: Sequence[int],
    student_path: str,
    teacher_path: str,
) -> nn.Module:
    """A module mapping per-sample features of ``student_shape`` to ``teacher_shape``."""
    s, t = tuple(int(d) for d in student_shape), tuple(int(d) for d in teacher_shape)
    if s == t:
        return nn.Identity()
    where = (
        f"kd.student_layers {student_path!r} gives {s} per sample, kd.teacher_layers "
        f"{teacher_path!r} gives {t}"
    )
    if len(s) == 1 and len(t) == 1:
        return nn.Linear(s[0], t[0])
    if len(s) != len(t) or not 2 <= len(s) <= 4:
        raise ShapeMismatch(
            f"{where}: no connector maps one to the other (a vector needs a vector, a feature "
            "map a feature map with as many spatial dimensions); pick a pair of layers of the "
            "same kind"
        )
    s_spatial, t_spatial = s[1:], t[1:]
    if any(a < b for a, b in zip(s_spatial, t_spatial, strict=True)):
        raise ShapeMismatch(
            f"{where}: the student's map is smaller than the teacher's ({s_spatial} < "
            f"{t_spatial}); pick a teacher layer of size {s_spatial} or smaller, or an earlier "
            "student layer"
        )
    layers: list[nn.Module] = []
    if s_spatial != t_spatial:  # larger student map: pool it down to the hint's size
        layers.append(pool_to(t_spatial))
    if s[0] != t[0]:
        dims = len(t_spatial)
        layers += [_CONV[dims](s[0], t[0], kernel_size=1, bias=False), _BN[dims](t[0])]
    return nn.Sequential(*layers)
