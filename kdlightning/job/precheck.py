"""The checks that need only the composed config: they run before torch and Lightning load.

    python -m kdlightning.train kd.temperature=abc     # answers in about a second, status 2

``kdlightning.job.config.check_config`` checks what values mean (ranges, model arguments,
feature layers) and needs the package's torch code; it runs after the slow imports, still before
any work. What can be told from the config alone is checked here first:

- ``task`` is one of :data:`TASKS`;
- no ``???`` is left (``data=imagefolder`` without ``data.root``);
- a key the command line adds under ``kd``, ``data``, ... is one something reads
  (:func:`kdlightning.job.keys.check_added_keys`);
- a value the command line sets has the kind of the value it replaces: a number where the
  YAML file has a number, ``true``/``false`` where it has a boolean. The YAML value is read from
  the *baseline*, the config composed with the command line's group choices (``kd=dkd``,
  ``experiment=...``) but none of its settings. Under a ``_target_`` node only a float default
  is held to (integers and booleans there may take strings, e.g. ``trainer.devices=auto``,
  ``trainer.deterministic=warn``): the target's own checks see the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from kdlightning.job.errors import ConfigError
from kdlightning.job.keys import added_keys, check_added_keys, parse_overrides

log = logging.getLogger(__name__)

#: What ``task=`` can be.
TASKS = ("distill", "classify", "eval")

_ABSENT = object()


def check_task(task: Any) -> str:
    """``task`` if it is one of :data:`TASKS`, else ``ConfigError`` naming them."""
    if task not in TASKS:
        raise ConfigError(
            f"unknown task {task!r}: task={task!r} is not a task; use task=distill (teacher -> "
            "student, the default), task=classify (train teacher.model alone on hard labels) "
            "or task=eval eval.run_dir=DIR (score a finished run's model again)"
        )
    return task


def check_missing(cfg: DictConfig) -> None:
    """No ``???`` left: the first missing key, with how to set it."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(
            f"{', '.join(missing)} must be set (the config leaves it as ???), e.g. "
            f"{missing[0]}=<value> on the command line"
            + (" (the folder holding train/ and val/)" if missing[0] == "data.root" else "")
        )


def baseline_config(overrides: Sequence[str]) -> DictConfig | None:
    """The config as the YAML files define it for the command line's group choices, without
    its settings; ``None`` outside a running Hydra app (or if it cannot be composed)."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    gh = GlobalHydra.instance()
    if not gh.is_initialized() or not HydraConfig.initialized():
        return None
    loader = gh.config_loader()
    try:
        kept = [
            o.input_line
            for o in parse_overrides(overrides)
            if o.is_hydra_override()
            or ("." not in o.key_or_group and loader.get_group_options(o.key_or_group))
        ]
        return compose(config_name=HydraConfig.get().job.config_name, overrides=kept)
    except Exception as err:  # never stop a job for the check's own sake
        log.debug("no baseline config for the value checks: %s", err)
        return None


def _kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return None


def check_value_kinds(
    cfg: DictConfig, overrides: Sequence[str], baseline: DictConfig | None
) -> None:
    """A number where the YAML has a number, a boolean where it has a boolean (module doc)."""
    from hydra.core.override_parser.types import OverrideType

    if baseline is None:
        return
    for o in parse_overrides(overrides):
        key = o.key_or_group
        if o.is_hydra_override() or o.type not in (OverrideType.CHANGE, OverrideType.FORCE_ADD):
            continue
        default = OmegaConf.select(
            baseline, key, default=_ABSENT, throw_on_resolution_failure=False
        )
        kind = _kind(default)
        if default is _ABSENT or kind is None:
            continue
        parent = OmegaConf.select(cfg, key.rpartition(".")[0]) if "." in key else cfg
        targeted = isinstance(parent, DictConfig) and "_target_" in parent
        if targeted and not isinstance(default, float):
            continue
        value = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
        if value is None or _kind(value) == kind:
            continue
        if kind == "number":
            raise ConfigError(
                f"{key}={value!r} is not a number (its default is {default!r}); set {key}=<number>"
            )
        raise ConfigError(
            f"{key}={value!r} is not true or false (its default is "
            f"{str(default).lower()}); set {key}=true or {key}=false"
        )


def precheck(cfg: DictConfig, overrides: Sequence[str]) -> list[str]:
    """Every check of this module; returns the keys the command line added under the checked
    groups (:func:`kdlightning.job.keys.check_target_keys` checks those it could not)."""
    check_task(cfg.get("task", "distill"))
    check_missing(cfg)
    added = added_keys(overrides)
    plain = [o for o in overrides if "=" in o]  # group deletions (~kd) change no value
    baseline = baseline_config(overrides) if (added or plain) else None
    check_added_keys(cfg, overrides, baseline)
    check_value_kinds(cfg, overrides, baseline)
    return added
