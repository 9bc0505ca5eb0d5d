#!/usr/bin/env bash
# Every result table in README.md and docs/results.md, regenerated on this machine:
#   nohup benchmarks/run_results.sh [default|sweep|fashion|fashion_full|mnist1d|lm|methods ...] > logs/results.log 2>&1 &
# Each part prints its wall time and writes report_by_role.md (teacher / student alone /
# distilled: mean ± std over seeds, the gain paired per seed) into its multirun folder.
# OMP_NUM_THREADS=1: on a small shared machine, two OpenMP threads per process made small
# layers ~20x slower (threads spin-waiting for a busy core); one thread per process is faster.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
PY=${PYTHON:-python}
LOGS=${LOGS:-logs/results}
parts=("${@:-default_sweep default full_labels sweep fashion mnist1d lm methods}")
timed() {  # timed NAME CMD...: run, print the wall time
  local name=$1 start; shift; start=$(date +%s)
  "$@"
  echo "WALL $name: $(( $(date +%s) - start )) s"
}
for part in ${parts[*]}; do
  case $part in
  default_sweep)  # how the default T and alpha were chosen: on validation, 3 seeds
    timed default_sweep $PY -m kdlightning.train -m kd.temperature=2,4,8 kd.alpha=0.5,0.9 \
      seed=0,1,2 logger=none trainer.enable_progress_bar=false "paths.log_dir=$LOGS/default_sweep" \
      "hydra.sweep.dir=$LOGS/default_sweep/sweep"
    $PY -m kdlightning.report "$LOGS/default_sweep/sweep" ;;
  full_labels)  # every label for every model: experiment=digits_full_labels, seeds 0, 1, 2
    timed full_labels $PY -m kdlightning.train -m experiment=digits_full_labels seed=0,1,2 \
      "paths.log_dir=$LOGS/full_labels" "hydra.sweep.dir=$LOGS/full_labels/sweep"
    $PY -m kdlightning.report "$LOGS/full_labels/sweep" --by-role ;;
  default)  # the default job (python -m kdlightning.train) over seeds 0, 1, 2
    timed default $PY -m kdlightning.train -m seed=0,1,2 "paths.log_dir=$LOGS/default" \
      "hydra.sweep.dir=$LOGS/default/sweep"
    $PY -m kdlightning.report "$LOGS/default/sweep" --by-role ;;
  sweep)  # a 12-job T x alpha sweep, teacher logits online vs cached (teacher and baseline
    # trained once beforehand by a warm-up job, so both sweeps only distill)
    $PY -m kdlightning.train "paths.log_dir=$LOGS/sweep" "hydra.run.dir=$LOGS/sweep/warmup"
    for mode in online cached; do
      timed "sweep_$mode" $PY -m kdlightning.train -m +sweep=temperature_alpha \
        "kd.teacher_logits=$mode" "paths.log_dir=$LOGS/sweep" "hydra.sweep.dir=$LOGS/sweep/$mode"
      $PY -m kdlightning.report "$LOGS/sweep/$mode"
    done ;;
  fashion)  # Fashion-MNIST: one teacher, then 3 seeds x (every label, 1000 labels)
    [ -f "$LOGS/fashion/teacher/results.json" ] || timed fashion_teacher \
      $PY -m kdlightning.train experiment=fashion_mnist task=classify trainer.max_epochs=15 \
      "paths.log_dir=$LOGS/fashion" "hydra.run.dir=$LOGS/fashion/teacher"
    timed fashion_students $PY -m kdlightning.train -m experiment=fashion_mnist seed=0,1,2 \
      data.num_labeled=null,1000 "paths.log_dir=$LOGS/fashion" \
      "teacher.checkpoint=$LOGS/fashion/teacher/teacher/checkpoints/best.ckpt" \
      "hydra.sweep.dir=$LOGS/fashion/students"
    $PY -m kdlightning.report "$LOGS/fashion/students" --by-role ;;
  fashion_full)  # issue 22, every label (docs/results.md: what was tried and found). The teacher
    # is trained once on augmented views (crops, flips; 30 epochs). Per student, on the clean
    # images with the teacher's logits stored once (30 epochs): the student alone vs kd / dkd /
    # dist, a grid each, the setting chosen on validation by benchmarks/methods_table.py; then, at
    # 100 epochs, the MLP-16's two best kd settings and its best dist one. Consistent teaching
    # (an online teacher on the same mixed batch: function matching, kd.mix=mixup) comes last.
    # FASHION_PARTS narrows it (mlp16 cnn long mixup); FASHION_SEEDS the seeds (0,1,2).
    # FASHION_TEACHER=PATH.ckpt: a teacher trained before by the command below, not retrained.
    F=$LOGS/fashion_full
    teacher=${FASHION_TEACHER:-$F/teacher/teacher/checkpoints/best.ckpt}
    [ -n "${FASHION_TEACHER:-}" ] || [ -f "$F/teacher/results.json" ] || timed fashion_full_teacher \
      $PY -m kdlightning.train experiment=fashion_mnist_full task=classify trainer.max_epochs=30 \
      data.augment=true "paths.log_dir=$F" "hydra.run.dir=$F/teacher"
    clean=(experiment=fashion_mnist_full data.augment=false
           "seed=${FASHION_SEEDS:-0,1,2}" trainer.enable_progress_bar=false logger=csv figures=false
           "teacher.checkpoint=$teacher" "paths.log_dir=$F")
    # each line: part (for FASHION_PARTS), student, folder under $F, epochs, the grid's overrides
    # (every weight given: the experiment's kd.temperature and kd.alpha are KD's, and dkd's alpha
    # (TCKD) and dist's (cross-entropy) are other weights under the same key)
    grids=("mlp16 mlp16 mlp16/kd_none 30 kd=kd kd.temperature=1,2,4 kd.alpha=0.3,0.6,0.9"
           "mlp16 mlp16 mlp16/dkd_none 30 kd=dkd kd.temperature=4 kd.alpha=0.9 kd.beta=1,4 kd.warmup_epochs=5"
           "mlp16 mlp16 mlp16/dist_none 30 kd=dist kd.temperature=1,4 kd.alpha=0.9"
           "cnn cnn cnn/kd_none 30 kd=kd kd.temperature=4 kd.alpha=0.5"
           "cnn cnn cnn/kd_lowT 30 kd=kd kd.temperature=1 kd.alpha=0.6"
           "cnn cnn cnn/dist_none 30 kd=dist kd.temperature=1 kd.alpha=0.9"
           "long mlp16 mlp16_long/kd_none 100 kd=kd kd.temperature=2 kd.alpha=0.3,0.6"
           "long mlp16 mlp16_long/dist_none 100 kd=dist kd.temperature=1 kd.alpha=0.9"
           "mixup mlp16 mlp16/kd_mixup 30 kd=kd kd.temperature=2 kd.alpha=0.6 kd.mix=mixup")
    for grid in "${grids[@]}"; do
      read -r part student folder epochs args <<< "$grid"
      [[ " ${FASHION_PARTS:-mlp16 cnn long mixup} " == *" $part "* ]] || continue
      logits=cached
      [[ $args == *kd.mix=mixup* ]] && logits=online  # mixed images: the teacher runs on them
      # shellcheck disable=SC2086  # $args: the grid's overrides, one word each
      timed "fashion_full_${folder//\//_}" $PY -m kdlightning.train -m "${clean[@]}" \
        "kd.teacher_logits=$logits" "student=$student" "trainer.max_epochs=$epochs" $args \
        "hydra.sweep.dir=$F/$folder"
    done
    for part in mlp16 cnn mlp16_long; do
      [ ! -d "$F/$part" ] || $PY benchmarks/methods_table.py "$F/$part"
    done ;;
  mnist1d)
    timed mnist1d $PY -m kdlightning.train -m experiment=mnist1d seed=0,1,2 \
      "paths.log_dir=$LOGS/mnist1d" "hydra.sweep.dir=$LOGS/mnist1d/sweep"
    $PY -m kdlightning.report "$LOGS/mnist1d/sweep" --by-role ;;
  lm)  # language models (experiment=lm_pydocs): GPT teacher -> GPT student >= 5x smaller on the
    # Python docs as bytes, seeds 0, 1, 2; the by-role table shows test bits per byte
    timed lm $PY -m kdlightning.train -m experiment=lm_pydocs seed=0,1,2 logger=csv \
      "paths.log_dir=$LOGS/lm" "hydra.sweep.dir=$LOGS/lm/sweep"
    $PY -m kdlightning.report "$LOGS/lm/sweep" --by-role ;;
  methods)  # every method (kd=...) with the same teacher (cnn) and student (cnn), seeds 0, 1, 2:
    # a small grid of each method's main weight; benchmarks/methods_table.py picks each method's
    # setting on validation accuracy and prints test accuracy for it (mean ± std, paired gain).
    # METHODS="crd" runs only the listed methods' jobs (teacher and student alone come with them)
    common=(student=cnn seed=0,1,2 logger=none trainer.enable_progress_bar=false
            "paths.log_dir=$LOGS/methods")
    start=$(date +%s)
    for grid in "kd kd.temperature=2,4" "dkd kd.beta=2,8" "dist kd.temperature=1,4" \
        "ls_kd kd.temperature=2,4" "dml kd.temperature=1,4" "rkd kd.alpha=0,0.5" \
        "fitnet kd.alpha=0,0.5 kd.beta=1,100" "at kd.alpha=0,0.5 kd.beta=10,1000" \
        "pkt kd.alpha=0,0.5 kd.beta=300,30000" "crd kd.alpha=0,0.5"; do
      read -r method args <<< "$grid"
      [[ -z ${METHODS:-} || " $METHODS " == *" $method "* ]] || continue
      # shellcheck disable=SC2086  # $args: the grid's overrides, one word each
      timed "methods_$method" $PY -m kdlightning.train -m "kd=$method" $args "${common[@]}" \
        "hydra.sweep.dir=$LOGS/methods/$method"
    done
    echo "WALL methods: $(( $(date +%s) - start )) s"
    $PY benchmarks/methods_table.py "$LOGS/methods" ;;
  *) echo "unknown part $part (default_sweep, default, full_labels, sweep, fashion, fashion_full, mnist1d, lm, methods)"
     exit 2 ;;
  esac
done
