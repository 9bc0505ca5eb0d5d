"""Token-level distillation methods for language models, one class per ``conf/kd/<name>.yaml``.

    from kdlightning.lm.methods import JSD
    method = JSD(temperature=1.0, alpha=0.5, beta=0.5, chunk_size=64, on_policy=0.0,
                 prompt_tokens=16)                            # checks every argument once
    kd = method.divergence(student_logits, teacher_logits, mask)
    python -m kdlightning.train experiment=lm_pydocs kd=jsd kd.beta=0.3

Each class names one divergence of :mod:`kdlightning.lm.losses` and holds the hyperparameters a
:class:`kdlightning.lm.module.LMDistillationModule` trains with: ``temperature``, ``alpha`` (the
weight of the divergence against next-token cross-entropy), ``chunk_size`` (positions scored at
a time), ``on_policy`` / ``prompt_tokens`` (GKD's student-generated batches,
:mod:`kdlightning.lm.on_policy`). A bad value raises
:class:`~kdlightning.distill.methods.ArgumentError`, which the job's builder words as
``kd.<key>=<value>: ...``. The YAML files hold the only defaults (the constructors have none;
``LMDistillationModule(method="jsd", ...)`` builds one from its own arguments).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from kdlightning.distill.methods.base import (
    ArgumentError,
    check_count,
    check_temp,
    check_unit,
)
from kdlightning.lm.losses import check_beta, forward_kl, generalized_jsd, reverse_kl

__all__ = ["JSD", "ForwardKL", "ReverseKL", "TokenMethod", "token_method"]


def check_chunk(key: str, value: Any) -> int | None:
    """``None`` (every position at once) or a positive number of positions."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArgumentError(key, value, "{key}={value} must be a positive integer or null")
    return int(value)


def check_share(key: str, value: Any) -> float:
    """GKD's lambda: the share of training steps on student-generated sequences."""
    try:
        if isinstance(value, bool):
            raise TypeError
        f = float(value)
    except (TypeError, ValueError):
        f = float("nan")
    if not 0.0 <= f <= 1.0:
        raise ArgumentError(
            key, value,
            "{key}={value} must lie in [0, 1] (the share of batches the student generates; "
            "GKD's lambda); 0 switches it off",
        )  # fmt: skip
    return f


class TokenMethod:
    """A token-level divergence + next-token cross-entropy:
    ``alpha * T^2 * D(p_t, p_s) + (1 - alpha) * CE``, per scored token."""

    name = ""  # the kd.method that selects it
    #: a language-model method: text data only (the image task refuses it, and vice versa)
    token_level = True
    needs_features = False
    #: whether the divergence stays finite with a teacher truncated to its top-k tokens (cached
    #: top-k logits): only forward KL, where the teacher's zero-probability tokens add nothing
    allows_truncated_teacher = False

    def __init__(
        self,
        temperature: float,
        alpha: float,
        chunk_size: int | None,
        on_policy: float,
        prompt_tokens: int,
    ) -> None:
        self.temperature = check_temp("temperature", temperature)
        self.alpha = check_unit("alpha", alpha)
        self.chunk_size = check_chunk("chunk_size", chunk_size)
        self.on_policy = check_share("on_policy", on_policy)
        self.prompt_tokens = check_count("prompt_tokens", prompt_tokens)

    def function(self) -> Callable[..., Tensor]:
        """``(student_logits, teacher_logits, mask, temperature, chunk_size) -> Tensor``."""
        raise NotImplementedError

    def divergence(self, student_logits: Tensor, teacher_logits: Tensor, mask: Tensor) -> Tensor:
        """``T^2`` times the mean per-token divergence over the masked positions."""
        return self.function()(student_logits, teacher_logits, mask, self.temperature,
                               self.chunk_size)  # fmt: skip

    def __repr__(self) -> str:
        return f"{type(self).__name__}(temperature={self.temperature:g}, alpha={self.alpha:g})"


class ForwardKL(TokenMethod):
    """``KL(p_t || p_s)``: torchtune's KD recipe; Hinton et al. 2015 per token."""

    name = "forward_kl"
    allows_truncated_teacher = True

    def function(self) -> Callable[..., Tensor]:
        return forward_kl


class ReverseKL(TokenMethod):
    """``KL(p_s || p_t)``, mode-seeking (MiniLLM, Gu et al. 2023)."""

    name = "reverse_kl"

    def function(self) -> Callable[..., Tensor]:
        return reverse_kl


class JSD(TokenMethod):
    """GKD's generalized Jensen-Shannon divergence with mixture weight ``beta`` (Agarwal et al.
    2023): ``beta = 0`` is forward KL, ``1`` reverse KL, ``0.5`` the symmetric JSD."""

    name = "jsd"

    def __init__(
        self,
        temperature: float,
        alpha: float,
        beta: float,
        chunk_size: int | None,
        on_policy: float,
        prompt_tokens: int,
    ) -> None:
        super().__init__(temperature, alpha, chunk_size, on_policy, prompt_tokens)
        try:
            self.beta = check_beta(beta)
        except ValueError as err:
            text = str(err).replace("{", "{{").replace("}", "}}")
            raise ArgumentError("beta", beta, "{key}={value}: " + text) from None

    def function(self) -> Callable[..., Tensor]:
        beta = self.beta
        return lambda s, t, m, temperature=1.0, chunk_size=None: generalized_jsd(
            s, t, m, beta, temperature, chunk_size
        )


METHODS: dict[str, type[TokenMethod]] = {m.name: m for m in (ForwardKL, ReverseKL, JSD)}


def token_method(name: str, **kwargs: Any) -> TokenMethod:
    """The method called ``name`` (``forward_kl``, ``reverse_kl``, ``jsd``), built with
    ``kwargs`` (for the Python API, where a module is given a method's name)."""
    if name not in METHODS:
        raise ValueError(
            f"kd.method={name!r} is not a language-model method; use kd=forward_kl, "
            f"kd=reverse_kl or kd=jsd ({', '.join(METHODS)})"
        )
    cls = METHODS[name]
    if cls is not JSD:
        kwargs.pop("beta", None)
    return cls(**kwargs)
