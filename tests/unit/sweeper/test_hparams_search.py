"""conf/hparams_search/: the Optuna searches compose with the sweeper and the directions the
jobs' return values need (accuracy up, bits per byte down)."""

from __future__ import annotations

import pytest
from conftest import CONF_DIR

from hydra_plugins.kdl_optuna_sweeper.search_space import parse_space


def compose_with_hydra(*overrides: str):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from kdlightning.job.resolvers import register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize(
    ("search", "direction", "data", "t_high"),
    [("kd_optuna", "maximize", "DigitsDataModule", 16.0), ("lm_optuna", "minimize", "PyDocs", 4.0)],
)
def test_searches_compose_with_their_direction(search, direction, data, t_high) -> None:
    cfg = compose_with_hydra(f"hparams_search={search}")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("kdl_optuna_sweeper.sweeper.OptunaSweeper")
    assert sweeper.direction == direction and sweeper.n_trials == 12
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler" and sweeper.sampler.seed == 0
    assert data in cfg.data._target_
    space, fixed = parse_space(sweeper.params, [])
    assert fixed == [] and set(space) == {"kd.temperature", "kd.alpha"}
    temperature = space["kd.temperature"].distribution
    assert (temperature.low, temperature.high, temperature.log) == (1.0, t_high, True)
    alpha = space["kd.alpha"].distribution
    assert (alpha.low, alpha.high, alpha.log) == (0.0, 1.0, False)


def test_the_sweeper_is_a_choice_of_its_own() -> None:
    cfg = compose_with_hydra("hydra/sweeper=optuna", "hydra.sweeper.n_trials=3")
    assert cfg.hydra.sweeper.n_trials == 3 and cfg.hydra.sweeper.params is None
    assert cfg.hydra.sweeper.direction == "minimize"  # the official plugin's default
