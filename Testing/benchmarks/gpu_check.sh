#!/usr/bin/env bash
# The GPU checks of issue 5 in one go, on a machine with an NVIDIA GPU (about 3 minutes on one H200, 2026-11-27,
# plus 2-3 minutes for the lease to start and copy the tree):
#   1. the CUDA tests of the translate path (Testing/test_translate_fast.py: the default and fp32 on CUDA = the
#      CPU's HU, pinned and plain copies, error map; TF32, bf16/fp16 +- channels_last run and stay close in the
#      bulk; geometry exact; the predictor on CUDA gives the CPU's probabilities);
#   2. Testing/benchmarks/gpu_check.py: bf16/fp16/channels_last(/compile) fidelity against fp32 at the reference
#      generator (99.9th percentile |HU diff| inside the head < 5 HU) and the 512x512x300 end-to-end time
#      (target < 2 s), with a recommendation for CUDA_AUTO_PRECISION in duiit/translate.py;
#   3. the speed benchmark on CUDA (python -m Testing.benchmarks.speed --device cuda).
# Results (markdown + JSON + one log) go to $OUT when set (the device tool's output folder), else to
# Testing/benchmarks/results/.
#
# With the device tool: here, first `bash Testing/benchmarks/fetch_gpu_wheels.sh` (the GPU image has torch
# but not SimpleITK/pydicom: their wheels go to .whl/, git-ignored), then
#   run(command="bash Testing/benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=590)
# Options through the environment: GPU_CHECK_COMPILE=1 adds the torch.compile variants (about a minute each);
# GPU_CHECK_SKIP="pytest speed" skips steps; GPU_CHECK_STEP_S=N stops a step after N seconds and goes on with the
# next (a lease is short: one slow step should not cost the others); GPU_CHECK_SPEED_ARGS="--only translation"
# passes flags to the speed benchmark; PYTHON=... picks the interpreter (default python3).
set -u -o pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/duiit-site .whl/*.whl \
    || { echo "gpu_check: installing the carried wheels failed"; exit 2; }
  export PYTHONPATH=/tmp/duiit-site${PYTHONPATH:+:$PYTHONPATH}
fi
RESULTS=${OUT:-Testing/benchmarks/results}
mkdir -p "$RESULTS"
LOG="$RESULTS/gpu_check_all.log"
: > "$LOG"
skip() { case " ${GPU_CHECK_SKIP:-} " in *" $1 "*) return 0;; esac; return 1; }
step() { echo "== $(date +%T) $*" | tee -a "$LOG"; }
limited() { timeout "${GPU_CHECK_STEP_S:-0}" "$@"; }  # 0: no limit

step "environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$LOG"
"$PY" - <<'PY' 2>&1 | tee -a "$LOG" || exit 2
import numpy, SimpleITK, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      "numpy", numpy.__version__, "SimpleITK", SimpleITK.Version.VersionString())
assert torch.cuda.is_available(), "no CUDA device visible"
print(torch.cuda.get_device_name(0), "bf16", torch.cuda.is_bf16_supported(), "cudnn", torch.backends.cudnn.version())
PY
status=0
if ! skip pytest; then
  step "1. CUDA tests of the translate path"
  limited "$PY" -m pytest Testing/test_translate_fast.py -q -p no:cacheprovider -rs 2>&1 | tee -a "$LOG" || status=1
fi
if ! skip gpu_check; then
  step "2. fidelity and 512x512x300 speed (gpu_check.py)"
  extra=""; [ "${GPU_CHECK_COMPILE:-0}" = 1 ] && extra="--compile"
  limited "$PY" -m Testing.benchmarks.gpu_check --results-dir "$RESULTS" $extra 2>&1 | tee -a "$LOG" || status=1
fi
if ! skip speed; then
  step "3. speed benchmark on CUDA"
  # shellcheck disable=SC2086
  limited "$PY" -m Testing.benchmarks.speed --device cuda --results-dir "$RESULTS" ${GPU_CHECK_SPEED_ARGS:-} 2>&1 | tee -a "$LOG" || status=1
fi
step "done (status $status); results in $RESULTS"
exit $status
