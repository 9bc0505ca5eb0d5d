"""No setting silently dropped: keys nothing reads are refused, with the nearest valid key.

    $ python -m kdlightning.train +kd.temprature=4
    error: kd.temprature is not a setting (did you mean kd.temperature?); fix the name or remove it

Without the ``+`` Hydra refuses the typo itself but suggests the ``+``; with it, the key used to
be added, read by nobody, and the job trained with T=2 and exited 0. What a group accepts:

- a node with a ``_target_`` (``data``, ``trainer``, ``optim.optimizer``, ``teacher.model``,
  the callbacks' and the loggers' entries): the arguments of the target's signature (anything,
  if it takes ``**kwargs``). The job passes every key of such a node to the target, so
  :func:`check_target_keys` checks every key the composed config holds there, from the command
  line or from a YAML file;
- a node without one (``kd`` today, ``teacher``, ``optim``): the keys its YAML files define.
  The job reads those by name, so a key the command line adds (``+kd.x`` / ``++kd.x``) that the
  config without the command line's settings lacks is read by nobody (:func:`check_added_keys`).

We chose to check what each group's own config and its target accept, over a structured config
(a dataclass schema per group): the YAML files and the constructors stay the single place where
a setting and its default live, a new method or data module needs no schema of its own, and the
check follows the code instead of a copy of it. The cost is that a node without ``_target_``
is only checked for what the command line adds; a typo inside a YAML file there (``kd:`` of an
experiment) is not caught here (Hydra's struct mode cannot tell it either).

Every Lightning ``Trainer`` argument is listed in ``conf/trainer/default.yaml`` with Lightning's
default (tests/unit/job/test_config.py keeps the list equal to the signature), so ``trainer.<arg>=``
works without ``+``; the three the job sets per stage are refused (:data:`SET_BY_THE_JOB`).

Only :func:`check_target_keys` imports the targets (torch, Lightning): the other checks run on
the composed config alone, before the slow imports (``kdlightning.job.precheck``).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator
from typing import Any

from omegaconf import DictConfig, OmegaConf

from kdlightning.job.errors import ConfigError, closest

#: The groups whose keys are checked.
GROUPS = ("kd", "data", "teacher", "student", "optim", "trainer")
#: ... and where every ``_target_`` node's keys are checked against its signature: also the
#: callbacks and loggers (their entries are open: ``+callbacks.mine={_target_: ...}`` adds one).
TARGET_GROUPS = (*GROUPS, "callbacks", "logger")

#: Trainer arguments the job sets for each stage (kdlightning.job.build.make_trainer): a value
#: given as trainer.<arg> would be replaced, so it is refused with where to set it instead.
SET_BY_THE_JOB = {
    "trainer.callbacks": "callbacks= (conf/callbacks/)",
    "trainer.logger": "logger= (conf/logger/, logger=none for none)",
    "trainer.default_root_dir": "hydra.run.dir= (each stage writes into <run dir>/<stage>)",
}

# instantiate()'s own keys: never constructor arguments
_HYDRA_KEYS = ("_target_", "_partial_", "_convert_", "_recursive_", "_args_")


def not_a_setting(key: str, valid: Iterable[str], target: str | None = None) -> ConfigError:
    """``ConfigError``: ``key`` is read by nothing; the nearest valid key, else the valid ones."""
    where, _, leaf = key.rpartition(".")
    valid = sorted({str(v) for v in valid} - {leaf})
    near = closest(leaf, valid)
    owner = f" ({target} takes no argument {leaf})" if target else ""
    if near:
        hint = f"did you mean {where + '.' if where else ''}{near}?"
    else:
        shown = ", ".join(valid[:25]) + (", ..." if len(valid) > 25 else "")
        hint = f"{where or 'the config'} has: {shown}" if valid else f"{where} takes no settings"
    return ConfigError(f"{key} is not a setting{owner} ({hint}); fix the name or remove it")


def parse_overrides(overrides: Iterable[str]) -> list[Any]:
    """Hydra's parsed form (``hydra.core.override_parser.types.Override``) of ``overrides``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(list(overrides))


def _in_groups(key: str) -> bool:
    # "kd.temprature", not "kd" (a group choice) nor "kd/x" or "a@b" (group paths / packages)
    return "." in key and "/" not in key and "@" not in key and key.split(".")[0] in GROUPS


def _added(overrides: Iterable[str]) -> list[tuple[str, bool]]:
    from hydra.core.override_parser.types import OverrideType

    kinds = (OverrideType.ADD, OverrideType.FORCE_ADD)
    return [
        (o.key_or_group, o.type is OverrideType.FORCE_ADD)
        for o in parse_overrides(overrides)
        if o.type in kinds and not o.is_hydra_override() and _in_groups(o.key_or_group)
    ]


def added_keys(overrides: Iterable[str]) -> list[str]:
    """Keys under :data:`GROUPS` that the command line adds (``+key=`` or ``++key=``)."""
    return [key for key, _ in _added(overrides)]


_ABSENT = object()


def _parent(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key.rpartition(".")[0], default=None) if "." in key else cfg


def _first_new(key: str, baseline: DictConfig) -> str | None:
    """The shortest prefix of ``key`` that ``baseline`` lacks (``None``: it has ``key``)."""
    parts = key.split(".")
    for i in range(1, len(parts) + 1):
        prefix = ".".join(parts[:i])
        if OmegaConf.select(baseline, prefix, default=_ABSENT) is _ABSENT:
            return prefix
    return None


def check_added_keys(
    cfg: DictConfig, overrides: Iterable[str], baseline: DictConfig | None
) -> None:
    """Refuse a key the command line adds (``+key=``, ``++key=``) under a node without
    ``_target_`` when the config without the command line's settings (``baseline``) lacks it:
    the job reads such nodes by name, so nothing would read it.

    ``+kd.a.b=1`` is reported as ``kd.a``, the first part that does not exist. A key added
    under a ``_target_`` node is left to :func:`check_target_keys` (it needs the target's
    signature, an import). Without a baseline, ``++key=`` (add or change) is not checked.
    """
    for key, forced in _added(overrides):
        if key in SET_BY_THE_JOB:
            raise _set_by_the_job(key)
        if baseline is None:
            if forced:
                continue
            new: str | None = key  # +key= fails in Hydra when the key exists
        else:
            new = _first_new(key, baseline)
        if new is None:
            continue  # ++key= on a key the YAML files define: a plain change
        parent = _parent(cfg, new)
        # under a _target_ node a key may be an argument the YAML leaves at its default: its
        # signature decides (check_target_keys). Not under kd: a method's YAML holds every
        # argument its class takes (no defaults in the constructors), so a new key is a typo.
        if isinstance(parent, DictConfig) and "_target_" in parent and new.split(".")[0] != "kd":
            continue
        siblings = [str(k) for k in parent] if isinstance(parent, DictConfig) else []
        raise not_a_setting(new, siblings)


def _set_by_the_job(key: str) -> ConfigError:
    return ConfigError(f"{key} is set by the job for each stage; use {SET_BY_THE_JOB[key]}")


def target_nodes(
    cfg: DictConfig, groups: Iterable[str] = TARGET_GROUPS
) -> Iterator[tuple[str, Any]]:
    """``(key, node)`` of every node with a ``_target_`` under ``groups``, outermost first."""

    def walk(path: str, node: Any) -> Iterator[tuple[str, Any]]:
        if not isinstance(node, DictConfig):
            return
        if "_target_" in node:
            yield path, node
        for k in node:
            if not str(k).startswith("_"):
                yield from walk(f"{path}.{k}", node._get_node(k))

    for group in groups:
        if group in cfg:
            yield from walk(group, cfg._get_node(group))


def signature_of(target: str) -> inspect.Signature | None:
    """The signature of the callable ``target`` names (it is imported); ``None`` if it cannot
    be imported or read (the job's own build step reports an unimportable target)."""
    from hydra.utils import get_object

    try:
        return inspect.signature(get_object(target))
    except Exception:
        return None


#: Keys of ``kd`` the job reads and the method's class does not take (the builder sets them
#: aside: :func:`kdlightning.job.build.build_method`).
KD_JOB_KEYS = (
    "method", "teacher_logits", "verify_cached_logits", "logits_dtype", "logits_topk", "mix",
    "mix_alpha",
    "teacher_topk",  # the language-model methods' cached top-k (kdlightning.lm.cached)
)  # fmt: skip


def check_target_keys(cfg: DictConfig, added: Iterable[str] = (), skip: Iterable[str] = ()) -> None:
    """Refuse keys a ``_target_`` node holds that its target takes no argument for (a typo
    from the command line or a YAML file would make instantiate() fail with a traceback), and
    the command line's additions (``added``) that no target takes.

    ``skip``: top-level groups whose own YAML keys are not all constructor arguments (the
    job reads some by name), so only the command line's additions are checked there.
    """
    added = list(added)
    for key in added:
        if key in SET_BY_THE_JOB:
            raise _set_by_the_job(key)
    skip = tuple(skip)
    for path, node in target_nodes(cfg):
        sig = signature_of(str(node._target_))
        if sig is None or any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
            continue
        params = [p for p in sig.parameters if p != "self"]
        taken = [k for k in params if f"{path}.{k}" not in SET_BY_THE_JOB]
        if path.split(".")[0] in skip and "." not in path:
            keys = [str(k) for k in node if f"{path}.{k}" in added]
        else:
            keys = [str(k) for k in node if not str(k).startswith("_")]
        if path == "kd":  # the method's class: the job's own kd keys are set aside for it
            keys = [k for k in keys if k not in KD_JOB_KEYS]
        for key in keys:
            if key not in params and key not in _HYDRA_KEYS:
                raise not_a_setting(f"{path}.{key}", taken, str(node._target_))
