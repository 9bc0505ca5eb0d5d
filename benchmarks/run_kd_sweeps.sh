#!/usr/bin/env bash
# The README's follow-up sweeps (distilled student only; baseline=false since the student-alone
# numbers do not depend on T or alpha and are in the seed tables):
#   MNIST-1D over the temperature, Fashion-MNIST with alpha = 0.5 instead of 0.9.
#   nohup benchmarks/run_kd_sweeps.sh > logs/kd_sweeps.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1  # see run_seed_tables.sh
PY=${PYTHON:-python}
start=$(date +%s)
$PY -m kdlightning.train -m experiment=mnist1d kd.temperature=1,2,8 seed=0,1,2 baseline=false \
  hydra.sweep.dir=logs/multiruns/mnist1d_temperature
echo "WALL mnist1d_temperature: $(( $(date +%s) - start )) s"
$PY -m kdlightning.report logs/multiruns/mnist1d_temperature --by-role
start=$(date +%s)
$PY -m kdlightning.train -m experiment=fashion_mnist kd.alpha=0.5 seed=0,1,2 baseline=false \
  hydra.sweep.dir=logs/multiruns/fashion_mnist_alpha0.5
echo "WALL fashion_mnist_alpha0.5: $(( $(date +%s) - start )) s"
$PY -m kdlightning.report logs/multiruns/fashion_mnist_alpha0.5 --by-role
