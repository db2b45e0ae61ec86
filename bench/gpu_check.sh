#!/usr/bin/env bash
# The GPU check as one command for a single-GPU machine (H200 class): bench/gpu_check.py with a time guard.
#
#   bash bench/gpu_check.sh                 # both models; JSON to $OUT/gpu_check.json (else ./gpu_check.json)
#   bash bench/gpu_check.sh --models 0.5b   # extra arguments go to bench/gpu_check.py
#
# Needs only python3 with torch (CUDA), transformers 5, peft; no network, no tuneloop install.
# Exits non-zero when there is no GPU, a package is missing, the check fails or it runs out of time.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PY:-python3}
# Under the 8 minutes the check is given; the script itself starts no mode after --budget-s (420 s).
LIMIT=${GPU_CHECK_TIMEOUT:-470}

if ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "gpu_check: nvidia-smi not found: this is not a GPU machine" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv,noheader || {
  echo "gpu_check: nvidia-smi failed" >&2; exit 2; }
"$PY" - <<'PY' || { echo "gpu_check: the python environment is not usable (see above)" >&2; exit 3; }
import importlib.util, sys
import torch, transformers, peft
print(f"python {sys.version.split()[0]}, torch {torch.__version__} (cuda {torch.version.cuda}), "
      f"transformers {transformers.__version__}, peft {peft.__version__}, "
      f"flash_attn {importlib.util.find_spec('flash_attn') is not None}, "
      f"liger_kernel {importlib.util.find_spec('liger_kernel') is not None}")
assert torch.cuda.is_available(), "torch sees no CUDA device"
PY

timeout --signal=TERM --kill-after=15 "$LIMIT" "$PY" bench/gpu_check.py --device cuda "$@"
rc=$?
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
  echo "gpu_check: stopped after ${LIMIT}s; the JSON holds the models finished before that" >&2
fi
exit "$rc"
