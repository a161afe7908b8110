#!/usr/bin/env bash
# GPU check of the memory model (issue 13): predicted vs measured peak (torch.cuda.max_memory_allocated)
# for single, ddp and fsdp (its bf16 MixedPrecisionPolicy gathers in bf16) at fp32 and bf16, and --find-max-batch against the GPU's real out-of-memory error.
# Prints one line per case; exit 1 when a prediction is off by more than 10 %, 2 without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
"$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" || { echo "gpu-check-memory: no CUDA device" >&2; exit 2; }
mkdir -p results
out=results/gpu-check-memory-$(date -u +%Y%m%dT%H%M%SZ).json
timeout --kill-after=30 "${GPU_CHECK_MEMORY_TIMEOUT_S:-240}" "$PY" -m pytest bench/ -q -p no:cacheprovider --device cuda \
    --strategies single,ddp,fsdp --world-sizes 1 --precisions fp32,bf16 --presets small --rounds 3 --warmup-rounds 1 \
    --find-max-batch --benchmark-json "$out" "$@" || true
"$PY" - "$out" <<'PYEOF'
import json, sys
status = 0
for bench in json.load(open(sys.argv[1]))["benchmarks"]:
    r = bench["extra_info"]
    err = r.get("predicted_peak_error_fraction")
    bad = err is None or abs(err) > 0.10
    status |= bad
    print(f"{r['case_id']}: predicted {r['predicted_peak_bytes']/2**30:.3f} GiB, measured "
          f"{(r['measured_step_peak_bytes'] or 0)/2**30:.3f} GiB, error {err if err is None else f'{err:+.1%}'}; "
          f"max batch {r.get('max_per_device_batch_size')} (predicted {r.get('max_batch_predicted')}) "
          f"{'<-- off by more than 10 %' if bad else ''}")
sys.exit(status)
PYEOF
