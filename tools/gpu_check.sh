#!/usr/bin/env bash
# The prepared check of a single-GPU Linux machine (e.g. one H100, 16 cores), in at most
# ~9 minutes, without network: builds the op library against whatever torch is installed there
# (no pip), says what the install can do (amanet doctor), runs every CUDA test (ops, inference
# CUDA vs CPU per head kind, fp16 autocast and TorchScript, AMP training), the op tests under
# compute-sanitizer (memcheck, racecheck) when it is there, the CUDA latency benchmark and
# video frames/s with frames batched (amanet video --batch) against one at a time.
#
#   tools/gpu_check.sh              # on the GPU machine, from the repository root
#   tools/gpu_check.sh --dry-run    # anywhere: checks every step's command without a GPU (CI)
#
# Writes $OUT (default ./gpu_check_out): summary.md (one row per step: pass / FAIL / skip,
# seconds, log), <step>.log, latency/ (latency.md, latency.json), video/ (video.md, .json).
# Exit status: 0 when no step failed. Environment: PYTHON (default .venv/bin/python, else
# python3), GPU_CHECK_BUDGET (seconds for all steps, default 540), MAX_JOBS (build parallelism, default: cores).
set -uo pipefail

DRY=0
case "${1:-}" in
  --dry-run) DRY=1 ;;
  "") ;;
  *) echo "usage: $0 [--dry-run]" >&2; exit 2 ;;
esac

cd "$(dirname "$0")/.." || exit 2
OUT=${OUT:-./gpu_check_out}
mkdir -p "$OUT" || { echo "error: cannot create $OUT" >&2; exit 2; }
if [[ -n "${PYTHON:-}" ]]; then PY=$PYTHON
elif [[ -x .venv/bin/python ]]; then PY=.venv/bin/python
else PY=python3; fi
BUDGET=${GPU_CHECK_BUDGET:-540}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
SUMMARY="$OUT/summary.md"
FAILED=0
START=$SECONDS

{
  echo "# gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ)$([[ $DRY == 1 ]] && echo ' (dry run)')"
  echo
  echo "| step | status | seconds | log |"
  echo "|---|---|---|---|"
} > "$SUMMARY"

record() {  # name status seconds
  echo "| $1 | $2 | $3 | $1.log |" >> "$SUMMARY"
  echo "[gpu_check] $1: $2 (${3}s)"
}

# Steps a dry run really runs (harmless and GPU-free in their dry-run form); the others it only
# checks for their program.
DRY_RUNS=" torch doctor cuda_tests latency video "

# step NAME LIMIT_SECONDS COMMAND...: run it (timed, logged, bounded by the remaining budget).
step() {
  local name=$1 limit=$2
  shift 2
  local log="$OUT/$name.log"
  if [[ $DRY == 1 && $DRY_RUNS != *" $name "* ]]; then
    if command -v "$1" > /dev/null 2>&1; then record "$name" "ok (dry run: found $1)" 0
    elif [[ $name == gpu ]]; then record "$name" "skip (dry run: no $1 here)" 0
    else record "$name" "FAIL (dry run: $1 not found)" 0; FAILED=1; fi
    return 0
  fi
  local left=$((BUDGET - (SECONDS - START)))
  if (( left < 10 )); then record "$name" "skip (budget spent)" 0; return 0; fi
  (( limit > left )) && limit=$left
  local t0=$SECONDS rc
  timeout --kill-after=10 "$limit" "$@" > "$log" 2>&1
  rc=$?
  if (( rc == 0 )); then record "$name" pass $((SECONDS - t0))
  elif (( rc == 124 || rc == 137 )); then record "$name" "FAIL (timeout ${limit}s)" $((SECONDS - t0)); FAILED=1
  else record "$name" "FAIL (exit $rc)" $((SECONDS - t0)); FAILED=1; fi
}

PYTEST=("$PY" -m pytest -q -rs -p no:cacheprovider)
CUDA_TESTS=(tests/test_ops_roi_align.py tests/test_ops_nms.py tests/test_ops_iuv_paste.py
            tests/test_ops_aggregation.py tests/test_ops_uv_loss.py tests/test_cuda.py
            tests/test_gpu_first_contact.py
            tests/test_train.py)

# 1. what is there
step gpu 20 nvidia-smi
step torch 60 "$PY" -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"

# 2. the op library for this GPU's architecture (+PTX), against the installed torch
ARCH=$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())" 2>/dev/null || echo "9.0")
AMANET_CUDA_ARCHS="${AMANET_CUDA_ARCHS:-$ARCH+PTX}" step build 300 "$PY" setup.py build_ext --inplace
step doctor 60 "$PY" -c "from amanet.cli import main; raise SystemExit(main(['doctor']))"

# 3. every CUDA test (CPU tests of those files are deselected: CI runs them)
if [[ $DRY == 1 ]]; then
  step cuda_tests 120 "${PYTEST[@]}" --collect-only "${CUDA_TESTS[@]}" -k "cuda or CUDA"
else
  step cuda_tests 240 "${PYTEST[@]}" "${CUDA_TESTS[@]}" -k "cuda or CUDA"
fi

# 4. the op tests under compute-sanitizer, when the toolkit has it
if command -v compute-sanitizer > /dev/null 2>&1 || [[ $DRY == 1 ]]; then
  SAN=$(command -v compute-sanitizer || echo compute-sanitizer)
  for tool in memcheck racecheck; do
    if [[ $DRY == 1 ]] && ! command -v compute-sanitizer > /dev/null 2>&1; then
      record "sanitizer_$tool" "skip (dry run: compute-sanitizer not installed here)" 0
      continue
    fi
    step "sanitizer_$tool" 90 "$SAN" --tool "$tool" --error-exitcode 9 \
      "${PYTEST[@]}" tests/test_ops_roi_align.py tests/test_ops_uv_loss.py -k "cuda"
  done
else
  record sanitizer "skip (compute-sanitizer not found)" 0
fi

# 5. CUDA latency: eager and TorchScript, fp32 and fp16, 800x1216, 5 and 20 detections
if [[ $DRY == 1 ]]; then
  step latency 60 "$PY" bench/latency.py --help
else
  step latency 200 "$PY" bench/latency.py --device cuda --families s1x amanet \
    --backends eager torchscript --precisions fp32 fp16 --sizes 800x1216 --detections 5 20 \
    --runs 10 --warmup 3 --threads 16 --out "$OUT/latency"
fi

# 6. video frames/s on the GPU: fp16, one frame at a time against 4 and 8 frames per batch
if [[ $DRY == 1 ]]; then
  step video 60 "$PY" bench/video.py --help
else
  step video 90 "$PY" bench/video.py --device cuda --sizes 512x512 --detections 3 \
    --frames 24 --cases eager:fp16 eager:fp16:b4 eager:fp16:b8 --threads 16 --out "$OUT/video"
fi

echo >> "$SUMMARY"
echo "total: $((SECONDS - START)) s of a ${BUDGET} s budget" >> "$SUMMARY"
if [[ -f "$OUT/latency/latency.md" ]]; then
  { echo; echo "## CUDA latency"; echo; cat "$OUT/latency/latency.md"; } >> "$SUMMARY"
fi
if [[ -f "$OUT/video/video.md" ]]; then
  { echo; echo "## Video on the GPU"; echo; cat "$OUT/video/video.md"; } >> "$SUMMARY"
fi
cat "$SUMMARY"
exit $FAILED
