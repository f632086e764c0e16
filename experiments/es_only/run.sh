#!/usr/bin/env bash
# Meta-train one seed of an ES-only recipe (default nres.yaml) and export its learner.
# Re-running continues where it stopped (vsml-es resume) and exports once.
#   bash experiments/es_only/run.sh SEED [RUNS_DIR] [RECIPE.yaml] [--set KEY=VALUE]...
set -euo pipefail
usage="usage: run.sh SEED [RUNS_DIR] [RECIPE.yaml] [--set KEY=VALUE]..."
seed=${1:-}
runs=${2:-runs}
here=$(dirname "$0")
recipe=${3:-$here/nres.yaml}
if ! [[ "$seed" =~ ^[0-9]+$ ]] || [[ "$runs" == -* ]] || [[ "$recipe" == -* ]]; then
  echo "$usage (SEED a whole number, e.g. 0; RUNS_DIR and RECIPE before any --set)" >&2
  exit 2
fi
if [ ! -f "$recipe" ]; then
  echo "run.sh: no recipe file '$recipe'" >&2
  exit 2
fi
shift $(( $# < 3 ? $# : 3 ))
name=$(basename "$recipe" .yaml)
dir="$runs/es_only-$name-seed$seed"
if [ -f "$dir/params.npz" ]; then
  echo "done: $dir"
elif [ -d "$dir" ]; then
  echo "resuming $dir"
  vsml-es resume "$dir" --no-metatest
else
  vsml-es train "$recipe" --set training.seed="$seed" "$@" --run-dir "$dir" --no-metatest
fi
learner="$dir/es_only-$name-seed$seed.vsml"
[ -f "$learner" ] || vsml-es export "$dir" -o "$learner"
echo "learner: $learner"
