#!/usr/bin/env bash
# What a user does, on one version set: a venv (FLOOR_VENV, default .venv-floor) where each dependency
# but torch is the lowest release its range allows (uv's --resolution lowest-direct; GPUSIZER_RESOLUTION=
# newest: the newest), then a --quick benchmark, the report, compare, --benchmark-json on an existing file,
# and the unit tests that start no launcher.
#
#   PYTHON=python3 TORCH_SPEC=torch==2.13.0 scripts/check-stack.sh          # make check-floors
#   FLOOR_VENV=/path/venv GPUSIZER_RESOLUTION=newest scripts/check-stack.sh  # another torch, newest deps
#
# torch is TORCH_SPEC, or what FLOOR_VENV already has (the floor of torch's own range, 2.6, and the newest
# this workplace installs, 2.14.1, are multi-GB CUDA builds: they were run by hand, README "Versions").
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${FLOOR_VENV:-.venv-floor}
VPY="$VENV/bin/python"
say() { echo "check-stack: $*"; }
die() { echo "check-stack: FAILED: $*" >&2; exit 1; }

RESOLUTION=${GPUSIZER_RESOLUTION:-lowest}
GPUSIZER_RESOLUTION=$RESOLUTION VENV="$VENV" bash scripts/setup-venv.sh
if [ "$RESOLUTION" = lowest ]; then
    "$VPY" scripts/project_deps.py --at-floors || die "a dependency is not at its declared floor (above)"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

say "pytest bench/ --quick --strategies single,ddp --world-sizes 1,2"
"$VPY" -m pytest bench/ -q --quick --strategies single,ddp --world-sizes 1,2 --results-dir "$work/results" \
    || die "the --quick benchmark"
result=$(find "$work/results" -name '*.json' | head -n 1)
[ -n "$result" ] || die "the --quick benchmark wrote no result file"

say "gpusizer report"
"$VENV/bin/gpusizer" report "$result" -o "$work/report.html" || die "gpusizer report"
[ -s "$work/report.html" ] && [ -s "$work/report.md" ] || die "gpusizer report wrote no HTML or Markdown"

# A file against itself cannot regress; a --quick run's 3 rounds a case are too few to decide (exit 3),
# which is compare's own answer and fine here: what is checked is that it reads, tests and prints each case.
say "gpusizer compare (the run against itself: exit 0, or 3 for too few rounds to decide; never a regression)"
status=0
"$VENV/bin/gpusizer" compare "$result" "$result" >"$work/compare.out" 2>&1 || status=$?
cat "$work/compare.out"
case "$status" in 0|3) ;; *) die "gpusizer compare exited $status" ;; esac
grep -q "ddp-2-tiny-fp32" "$work/compare.out" || die "gpusizer compare printed no row for ddp-2-tiny-fp32"

say "--benchmark-json on an existing file: refused in one line, exit 4, the file unchanged"
echo '{"precious": true}' >"$work/existing.json"
status=0
"$VPY" -m pytest bench/ -q --quick --strategies single --benchmark-json "$work/existing.json" \
    >"$work/refused.out" 2>&1 || status=$?
[ "$status" -eq 4 ] || { cat "$work/refused.out"; die "--benchmark-json on an existing file exited $status, not 4"; }
grep -q "existing.json exists" "$work/refused.out" || { cat "$work/refused.out"; die "the refusal does not name the file"; }
[ "$(cat "$work/existing.json")" = '{"precious": true}' ] || die "--benchmark-json changed an existing file"

say "unit tests"
"$VPY" -m pytest -q tests/test_no_private_attributes.py tests/test_reference_model.py tests/test_layout.py \
    tests/test_imports.py tests/test_round_sizing.py tests/test_stability.py tests/test_inventory.py \
    tests/test_versions.py || die "unit tests"
say "passed ($RESOLUTION): $("$VPY" scripts/project_deps.py --versions)"
