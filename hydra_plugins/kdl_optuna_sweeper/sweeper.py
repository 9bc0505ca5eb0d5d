"""The Optuna sweeper: Optuna's ask/tell loop, each trial a job of Hydra's configured launcher.

    python -m kdlightning.train -m hparams_search=kd_optuna                  # 12 trials, TPE
    python -m kdlightning.train -m hydra/sweeper=optuna hydra.sweeper.n_trials=20 \\
        hydra.sweeper.direction=maximize kd.temperature='tag(log, interval(1, 16))' \\
        kd.alpha='interval(0, 1)'

Each batch of ``n_jobs`` trials is asked of the study (:meth:`optuna.Study.ask` with the search
space of :mod:`.search_space`), launched through ``hydra/launcher`` (the basic launcher runs them
one after another, submitit's in parallel, locally or on SLURM) and told back with the value each
job returned. The job folder ``<sweep dir>/<n>`` is trial number ``n``. A job that raises or
returns no finite number is told to Optuna as failed and the study goes on; only when no trial
of the run finishes does the sweep end with an error (the first job's, so a config mistake
prints its one ``error:`` line). At the end ``<sweep dir>/optimization_results.yaml`` holds the
best parameters and value, as Hydra's official Optuna sweeper writes it.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.kdl_optuna_sweeper.search_space import parse_space
from kdlightning.job.errors import ConfigError

log = logging.getLogger(__name__)

DIRECTIONS = ("minimize", "maximize")


def trial_value(job_return: Any) -> tuple[float | None, str | None]:
    """(the value to tell Optuna, None) for a finished job; (None, why) for a failed one."""
    try:
        value = job_return.return_value  # re-raises what the job raised
    except Exception as err:
        return None, f"{type(err).__name__}: {err}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None, f"returned {value!r}, not a number"
    if not math.isfinite(value):
        return None, f"returned {value!r}"
    return float(value), None


class OptunaSweeper(Sweeper):
    """``hydra/sweeper=optuna`` (config: :class:`.config.OptunaSweeperConf`)."""

    def __init__(
        self,
        sampler: Any,
        direction: str,
        n_trials: int,
        n_jobs: int,
        study_name: str | None = None,
        storage: str | None = None,
        params: Any = None,
    ) -> None:
        if direction not in DIRECTIONS:
            raise ConfigError(
                f"hydra.sweeper.direction={direction!r}: use minimize or maximize (the value "
                "each job returns: validation accuracy is maximized, bits per byte minimized)"
            )
        for key, value in (("n_trials", n_trials), ("n_jobs", n_jobs)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"hydra.sweeper.{key}={value!r}: give a whole number >= 1")
        self.sampler, self.direction = sampler, direction
        self.n_trials, self.n_jobs = n_trials, n_jobs
        self.study_name, self.storage = study_name, storage
        self.params = OmegaConf.to_container(params) if isinstance(params, DictConfig) else params
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Any = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def _study(self) -> Any:
        import optuna
        from hydra.utils import instantiate

        sampler = self.sampler  # Hydra instantiates it with the sweeper; by hand it is a config
        if isinstance(sampler, DictConfig | dict):
            sampler = instantiate(sampler)
        return optuna.create_study(
            study_name=self.study_name,
            storage=self.storage,
            sampler=sampler,
            direction=self.direction,
            load_if_exists=True,  # storage + study_name: a second run adds trials to the study
        )

    def sweep(self, arguments: list[str]) -> list[Any]:
        """Run ``n_trials`` trials; returns every job's ``JobReturn``, batch by batch."""
        from optuna.trial import TrialState

        assert self.config is not None and self.hydra_context is not None
        space, fixed = parse_space(self.params, arguments, self.hydra_context.config_loader)
        if not space:
            raise ConfigError(
                "hydra/sweeper=optuna has nothing to search: give hydra.sweeper.params or a "
                "sweep on the command line, e.g. kd.alpha='interval(0, 1)' (or hparams_search="
                "kd_optuna)"
            )
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        study = self._study()
        log.info(
            "Optuna study %s: %d trials, %s, %s over %s",
            study.study_name, self.n_trials, self.direction, type(study.sampler).__name__,
            ", ".join(space),
        )  # fmt: skip
        returns, first_error, done, finished = [], None, 0, 0
        while done < self.n_trials:
            trials = [study.ask(fixed_distributions={k: d.distribution for k, d in space.items()})
                      for _ in range(min(self.n_jobs, self.n_trials - done))]  # fmt: skip
            batch = [
                [*fixed, *(f"{k}={d.override_value(t.params[k])}" for k, d in space.items())]
                for t in trials
            ]
            try:
                self.validate_batch_is_legal(batch)
                results = self.launcher.launch(batch, initial_job_idx=trials[0].number)
            except BaseException:  # a config that does not compose, a launcher that died
                for trial in trials:
                    study.tell(trial, state=TrialState.FAIL)
                raise
            for trial, result in zip(trials, results, strict=True):
                value, why = trial_value(result)
                if why is None:
                    study.tell(trial, value)
                    finished += 1
                    log.info("trial %d: %s = %s", trial.number, trial.params, value)
                    continue
                study.tell(trial, state=TrialState.FAIL)
                log.warning("trial %d failed (told to Optuna as failed): %s", trial.number, why)
                first_error = first_error or result
            returns.append(results)
            done += len(trials)
        if finished == 0:
            log.error("all %d trials failed; the first one's error follows", done)
            _ = first_error.return_value  # raises the first trial's exception
            raise RuntimeError(f"all {done} trials failed; see the job folders in {sweep_dir}")
        self._write_results(study, sweep_dir, done - finished)
        return returns

    def _write_results(self, study: Any, sweep_dir: Path, failed: int) -> None:
        best = {"name": "optuna", "best_params": study.best_params, "best_value": study.best_value}
        best["best_trial"], best["n_trials"] = study.best_trial.number, len(study.trials)
        best["failed_this_run"], best["direction"] = failed, self.direction
        OmegaConf.save(OmegaConf.create(best), sweep_dir / "optimization_results.yaml")
        log.info("Best parameters: %s", study.best_params)
        log.info("Best value: %s (trial %d)", study.best_value, study.best_trial.number)
