#!/usr/bin/env bash
# GPU readiness: the unchanged code on a GPU. Prints the throughput table (ours, the
# straightforward reference, the roofline), peak memory T=2000 vs T=100, and a 20-generation
# quickstart meta-training in this process (no Ray). About 5 minutes on one H100.
#
#   benchmarks/gpu_check.sh [OUT_DIR]
#
# Needs JAX with a CUDA plugin, evosax, optax, pyyaml, tqdm and scikit-learn (for digits).
# The package need not be installed: the repository root is put on PYTHONPATH.
# GPU_CHECK_QUICK=1 makes a short dry run (e.g. on a CPU, to test this script).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu_check_out}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [[ "${GPU_CHECK_QUICK:-0}" == 1 ]]; then
  BENCH=(--quick) GENERATIONS=3
else
  BENCH=(--ablations --profile --repeats 3) GENERATIONS=20
fi

echo "== devices"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
"$PY" -c "import jax; print('jax', jax.__version__, jax.devices())"

echo "== throughput"
"$PY" benchmarks/throughput.py "${BENCH[@]}" 2>&1 | tee "$OUT/throughput.txt"

echo "== memory"
"$PY" benchmarks/throughput.py --memory 2>&1 | tee "$OUT/memory.txt"

echo "== quickstart meta-training, $GENERATIONS generations, in this process"
start=$(date +%s)
"$PY" -m vsml_es.cli train experiments/quickstart.yaml --run-dir "$OUT/run" --workers 0 \
  --no-metatest --set training.generations="$GENERATIONS" --set logging.progress=false \
  2>&1 | tee "$OUT/train.txt"
echo "training command: $(( $(date +%s) - start )) s wall"
"$PY" - "$OUT/run/metrics.jsonl" <<'EOF' | tee -a "$OUT/train.txt"
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
seconds = [r["seconds"] for r in rows]
print(f"generation 0 (compiles): {seconds[0]:.2f} s; later generations: median "
      f"{statistics.median(seconds[1:]):.3f} s, min {min(seconds[1:]):.3f} s; fitness "
      f"{rows[0]['fitness_mean']:.4f} -> {rows[-1]['fitness_mean']:.4f}")
EOF
