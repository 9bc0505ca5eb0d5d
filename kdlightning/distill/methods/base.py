"""What a distillation method is: :class:`Method` (logit terms + cross-entropy) and
:class:`FeatureMethod` (the KD mix + a term on captured layers), and the argument checks their
constructors share.

A method is an ``nn.Module`` called as ``method(student_logits, teacher_logits, targets,
student_feats, teacher_feats, epoch=0, index=None) -> MethodOutput``. Its constructor takes
keyword hyperparameters and checks each once; a bad one raises :class:`ArgumentError`, which
names it (``alpha=2: alpha must lie in [0, 1] ...``; the job's builder says ``kd.alpha=2: ...``).
Feature methods also take ``teacher``, ``student`` and ``input_shape`` (their layers are probed
with one dummy forward); a method that keys state by sample also takes ``num_train``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from torch import Tensor, nn

from kdlightning.distill.functional import (
    check_alpha,
    check_temperature,
    kd_loss,
    labeled_ce,
    standardize_logits,
)
from kdlightning.distill.hooks import probe_shapes

__all__ = ["ArgumentError", "FeatureMethod", "Method", "MethodOutput", "no_gather"]


class MethodOutput(NamedTuple):
    """The loss to minimize and its named, unweighted terms (for logging)."""

    loss: Tensor
    terms: dict[str, Tensor]


class ArgumentError(ValueError):
    """A constructor argument that cannot work. ``template`` words it with ``{key}`` (the
    argument's name) and ``{value}``; :meth:`named` words it for another name (``kd.alpha``)."""

    def __init__(self, key: str, value: Any, template: str) -> None:
        self.key, self.value, self.template = key, value, template
        super().__init__(self.named(key))

    def named(self, name: str) -> str:
        return self.template.format(key=name, value=repr(self.value))


def _escaped(err: Exception) -> str:
    return str(err).replace("{", "{{").replace("}", "}}")


def check_number(
    key: str, value: Any, low: float = 0.0, high: float = math.inf, positive: bool = False
) -> float:
    """``value`` as a float in ``[low, high]`` (``> low`` if ``positive``)."""
    try:
        if isinstance(value, bool):
            raise TypeError
        v = float(value)
    except (TypeError, ValueError):
        raise ArgumentError(
            key, value, "{key}={value} is not a number; set {key}=<number>"
        ) from None
    if not math.isfinite(v) or v < low or v > high or (positive and v <= low):
        bound = (f"in [{low:g}, {high:g}]" if math.isfinite(high)
                 else f"{'>' if positive else '>='} {low:g}")  # fmt: skip
        raise ArgumentError(key, value, "{key}={value} must be a finite number " + bound)
    return v


def check_count(key: str, value: Any, low: int = 1) -> int:
    """``value`` as an integer ``>= low``."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
    if not ok:
        raise ArgumentError(key, value, "{key}={value} must be an integer >= " + str(low))
    return int(value)


def check_flag(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ArgumentError(key, value, "{key}={value} must be true or false")
    return value


def check_weight(key: str, value: Any) -> float:
    """A loss weight: a finite number >= 0."""
    return check_number(key, value)


def _wrapped(check: Callable[[Any], float], key: str, value: Any) -> float:
    # The losses' own checks, with the argument in front: "alpha=2: alpha must lie in ..."
    try:
        return check(value)
    except ValueError as err:
        raise ArgumentError(key, value, "{key}={value}: " + _escaped(err)) from None


def check_unit(key: str, value: Any) -> float:
    """A KD mix weight in [0, 1] (:func:`kdlightning.distill.functional.check_alpha`)."""
    return _wrapped(check_alpha, key, value)


def check_temp(key: str, value: Any) -> float:
    """A softmax temperature (:func:`kdlightning.distill.functional.check_temperature`)."""
    return _wrapped(check_temperature, key, value)


def check_layers(key: str, value: Any) -> tuple[str, ...]:
    """A non-empty list of module paths."""
    paths = () if isinstance(value, str | Mapping) or not hasattr(value, "__iter__") else value
    paths = tuple(str(v) for v in paths)
    if not paths:
        raise ArgumentError(
            key, value,
            "{key}={value} must be a non-empty list of module paths, e.g. {key}=[features.3]",
        )  # fmt: skip
    return paths


def no_gather(x: Tensor) -> Tensor:
    """``Method.gather`` on one process: the rank's own batch."""
    return x


class Method(nn.Module):
    """Base class: a logit-level distillation term plus weighted cross-entropy.

    ``gather`` is how batch-relational terms (DIST, RKD, PKT, CRD) see the batch: the identity on
    one process; under DDP the training module sets an all-gather across ranks that keeps the
    gradients, so those terms relate the global batch exactly as one process would (terms of
    single samples stay per rank: DDP's gradient average of equal shards is already exact).
    ``temperature`` and ``ce_weight`` arrive checked (subclasses check their arguments).
    """

    name = ""  # the kd.method that selects it (conf/kd/<name>.yaml)
    needs_features = False

    def __init__(self, temperature: float, ce_weight: float) -> None:
        super().__init__()
        self.temperature = float(temperature)
        self.ce_weight = float(ce_weight)
        self.student_layers: tuple[str, ...] = ()
        self.teacher_layers: tuple[str, ...] = ()
        self.gather: Callable[[Tensor], Tensor] = no_gather

    def distill(
        self, s_logits: Tensor, t_logits: Tensor, targets: Tensor, epoch: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """(weighted distillation loss, its unweighted named terms)."""
        raise NotImplementedError

    def forward(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor,
        targets: Tensor,
        student_feats: Sequence[Tensor] = (),
        teacher_feats: Sequence[Tensor] = (),
        epoch: int = 0,
        index: Tensor | None = None,
    ) -> MethodOutput:
        """``epoch`` counts from 0 (Lightning's ``current_epoch``); ``index``: each sample's
        position in the training split (batches carry it), for methods that key state by it."""
        weighted, terms = self.distill(student_logits, teacher_logits, targets, epoch)
        # Cross-entropy always on the raw student logits (never the standardized ones).
        ce = labeled_ce(student_logits, targets)
        return MethodOutput(weighted + self.ce_weight * ce, {**terms, "ce_loss": ce})


class KDMix(Method):
    """``alpha * T^2 KL + (1 - alpha) * CE`` (Hinton et al.), optionally on z-scored logits."""

    def __init__(self, temperature: Any, alpha: Any, standardize: Any) -> None:
        t, a = check_temp("temperature", temperature), check_unit("alpha", alpha)
        standardize = check_flag("standardize", standardize)
        super().__init__(t, ce_weight=1.0 - a)
        self.kd_weight, self.standardize = a, standardize

    def distill(
        self, s_logits: Tensor, t_logits: Tensor, targets: Tensor, epoch: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        if self.standardize:
            s_logits, t_logits = standardize_logits(s_logits), standardize_logits(t_logits)
        kd = kd_loss(s_logits, t_logits, self.temperature)
        return self.kd_weight * kd, {"kd_loss": kd}


class FeatureMethod(KDMix):
    """KD mix (``alpha * KD + (1 - alpha) * CE``) plus a weighted term on captured features.

    ``student_layers`` / ``teacher_layers`` are module paths, paired in order; their per-sample
    output shapes (``student_shapes``, ``teacher_shapes``) are probed here, with one dummy
    forward of each model, so a wrong path fails before any training.
    """

    needs_features = True

    def __init__(
        self,
        *,
        temperature: Any,
        alpha: Any,
        student_layers: Any,
        teacher_layers: Any,
        teacher: nn.Module,
        student: nn.Module,
        input_shape: Sequence[int],
    ) -> None:
        s_paths = check_layers("student_layers", student_layers)
        t_paths = check_layers("teacher_layers", teacher_layers)
        super().__init__(temperature, alpha, standardize=False)
        if len(s_paths) != len(t_paths):
            raise ValueError(
                f"kd.student_layers {list(s_paths)} and kd.teacher_layers {list(t_paths)} pair "
                "up in order: give as many of each"
            )
        self.student_layers, self.teacher_layers = s_paths, t_paths
        self.student_shapes = probe_shapes(student, s_paths, input_shape, "student")
        self.teacher_shapes = probe_shapes(teacher, t_paths, input_shape, "teacher")

    def feature_terms(
        self, s_feats: Sequence[Tensor], t_feats: Sequence[Tensor], index: Tensor | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def forward(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor,
        targets: Tensor,
        student_feats: Sequence[Tensor] = (),
        teacher_feats: Sequence[Tensor] = (),
        epoch: int = 0,
        index: Tensor | None = None,
    ) -> MethodOutput:
        if len(student_feats) != len(self.student_layers) or len(teacher_feats) != len(
            self.teacher_layers
        ):
            raise ValueError(
                f"{self.name} needs the outputs of {self.student_layers} (student) and "
                f"{self.teacher_layers} (teacher); got {len(student_feats)} and "
                f"{len(teacher_feats)} tensors (is the teacher online?)"
            )
        out = super().forward(student_logits, teacher_logits, targets, epoch=epoch)
        weighted, terms = self.feature_terms(student_feats, teacher_feats, index)
        return MethodOutput(out.loss + weighted, {**out.terms, **terms})
