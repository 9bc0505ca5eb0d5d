"""An Optuna sweeper for Hydra (``hydra/sweeper=optuna``) on current Optuna (its ask/tell API).

    python -m kdlightning.train -m hparams_search=kd_optuna hydra.sweeper.n_trials=12

Hydra's own ``hydra-optuna-sweeper`` (1.3.0, the newest) requires ``optuna<3``: it cannot be
installed beside Optuna 5 (docs/sweeps_and_wandb.md). This plugin takes its config keys and
search-space syntax: :mod:`.config` (the keys), :mod:`.search_space` (interval / choice /
range), :mod:`.sweeper` (the loop). Hydra finds it by importing the ``hydra_plugins`` namespace
package, which is why it lives outside ``kdlightning``.
"""
