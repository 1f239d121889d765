#!/usr/bin/env bash
# The real-image benchmark (issue 4) at a GPU budget: 20x the CPU runs' steps, on a cohort built here.
# The device machine cannot reach the package registries, so the cohort and the wheels its image lacks are
# built here first and carried (about 61 MB of the 64 MiB a run may carry):
#   bash Testing/benchmarks/fetch_gpu_wheels.sh                      # SimpleITK, pydicom -> .whl/
#   bash Testing/benchmarks/gpu_real_images.sh prepare               # the cohort -> .gpu_cohort/cohort
# then with the device tool:
#   run(command="bash Testing/benchmarks/gpu_real_images.sh", carry=[".whl", ".gpu_cohort"], timeout_s=590)
# Results (real_images.md/.json, a figure, the log) go to $OUT when set, else to a temp folder; merge them into
# Testing/benchmarks/results/ here. Settings through the environment: ITERATIONS (default 5000), SEEDS (2),
# METHODS (target-only,cyclegan,duiit), EXTRA (more benchmark flags), PYTHON (python3), DEVICE (cuda).
set -u -o pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
COHORT=.gpu_cohort
if [ "${1:-}" = prepare ]; then
  mkdir -p .git/info
  grep -qx "/$COHORT/" .git/info/exclude 2>/dev/null || echo "/$COHORT/" >> .git/info/exclude
  exec "$PY" -m Testing.benchmarks.real_images --build-cohort-only --work "$COHORT"
fi
[ -f "$COHORT/cohort/manifest.csv" ] || { echo "gpu_real_images: no $COHORT/cohort; run '$0 prepare' first"; exit 2; }
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/duiit-site .whl/*.whl \
    || { echo "gpu_real_images: installing the carried wheels failed"; exit 2; }
  export PYTHONPATH=/tmp/duiit-site${PYTHONPATH:+:$PYTHONPATH}
fi
RESULTS=${OUT:-$(mktemp -d)}
ITERATIONS=${ITERATIONS:-5000}
nvidia-smi --query-gpu=name,memory.total --format=csv 2>&1 | tee "$RESULTS/gpu_real_images.log"
# shellcheck disable=SC2086
"$PY" -m Testing.benchmarks.real_images --cohort "$COHORT/cohort" --device "${DEVICE:-cuda}" --threads 4 \
  --iterations "$ITERATIONS" --seeds "${SEEDS:-2}" --methods "${METHODS:-target-only,cyclegan,duiit}" \
  --no-fresh-predictor --log-every $((ITERATIONS / 10)) --work /tmp/duiit-gpu-bench --out "$RESULTS" --figure gpu \
  --tag "GPU budget: $ITERATIONS iterations" --notes "the CPU runs' cohort and split, 20x their steps, on a GPU" \
  ${EXTRA:-} 2>&1 | tee -a "$RESULTS/gpu_real_images.log"
status=$?
echo "gpu_real_images: status $status; results in $RESULTS"
exit $status
