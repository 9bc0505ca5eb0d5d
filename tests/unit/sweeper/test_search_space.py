"""The Optuna sweeper's search-space syntax (hydra_plugins/kdl_optuna_sweeper/search_space.py):
the official Optuna sweeper's interval / tag / choice / range forms, as Optuna distributions."""

from __future__ import annotations

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hydra_plugins.kdl_optuna_sweeper.search_space import parse_space
from kdlightning.job.errors import ConfigError


def one(spec: str, key: str = "kd.temperature"):
    space, fixed = parse_space({key: spec}, [])
    assert fixed == [] and list(space) == [key]
    return space[key]


def test_interval_forms_give_float_and_int_distributions() -> None:
    assert one("interval(0, 1)").distribution == FloatDistribution(0.0, 1.0)
    assert one("tag(log, interval(1, 16))").distribution == FloatDistribution(1.0, 16.0, log=True)
    assert one("tag(int, interval(2, 8))").distribution == IntDistribution(2, 8)
    assert one("tag(int, log, interval(1, 64))").distribution == IntDistribution(1, 64, log=True)
    # an int interval with fractional ends keeps the integers inside it
    assert one("tag(int, interval(1.5, 4.5))").distribution == IntDistribution(2, 4)


def test_choices_and_ranges() -> None:
    dim = one("choice(1, 2, 4)")
    assert dim.distribution == CategoricalDistribution([1, 2, 4])
    assert dim.override_value(4) == "4"
    assert one("1,2,4").distribution == CategoricalDistribution([1, 2, 4])  # a grid's list
    names = one("mlp,cnn", key="student")
    assert names.distribution.choices == ("mlp", "cnn") and names.override_value("cnn") == "cnn"
    # Hydra's range excludes its stop, as in a grid sweep: 1, 3, 5, 7
    assert one("range(1, 9, 2)").distribution == IntDistribution(1, 7, step=2)
    # float steps: the values a grid would run, as choices
    assert one("range(0.25, 1.0, 0.25)").distribution.choices == (0.25, 0.5, 0.75)
    # a list choice is passed to the job as Hydra writes it
    channels = one("choice([8,16],[16,32])", key="student.model.channels")
    assert channels.distribution.choices == ("[8,16]", "[16,32]")
    assert channels.override_value("[16,32]") == "[16,32]"


def test_float_values_reach_the_job_with_every_digit() -> None:
    dim = one("interval(0, 1)")
    assert dim.override_value(0.1234567890123) == "0.1234567890123"
    assert float(dim.override_value(1 / 3)) == 1 / 3


def test_command_line_replaces_params_and_fixed_values_pass_through() -> None:
    params = {"kd.temperature": "tag(log, interval(1, 16))", "kd.alpha": "interval(0, 1)"}
    space, fixed = parse_space(params, ["kd.alpha=0.5", "debug=fast", "+x.y=interval(2, 3)"])
    assert list(space) == ["kd.temperature", "+x.y"]
    assert fixed == ["kd.alpha=0.5", "debug=fast"]
    space, _ = parse_space(params, ["kd.temperature=interval(2, 4)"])
    assert space["kd.temperature"].distribution == FloatDistribution(2.0, 4.0)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tag(log, interval(0, 16))", "a log interval must start above 0"),
        ("interval(4, 2)", "the interval is empty"),
        ("tag(fast, interval(1, 2))", "unknown tag fast"),
        ("tag(int, interval(1.2, 1.8))", "no integer lies in"),
        ("choice(1, 1)", "listed twice"),
    ],
)
def test_bad_spaces_name_the_key_and_the_fix(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        parse_space({"kd.temperature": spec}, [])
    assert str(err.value).startswith("kd.temperature=")
