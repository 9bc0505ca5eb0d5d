#!/usr/bin/env bash
# The figures in docs/figures/, regenerated on this machine (about 25 s):
#   benchmarks/figures.sh
# process.png: the KD diagram with the symbols T and alpha (kdlightning.figures.process_diagram).
# softmax_temperatures.png, tradeoff.png, learning_curves.png: what the default job
# (python -m kdlightning.train, seed 0) writes into its run folder's figures/, from a cold cache
# (its own log folder) so that every stage trains and leaves its CSV log.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1  # as make run: the README's figures were measured with one thread
PY=${PYTHON:-python}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
$PY -m kdlightning.train "paths.log_dir=$tmp" "hydra.run.dir=$tmp/run" \
  trainer.enable_progress_bar=false
for name in softmax_temperatures tradeoff learning_curves; do
  cp "$tmp/run/figures/$name.png" "docs/figures/$name.png"
done
$PY -c 'from pathlib import Path
from kdlightning.figures import process_diagram, save_figure
print(save_figure(process_diagram(), Path("docs/figures/process.png")))'
ls -l docs/figures
