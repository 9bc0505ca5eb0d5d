"""Distillation methods: each one a small ``nn.Module`` composing the losses of
``kdlightning.distill.functional`` with cross-entropy, behind one config switch
(``kd=kd|dkd|dist|...``).

    from kdlightning.distill.methods import build_method
    method = build_method(cfg.kd, teacher, student, input_shape=(1, 8, 8))  # checks everything
    out = method(s_logits, t_logits, targets, s_feats, t_feats, epoch=0)
    out.loss, out.terms   # the weighted total; {"kd_loss": ..., "ce_loss": ...} unweighted

Every method has the same interface: ``forward(student_logits, teacher_logits, targets,
student_feats, teacher_feats, epoch) -> MethodOutput``. ``needs_features`` says whether it reads
intermediate outputs; then ``student_layers`` / ``teacher_layers`` are the module paths the
training module captures (``kdlightning.distill.hooks``), paired in order. Logit methods work with
cached teacher logits; feature methods need the teacher online.

Targets equal to ``UNLABELED`` (-1, the transfer set) get no cross-entropy. The methods'
weighting follows each paper (the conf/kd files cite them):

====== =======================================================================================
kd     ``alpha * KD + (1 - alpha) * CE`` (Hinton et al. 2015, arXiv 1503.02531)
dkd    ``CE + warmup(epoch) * (alpha * TCKD + beta * NCKD)`` (Zhao et al. 2022, arXiv
       2203.08679); an unlabeled sample's "target" is the teacher's top-1 class
dist   ``alpha * CE + beta * inter + gamma * intra`` (Huang et al. 2022, arXiv 2205.10536)
ls_kd  ``ce_weight * CE + alpha * KD`` on z-scored logits (Sun et al. 2024, arXiv 2403.01427);
       ``standardize: true`` applies the same pre-process to kd or dkd
fitnet ``alpha * KD + (1 - alpha) * CE + beta * hint`` (Romero et al. 2015, arXiv 1412.6550)
at     ``... + beta / 2 * sum_layers AT`` (Zagoruyko & Komodakis 2017, arXiv 1612.03928)
rkd    ``... + distance_weight * RKD-D + angle_weight * RKD-A`` (Park et al. 2019,
       arXiv 1904.05068)
pkt    ``... + beta * PKT`` (Passalis & Tefas 2018, arXiv 1803.10837)
====== =======================================================================================

Feature methods keep the KD mix of ``kd`` (``alpha = 0``: cross-entropy alone, RepDistiller's
setting for them) and add their term, so ``kd.alpha=0.9`` combines them with KD.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from kdlightning.distill.connectors import make_connector, pool_to
from kdlightning.distill.functional import (
    attention_loss,
    check_alpha,
    check_temperature,
    dist_loss,
    dkd_loss,
    dkd_warmup,
    hint_loss,
    kd_loss,
    labeled_ce,
    pkt_loss,
    rkd_angle_loss,
    rkd_distance_loss,
    standardize_logits,
)
from kdlightning.distill.hooks import probe_shapes

__all__ = [
    "DIST",
    "DKD",
    "KD",
    "METHODS",
    "PKT",
    "RKD",
    "AttentionTransfer",
    "FitNet",
    "LogitStandardKD",
    "Method",
    "MethodOutput",
    "build_method",
    "labeled_ce",
    "method_params",
    "no_gather",
]


class MethodOutput(NamedTuple):
    """The loss to minimize and its named, unweighted terms (for logging)."""

    loss: Tensor
    terms: dict[str, Tensor]


def no_gather(x: Tensor) -> Tensor:
    """``Method.gather`` on one process: the rank's own batch."""
    return x


class Method(nn.Module):
    """Base class: a logit-level distillation term plus weighted cross-entropy.

    ``gather`` is how batch-relational terms (DIST, RKD, PKT) see the batch: the identity on one
    process; under DDP the training module sets an all-gather across ranks that keeps the
    gradients, so those terms relate the global batch exactly as one process would (terms of
    single samples stay per rank: DDP's gradient average of equal shards is already exact).
    """

    name = "method"
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
    ) -> MethodOutput:
        """``epoch`` counts from 0 (Lightning's ``current_epoch``)."""
        weighted, terms = self.distill(student_logits, teacher_logits, targets, epoch)
        # Cross-entropy always on the raw student logits (never the standardized ones).
        ce = labeled_ce(student_logits, targets)
        return MethodOutput(weighted + self.ce_weight * ce, {**terms, "ce_loss": ce})


class KD(Method):
    """Hinton's KD: ``kd_weight * T^2 KL + ce_weight * CE`` (kd: ``alpha``, ``1 - alpha``)."""

    name = "kd"

    def __init__(self, temperature: float, kd_weight: float, ce_weight: float) -> None:
        super().__init__(temperature, ce_weight)
        self.kd_weight = float(kd_weight)

    def distill(
        self, s_logits: Tensor, t_logits: Tensor, targets: Tensor, epoch: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        kd = kd_loss(s_logits, t_logits, self.temperature)
        return self.kd_weight * kd, {"kd_loss": kd}


class DKD(Method):
    """Decoupled KD with its linear warm-up over ``warmup_epochs`` (0: none).

    DKD splits the KL around each sample's target class, so it needs one for every sample: an
    unlabeled one (the transfer set) is decoupled around the *teacher's* top-1 class, the class
    the teacher treats as the answer. Refusing DKD on transfer sets would take away the case
    distillation is most useful for; its cross-entropy still skips unlabeled samples.
    """

    name = "dkd"

    def __init__(
        self, temperature: float, alpha: float, beta: float, ce_weight: float, warmup_epochs: float
    ) -> None:
        super().__init__(temperature, ce_weight)
        self.alpha, self.beta, self.warmup_epochs = float(alpha), float(beta), float(warmup_epochs)

    def distill(
        self, s_logits: Tensor, t_logits: Tensor, targets: Tensor, epoch: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        y = targets.reshape(-1)
        y = torch.where(y >= 0, y, t_logits.reshape(y.shape[0], -1).argmax(dim=-1))
        dkd = dkd_loss(s_logits, t_logits, y, self.alpha, self.beta, self.temperature)
        # The authors' trainer counts epochs from 1: the first epoch already has weight 1/20.
        return dkd_warmup(epoch + 1, self.warmup_epochs) * dkd, {"dkd_loss": dkd}


class DIST(Method):
    """DIST: Pearson-correlation matching between and within classes (``ce_weight = alpha``)."""

    name = "dist"

    def __init__(self, temperature: float, alpha: float, beta: float, gamma: float) -> None:
        super().__init__(temperature, alpha)
        self.beta, self.gamma = float(beta), float(gamma)

    def distill(
        self, s_logits: Tensor, t_logits: Tensor, targets: Tensor, epoch: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        # beta and gamma inside: dist_loss weighs its two terms itself (one T^2 for both)
        s, t = self.gather(s_logits), self.gather(t_logits)  # intra: a relation over the batch
        dist = dist_loss(s, t, self.beta, self.gamma, self.temperature)
        return dist, {"dist_loss": dist}


class LogitStandardKD(Method):
    """Z-scores both models' logits (per sample, over the classes) before ``inner``'s term.

    ``inner`` is a :class:`KD` or :class:`DKD`; its temperature is the paper's *base*
    temperature and its cross-entropy weight is used as is, on the raw logits.
    """

    name = "ls_kd"

    def __init__(self, inner: KD | DKD) -> None:
        super().__init__(inner.temperature, inner.ce_weight)
        self.inner = inner

    def distill(
        self, s_logits: Tensor, t_logits: Tensor, targets: Tensor, epoch: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        return self.inner.distill(
            standardize_logits(s_logits), standardize_logits(t_logits), targets, epoch
        )


class FeatureMethod(KD):
    """KD mix (``alpha * KD + (1 - alpha) * CE``) plus a weighted term on captured features."""

    needs_features = True

    def __init__(
        self,
        temperature: float,
        alpha: float,
        student_layers: Sequence[str],
        teacher_layers: Sequence[str],
    ) -> None:
        super().__init__(temperature, kd_weight=alpha, ce_weight=1.0 - alpha)
        self.student_layers, self.teacher_layers = tuple(student_layers), tuple(teacher_layers)

    def feature_terms(
        self, s_feats: Sequence[Tensor], t_feats: Sequence[Tensor]
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
        weighted, terms = self.feature_terms(student_feats, teacher_feats)
        return MethodOutput(out.loss + weighted, {**out.terms, **terms})


class FitNet(FeatureMethod):
    """FitNets hints: ``beta * mean((connector(s) - t)^2)`` summed over the layer pairs."""

    name = "fitnet"

    def __init__(
        self,
        temperature: float,
        alpha: float,
        student_layers: Sequence[str],
        teacher_layers: Sequence[str],
        beta: float,
        connectors: Sequence[nn.Module],
    ) -> None:
        super().__init__(temperature, alpha, student_layers, teacher_layers)
        self.beta = float(beta)
        # Trained with the student, saved in its checkpoints (``method.connectors.*``), never
        # in student.pt: the deployed student does not need them.
        self.connectors = nn.ModuleList(connectors)

    def feature_terms(
        self, s_feats: Sequence[Tensor], t_feats: Sequence[Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        pairs = zip(self.connectors, s_feats, t_feats, strict=True)
        hint = sum(hint_loss(conn(s), t) for conn, s, t in pairs)
        return self.beta * hint, {"hint_loss": hint}


def _match_spatial(s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Average-pool the larger feature map to the smaller one's size (RepDistiller's AT)."""
    s_sp, t_sp = s.shape[2:], t.shape[2:]
    if s_sp == t_sp:
        return s, t
    if all(a >= b for a, b in zip(s_sp, t_sp, strict=True)):
        return pool_to(t_sp)(s), t
    return s, pool_to(s_sp)(t)


class AttentionTransfer(FeatureMethod):
    """Attention transfer: ``beta / 2 * sum over layer pairs of attention_loss(s, t, p)``."""

    name = "at"

    def __init__(
        self,
        temperature: float,
        alpha: float,
        student_layers: Sequence[str],
        teacher_layers: Sequence[str],
        beta: float,
        p: float,
    ) -> None:
        super().__init__(temperature, alpha, student_layers, teacher_layers)
        self.beta, self.p = float(beta), float(p)

    def feature_terms(
        self, s_feats: Sequence[Tensor], t_feats: Sequence[Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        at = sum(attention_loss(*_match_spatial(s, t), p=self.p)
                 for s, t in zip(s_feats, t_feats, strict=True))  # fmt: skip
        # beta / 2 as in the paper (beta = 1000); the authors' code does the same
        return self.beta / 2 * at, {"at_loss": at}


class RKD(FeatureMethod):
    """Relational KD on batch embeddings: distance and angle terms, summed over layer pairs."""

    name = "rkd"

    def __init__(
        self,
        temperature: float,
        alpha: float,
        student_layers: Sequence[str],
        teacher_layers: Sequence[str],
        distance_weight: float,
        angle_weight: float,
    ) -> None:
        super().__init__(temperature, alpha, student_layers, teacher_layers)
        self.distance_weight, self.angle_weight = float(distance_weight), float(angle_weight)

    def feature_terms(
        self, s_feats: Sequence[Tensor], t_feats: Sequence[Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        pairs = [(self.gather(s), self.gather(t)) for s, t in zip(s_feats, t_feats, strict=True)]
        dist = sum(rkd_distance_loss(s, t) for s, t in pairs)
        angle = sum(rkd_angle_loss(s, t) for s, t in pairs)
        weighted = self.distance_weight * dist + self.angle_weight * angle
        return weighted, {"rkd_distance_loss": dist, "rkd_angle_loss": angle}


class PKT(FeatureMethod):
    """Probabilistic knowledge transfer on batch embeddings, summed over layer pairs."""

    name = "pkt"

    def __init__(
        self,
        temperature: float,
        alpha: float,
        student_layers: Sequence[str],
        teacher_layers: Sequence[str],
        beta: float,
    ) -> None:
        super().__init__(temperature, alpha, student_layers, teacher_layers)
        self.beta = float(beta)

    def feature_terms(
        self, s_feats: Sequence[Tensor], t_feats: Sequence[Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        pairs = zip(s_feats, t_feats, strict=True)
        pkt = sum(pkt_loss(self.gather(s), self.gather(t)) for s, t in pairs)
        return self.beta * pkt, {"pkt_loss": pkt}


# --- configuration -------------------------------------------------------------------------------
def _number(
    low: float = 0.0, high: float = math.inf, positive: bool = False
) -> Callable[[str, Any], float]:
    def check(key: str, value: Any) -> float:
        try:
            if isinstance(value, bool):
                raise TypeError
            v = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"kd.{key}={value!r} is not a number; set kd.{key}=<number>") from None
        if not math.isfinite(v) or v < low or v > high or (positive and v <= 0):
            bound = (f"in [{low:g}, {high:g}]" if math.isfinite(high)
                     else f"{'>' if positive else '>='} {low:g}")  # fmt: skip
            raise ValueError(f"kd.{key}={value!r} must be a finite number {bound}")
        return v

    return check


def _flag(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"kd.{key}={value!r} must be true or false")
    return value


def _layers(key: str, value: Any) -> tuple[str, ...]:
    paths = () if isinstance(value, str | Mapping) or not hasattr(value, "__iter__") else value
    paths = tuple(str(v) for v in paths)
    if not paths:
        raise ValueError(
            f"kd.{key}={value!r} must be a non-empty list of module paths, e.g. "
            f"kd.{key}=[features.3]"
        )
    return paths


def _wrap(check: Callable[[Any], float]) -> Callable[[str, Any], float]:
    # The losses' own checks, with the config key in front: "kd.alpha=2: alpha must lie in ..."
    def checked(key: str, value: Any) -> float:
        try:
            return check(value)
        except ValueError as err:
            raise ValueError(f"kd.{key}={value!r}: {err}") from None

    return checked


_TEMPERATURE, _UNIT, _WEIGHT = _wrap(check_temperature), _wrap(check_alpha), _number()
_FEATURE = {"temperature": (_TEMPERATURE, 2.0), "alpha": (_UNIT, 0.0),
            "student_layers": (_layers, None), "teacher_layers": (_layers, None)}  # fmt: skip

#: method -> {key: (check, default)}; a default of None means the key is required.
PARAMS: dict[str, dict[str, tuple[Any, Any]]] = {
    "kd": {"temperature": (_TEMPERATURE, 4.0), "alpha": (_UNIT, 0.9),
           "standardize": (_flag, False)},
    "dkd": {"temperature": (_TEMPERATURE, 4.0), "alpha": (_WEIGHT, 1.0), "beta": (_WEIGHT, 8.0),
            "ce_weight": (_WEIGHT, 1.0), "warmup_epochs": (_WEIGHT, 20.0),
            "standardize": (_flag, False)},
    "dist": {"temperature": (_TEMPERATURE, 1.0), "alpha": (_WEIGHT, 1.0),
             "beta": (_WEIGHT, 1.0), "gamma": (_WEIGHT, 1.0)},
    "ls_kd": {"temperature": (_TEMPERATURE, 2.0), "alpha": (_WEIGHT, 9.0),
              "ce_weight": (_WEIGHT, 0.1)},
    "fitnet": {**_FEATURE, "beta": (_WEIGHT, 100.0)},
    "at": {**_FEATURE, "beta": (_WEIGHT, 1000.0), "p": (_number(positive=True), 2.0)},
    "rkd": {**_FEATURE, "distance_weight": (_WEIGHT, 25.0), "angle_weight": (_WEIGHT, 50.0)},
    "pkt": {**_FEATURE, "beta": (_WEIGHT, 30000.0)},
}  # fmt: skip

#: The methods :func:`build_method` builds, with whether each needs the teacher's features.
METHODS: dict[str, bool] = {name: "student_layers" in spec for name, spec in PARAMS.items()}


def check_method_name(method: Any, known: Sequence[str] = tuple(METHODS)) -> str:
    """``method`` if it is one of ``known`` (default: the methods :func:`build_method` builds),
    else a ``ValueError`` naming the valid ones."""
    if method not in known:
        raise ValueError(
            f"kd.method={method!r} is not a known distillation method; choose one of "
            f"{', '.join(known)} (kd=<name> picks conf/kd/<name>.yaml)"
        )
    return str(method)


def method_params(kd_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The checked hyperparameters of ``kd_cfg``'s method (its defaults where a key is absent);
    ``ValueError`` naming the first bad ``kd.<key>``."""
    name = check_method_name(kd_cfg.get("method", "kd"))
    out = {}
    for key, (check, default) in PARAMS[name].items():
        value = kd_cfg.get(key, default)
        if value is None:
            raise ValueError(f"kd.method={name} needs kd.{key}; set kd.{key}=...")
        out[key] = check(key, value)
    return out


def _logit_method(name: str, p: dict[str, Any]) -> Method:
    if name == "kd":
        inner: KD | DKD = KD(p["temperature"], kd_weight=p["alpha"], ce_weight=1.0 - p["alpha"])
    elif name == "ls_kd":
        return LogitStandardKD(KD(p["temperature"], kd_weight=p["alpha"], ce_weight=p["ce_weight"]))
    elif name == "dkd":
        inner = DKD(p["temperature"], p["alpha"], p["beta"], p["ce_weight"], p["warmup_epochs"])
    else:
        return DIST(p["temperature"], p["alpha"], p["beta"], p["gamma"])
    return LogitStandardKD(inner) if p["standardize"] else inner


def build_method(
    kd_cfg: Mapping[str, Any],
    teacher: nn.Module | None = None,
    student: nn.Module | None = None,
    input_shape: Sequence[int] | None = None,
) -> Method:
    """The method ``kd_cfg.method`` names, with its hyperparameters checked.

    Feature methods also need ``teacher``, ``student`` and the data's ``input_shape``: their
    layer paths are checked and their shapes probed with one dummy forward of each model, so a
    wrong path or shapes no connector can bridge fail here, before any training.
    """
    name = check_method_name(kd_cfg.get("method", "kd"))
    p = method_params(kd_cfg)
    if not METHODS[name]:
        return _logit_method(name, p)
    if teacher is None or student is None or input_shape is None:
        raise ValueError(f"kd.method={name} reads features: build it with the teacher, the "
                         "student and the data's input_shape")  # fmt: skip
    s_paths, t_paths = p.pop("student_layers"), p.pop("teacher_layers")
    if len(s_paths) != len(t_paths):
        raise ValueError(
            f"kd.student_layers {list(s_paths)} and kd.teacher_layers {list(t_paths)} pair up "
            "in order: give as many of each"
        )
    s_shapes = probe_shapes(student, s_paths, input_shape, "student")
    t_shapes = probe_shapes(teacher, t_paths, input_shape, "teacher")
    common = (p.pop("temperature"), p.pop("alpha"), s_paths, t_paths)
    if name == "fitnet":
        pairs = zip(s_shapes, t_shapes, s_paths, t_paths, strict=True)
        connectors = [make_connector(s, t, sp, tp) for s, t, sp, tp in pairs]
        return FitNet(*common, beta=p["beta"], connectors=connectors)
    if name == "at":
        for s, t, sp, tp in zip(s_shapes, t_shapes, s_paths, t_paths, strict=True):
            if len(s) < 2 or len(t) < 2 or len(s) != len(t):
                raise ValueError(
                    f"attention transfer needs feature maps (C, H, W) of the same kind: "
                    f"kd.student_layers {sp!r} gives {s} per sample, kd.teacher_layers {tp!r} "
                    f"gives {t}; pick convolutional layers"
                )
        return AttentionTransfer(*common, beta=p["beta"], p=p["p"])
    if name == "rkd":
        return RKD(*common, distance_weight=p["distance_weight"], angle_weight=p["angle_weight"])
    return PKT(*common, beta=p["beta"])
