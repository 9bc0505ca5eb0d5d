#!/usr/bin/env bash
# Optuna (TPE, hparams_search=kd_optuna) against a grid on the default job (digits, 100 labels,
# seed 0), for docs/sweeps_and_wandb.md:
#   nohup benchmarks/optuna_vs_grid.sh [grid] [optuna] [table] > logs/optuna_vs_grid.log 2>&1 &
# grid: 18 jobs, T in {1, 2, 4, 8, 12, 16} x alpha in {0.1, 0.5, 0.9} (conf/sweep/temperature_alpha
# widened to T = 16, the top of Optuna's range); optuna: 12 trials for each sweeper seed 0, 1, 2
# (its first 6 trials are the "6 trials" row); table: benchmarks/optuna_vs_grid.py. Every job has
# seed=0 (the same data and initialization), so only T and alpha differ; the teacher and the student
# alone come from the stage cache after the first job, and each job costs one distillation.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1  # see benchmarks/run_results.sh
PY=${PYTHON:-python}
LOGS=${LOGS:-logs/optuna_vs_grid}
COMMON=(seed=0 logger=none figures=false trainer.enable_progress_bar=false "paths.log_dir=$LOGS")
timed() {  # timed NAME CMD...: run, print the wall time
  local name=$1 start; shift; start=$(date +%s)
  "$@"
  echo "WALL $name: $(( $(date +%s) - start )) s"
}
for part in ${@:-grid optuna table}; do
  case $part in
  grid)
    timed grid $PY -m kdlightning.train -m kd.temperature=1,2,4,8,12,16 kd.alpha=0.1,0.5,0.9 \
      "${COMMON[@]}" "hydra.sweep.dir=$LOGS/grid" ;;
  optuna)
    for seed in 0 1 2; do
      timed "optuna_seed$seed" $PY -m kdlightning.train -m hparams_search=kd_optuna \
        hydra.sweeper.n_trials=12 "hydra.sweeper.sampler.seed=$seed" "${COMMON[@]}" \
        "hydra.sweep.dir=$LOGS/optuna_seed$seed"
    done ;;
  table)
    $PY benchmarks/optuna_vs_grid.py "$LOGS" ;;
  *) echo "unknown part $part (grid, optuna, table)"; exit 2 ;;
  esac
done
