#!/usr/bin/env bash
# The GPU smoke set in one call, on a machine with an NVIDIA GPU: single, dp on 1 GPU, ddp with
# NCCL on 1 GPU, fp32 and bf16 (bf16 MFU), preset medium, with real NVML telemetry; then a short
# table (case, samples/s, MFU, GPU util, power, energy, flags). Exit status: 0 when every case ran
# with NVML telemetry, 1 when not, 2 when there is no GPU to check.
#
#   scripts/gpu-check.sh                 # extra pytest options may follow, e.g. --rounds 5
#   PYTHON=python3 scripts/gpu-check.sh  # another interpreter than .venv/bin/python
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
TIMEOUT_S=${GPU_CHECK_TIMEOUT_S:-900}  # the whole pytest run; each case also has its own timeouts

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu-check: no NVIDIA GPU here (nvidia-smi missing or sees no GPU); run it on a GPU machine" >&2
    exit 2
fi
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu-check: torch sees no CUDA device (a CPU build of torch, or CUDA_VISIBLE_DEVICES hides the GPUs)" >&2
    exit 2
fi
if ! "$PY" -c "import pynvml" 2>/dev/null; then
    echo "gpu-check: nvidia-ml-py is missing (pip install nvidia-ml-py); telemetry needs it" >&2
    exit 2
fi

mkdir -p results
out=${GPU_CHECK_JSON:-results/gpu-check-$(date -u +%Y%m%dT%H%M%SZ).json}
status=0
timeout --kill-after=30 "$TIMEOUT_S" "$PY" -m pytest bench/ -q -p no:cacheprovider --device cuda \
    --strategies single,dp,ddp --world-sizes 1 --precisions fp32,bf16 --presets medium \
    --benchmark-json "$out" "$@" || status=$?
if [ ! -s "$out" ]; then
    echo "gpu-check: pytest wrote no result file (exit $status)" >&2
    exit 1
fi
"$PY" scripts/gpu_check_table.py "$out" || status=1
echo "result file: $out"
# Memory model on the GPU (issue 13): predicted vs measured peak within 10 %, --find-max-batch vs real OOM.
PYTHON="$PY" bash scripts/gpu-check-memory.sh || status=1
exit "$status"
