"""Hydra sweep overrides as an Optuna search space, in the official Optuna sweeper's syntax.

    from hydra_plugins.kdl_optuna_sweeper.search_space import parse_space
    space, fixed = parse_space({"kd.temperature": "tag(log, interval(1, 16))"}, ["kd.alpha=0.5"])
    space["kd.temperature"].distribution   # FloatDistribution(low=1.0, high=16.0, log=True)
    fixed                                  # ["kd.alpha=0.5"]: the same in every trial

One key, one dimension:

- ``interval(a, b)``: a float in [a, b]; ``tag(log, interval(a, b))`` log-uniform (a > 0);
  ``tag(int, interval(a, b))`` an integer in [a, b], ``tag(int, log, ...)`` both;
- ``choice(a, b, c)`` or ``a,b,c``: one of the values (categorical);
- ``range(start, stop[, step])``: Hydra's range, ``stop`` excluded as in a grid sweep: an integer
  dimension with that step for integers, otherwise one of its values;
- any other value (``seed=0``, ``student=cnn``): fixed, passed to every trial as written.

``hydra.sweeper.params`` come first and the command line's overrides after them; the last one
for a key wins (``kd.temperature=4`` on the command line fixes what params would search).
Optuna is imported only here and in the sweeper's ``sweep``: Hydra imports every plugin module
at start-up, and optuna's import (~1 s) must not slow down every ``kdl-train`` command.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
    Transformer,
)

from kdlightning.job.errors import ConfigError

INTERVAL_TAGS = frozenset({"log", "int"})


class Dimension(NamedTuple):
    """One searched key: its Optuna distribution and, for a categorical one, each choice as
    the override text a job receives (``labels[i]`` for ``distribution.choices[i]``).
    A NamedTuple, not a dataclass: Hydra's plugin scan runs this module outside sys.modules,
    where a dataclass with string annotations cannot be built."""

    distribution: Any  # optuna.distributions.BaseDistribution
    labels: tuple[str, ...] = ()

    def override_value(self, value: Any) -> str:
        """``value`` (what Optuna suggested) as the text after ``key=`` in a job's override."""
        if self.labels:
            return self.labels[self.distribution.choices.index(value)]
        if isinstance(value, float):
            return repr(value)  # every digit: the job runs the value Optuna was told about
        return str(value)


def _interval(key: str, text: str, sweep: IntervalSweep) -> Any:
    from optuna.distributions import FloatDistribution, IntDistribution

    unknown = sorted(set(sweep.tags) - INTERVAL_TAGS)
    if unknown:
        raise ConfigError(
            f"{key}={text}: unknown tag {', '.join(unknown)}; an interval takes the tags log "
            f"and int, e.g. {key}='tag(log, interval(1, 16))'"
        )
    low, high, log = float(sweep.start), float(sweep.end), "log" in sweep.tags
    if not low < high:
        raise ConfigError(
            f"{key}={text}: the interval is empty (start {low:g} >= end {high:g}); write "
            f"interval(low, high) with low < high"
        )
    if log and low <= 0:
        raise ConfigError(
            f"{key}={text}: a log interval must start above 0, not at {low:g}; e.g. "
            f"{key}='tag(log, interval({max(high / 16, 1e-3):g}, {high:g}))'"
        )
    if "int" in sweep.tags:
        ilow, ihigh = math.ceil(low), math.floor(high)
        if ilow > ihigh:
            raise ConfigError(f"{key}={text}: no integer lies in [{low:g}, {high:g}]")
        return IntDistribution(ilow, ihigh, log=log)
    return FloatDistribution(low, high, log=log)


def _range(sweep: RangeSweep, items: list[Any]) -> Any:
    from optuna.distributions import CategoricalDistribution, IntDistribution

    numbers = (sweep.start, sweep.stop, sweep.step)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in numbers) and sweep.step > 0:
        # the same values as a grid over range(...) gives; Optuna's high is inclusive
        return IntDistribution(items[0], items[-1], step=sweep.step)
    return CategoricalDistribution(items)


def dimension(override: Override) -> Dimension:
    """The search dimension of one sweep override (``override.is_sweep_override()``)."""
    from optuna.distributions import CategoricalDistribution

    key, value = override.get_key_element(), override.value()
    text = override.input_line.split("=", 1)[-1] if override.input_line else str(value)
    if isinstance(value, IntervalSweep):
        return Dimension(_interval(key, text, value))
    items = list(override.sweep_iterator(transformer=Transformer.identity))
    if not items:
        raise ConfigError(f"{key}={text}: the sweep has no value; give at least one")
    if isinstance(value, RangeSweep):
        dist = _range(value, items)
        if not isinstance(dist, CategoricalDistribution):
            return Dimension(dist)
    elif not isinstance(value, ChoiceSweep):
        raise ConfigError(
            f"{key}={text}: the Optuna sweeper takes interval(...), choice(...), a,b,c or "
            f"range(...) (this is a {type(value).__name__})"
        )
    labels = tuple(Transformer.str(x) for x in items)
    # Optuna stores choices as None/bool/int/float/str; a list or dict choice is its text
    choices = [x if x is None or isinstance(x, bool | int | float | str) else lab
               for x, lab in zip(items, labels, strict=True)]  # fmt: skip
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{key}={text}: a choice is listed twice; list each value once")
    return Dimension(CategoricalDistribution(choices), labels)


def parse_space(
    params: Mapping[str, Any] | None,
    arguments: Sequence[str],
    config_loader: Any = None,
) -> tuple[dict[str, Dimension], list[str]]:
    """``hydra.sweeper.params`` and the command line's overrides as (the searched dimensions
    by override key, the fixed overrides every trial gets); see the module doc."""
    lines = [f"{k}={v}" for k, v in (params or {}).items()] + list(arguments)
    parser = OverridesParser.create(config_loader=config_loader)
    space: dict[str, Dimension] = {}
    fixed: dict[str, str] = {}
    for override in parser.parse_overrides(lines):
        key = override.get_key_element()
        space.pop(key, None)
        fixed.pop(key, None)
        if override.is_sweep_override():
            space[key] = dimension(override)
        else:
            fixed[key] = override.input_line or f"{key}={override.get_value_element_as_str()}"
    return space, list(fixed.values())
