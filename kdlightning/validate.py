"""Check a composed config before any work: every bad value named, with its fix.

    from kdlightning.validate import check_config
    check_config(cfg)   # raises ConfigError("kd.temperature='abc' is not a number; ...")

Hydra checks that keys exist; this module checks what their values mean (types, ranges, model
arguments), so that a typo stops the job in its first second with one line, not minutes later
with a traceback from inside torch, and so that an ignored value is never recorded as used.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf

from kdlightning.losses import check_alpha, check_temperature
from kdlightning.stages import check_teacher_logits

# Arguments every model builder receives from the data module, never from the config.
FROM_DATA = ("num_classes", "input_shape")


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key, the value and the fix."""


def _number(cfg: DictConfig, key: str, kind: type, low: float | None = None) -> Any:
    value = OmegaConf.select(cfg, key, default=None)
    if value is None:
        return None
    try:
        number = kind(value)
        if kind is int and number != float(value):
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(
            f"{key}={value!r} is not {'an integer' if kind is int else 'a number'}; "
            f"set {key}=<{'integer' if kind is int else 'number'}>"
        ) from None
    if isinstance(number, float) and not math.isfinite(number):
        raise ConfigError(f"{key}={value!r} is not a finite number")
    if low is not None and number < low:
        raise ConfigError(f"{key}={value!r} must be >= {low}")
    return number


def check_model_keys(cfg: DictConfig, role: str) -> None:
    """Refuse model arguments the builder does not take, and those the data set decides."""
    model_cfg = cfg.get(role, {}).get("model")
    if model_cfg is None or "_target_" not in model_cfg:
        return
    for key in FROM_DATA:
        if key in model_cfg:
            raise ConfigError(
                f"{role}.model.{key} is set from the data set (data={cfg.data._target_}); remove "
                f"{role}.model.{key} from the config or command line"
            )
    try:
        params = inspect.signature(get_method(str(model_cfg._target_))).parameters
    except Exception:  # not importable: build_model reports it with the role and the data
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    valid = sorted(k for k in params if k not in FROM_DATA)
    unknown = sorted(k for k in model_cfg if not str(k).startswith("_") and k not in params)
    if unknown:
        raise ConfigError(
            f"{role}.model has no argument {', '.join(unknown)} ({model_cfg._target_} takes: "
            f"{', '.join(valid)}); fix the name or remove it"
        )


def check_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first value that cannot work."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(
            f"{', '.join(missing)} must be set (the config leaves it as ???), e.g. "
            f"{missing[0]}=<value> on the command line"
            + (" (the folder holding train/ and val/)" if missing[0] == "data.root" else "")
        )
    _number(cfg, "seed", int)
    if cfg.get("task", "distill") == "distill":
        for key, check in (("kd.temperature", check_temperature), ("kd.alpha", check_alpha)):
            value = cfg.kd.get(key.split(".")[1])
            try:
                check(value)
            except ValueError as err:
                raise ConfigError(f"{key}={value!r}: {err}") from None
        try:
            check_teacher_logits(cfg.kd.get("teacher_logits", "online"))
        except ValueError as err:
            raise ConfigError(str(err)) from None
    epochs = _number(cfg, "trainer.max_epochs", int)
    if epochs is not None and epochs < 1:
        raise ConfigError(
            f"trainer.max_epochs={epochs} must be >= 1 (-1 would train forever); "
            "set trainer.max_epochs=30, say"
        )
    _number(cfg, "data.batch_size", int, low=1)
    _number(cfg, "data.num_labeled", int, low=1)
    _number(cfg, "cache.lock_timeout_s", float, low=0)
    for role in ("teacher", "student"):
        check_model_keys(cfg, role)
