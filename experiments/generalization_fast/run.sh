#!/usr/bin/env bash
# Meta-train one seed with the short recipe: three phases, each warm-started from the one
# before, then export the learner. Re-running continues where it stopped: a finished phase is
# skipped and an interrupted one is resumed from its last checkpoint.
#   bash experiments/generalization_fast/run.sh SEED [RUNS_DIR] [--set KEY=VALUE]...
# (--set options go to every phase's `vsml-es train`, e.g. a tracking backend.)
set -euo pipefail
usage="usage: run.sh SEED [RUNS_DIR] [--set KEY=VALUE]..."
seed=${1:-}
runs=${2:-runs}
if ! [[ "$seed" =~ ^[0-9]+$ ]] || [[ "$runs" == -* ]]; then
  echo "$usage (SEED a whole number, e.g. 0; RUNS_DIR before any --set)" >&2
  exit 2
fi
shift $(( $# < 2 ? $# : 2 ))
here=$(dirname "$0")
out="$runs/generalization_fast-seed$seed"
mkdir -p "$out"
for phase in 1 2 3; do
  dir="$out/phase$phase"
  if [ -f "$dir/params.npz" ]; then
    echo "phase $phase: done ($dir)"
  elif [ -d "$dir" ]; then
    echo "phase $phase: resuming $dir"
    vsml-es resume "$dir" --no-metatest
  else
    warm=()
    [ "$phase" -gt 1 ] && warm=(--set "training.init_params=$out/phase$((phase - 1))/params.npz")
    vsml-es train "$here/phase$phase.yaml" --set training.seed="$seed" "${warm[@]}" "$@" \
      --run-dir "$dir" --no-metatest
  fi
done
learner="$out/generalization_fast-seed$seed.vsml"
[ -f "$learner" ] || vsml-es export "$out/phase3" -o "$learner"
echo "learner: $learner"
