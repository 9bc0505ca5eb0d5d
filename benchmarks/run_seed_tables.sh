#!/usr/bin/env bash
# The README's seed tables: MNIST-1D and Fashion-MNIST, 3 seeds each, on the CPU.
#   nohup benchmarks/run_seed_tables.sh > logs/seed_tables.log 2>&1 &
# OMP_NUM_THREADS=1: on a small shared machine, two OpenMP threads per process made small
# layers ~20x slower (threads spin-waiting for a busy core); one thread per process is faster.
# Each folder gets report_by_role.md (teacher / student alone / distilled, mean ± std).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
PY=${PYTHON:-python}
for exp in mnist1d fashion_mnist; do
  start=$(date +%s)
  $PY -m kdlightning.train -m "experiment=$exp" seed=0,1,2 "hydra.sweep.dir=logs/multiruns/$exp"
  echo "WALL $exp: $(( $(date +%s) - start )) s"
  $PY -m kdlightning.report "logs/multiruns/$exp" --by-role
done
