#!/usr/bin/env bash
# Make (or refresh) gpusizer's virtual environment: the newest allowed release of every dependency of
# the project, beside a torch that is kept when one is already there.
#
#   PYTHON=python3 VENV=.venv TORCH_SPEC=torch==2.13.0 scripts/setup-venv.sh
#
# 1. The venv sees the system site-packages only when the system Python has a torch (a cloud image's
#    CUDA build, which must survive). Otherwise it is isolated, so the machine's own packages (an
#    older pytest, say) cannot stand in for what a user installs.
# 2. With no torch importable in the venv, TORCH_SPEC is installed. A torch that is there is never
#    replaced: one below the project's floor stops the set-up with that fact instead.
# 3. The project is installed editable with all its extras, then each of its own dependencies but
#    torch is upgraded to the newest release its range allows: pip leaves a requirement that an older
#    system package already satisfies alone, which is how a machine's packages hid a break before.
#    torch is held at the installed version by a constraint while that happens.
#
# Environment: PYTHON (the interpreter that makes the venv), VENV (its folder), TORCH_SPEC.
# GPUSIZER_RESOLUTION=lowest installs every range at its floor instead (uv's lowest-direct), for
# scripts/check-stack.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
RESOLUTION=${GPUSIZER_RESOLUTION:-newest}
VPY="$VENV/bin/python"

say() { echo "gpusizer setup: $*"; }
die() { echo "gpusizer setup: ERROR: $*" >&2; exit 1; }

case "$RESOLUTION" in newest|lowest) ;; *) die "GPUSIZER_RESOLUTION=$RESOLUTION; allowed: newest, lowest" ;; esac
command -v "$PYTHON" >/dev/null 2>&1 || die "python interpreter '$PYTHON' not found (set PYTHON=...)"

# A torch in the system Python is checked before any venv is made on it: one below the floor stops
# here, leaving nothing half made.
system_torch=$("$PYTHON" -c "import importlib.metadata as m, torch; print(m.version('torch'))" 2>/dev/null || true)
if [ -n "$system_torch" ]; then
    "$PYTHON" scripts/project_deps.py --check-torch "$system_torch" || exit 1
fi

# A venv an older set-up made on the system site-packages, where the system has no torch to keep, is
# made again isolated: the machine's own packages must not stand in for what a user installs.
if [ -x "$VPY" ] && [ -z "$system_torch" ] && grep -qi "include-system-site-packages *= *true" "$VENV/pyvenv.cfg" 2>/dev/null; then
    say "$VENV sees the system site-packages, and the system has no torch to keep: making it again, isolated"
    rm -rf "$VENV"
fi

if [ ! -x "$VPY" ]; then
    if [ -n "$system_torch" ]; then
        say "the system Python has torch $system_torch: $VENV sees it (--system-site-packages)"
        "$PYTHON" -m venv --system-site-packages "$VENV"
    else
        "$PYTHON" -m venv "$VENV"
    fi
fi

if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
    say "no torch in $VENV: installing $TORCH_SPEC"
    "$VPY" -m pip install --quiet "$TORCH_SPEC"
fi

# scripts/project_deps.py reads pyproject.toml with tomllib, or tomli before Python 3.11.
"$VPY" -c "import tomllib" >/dev/null 2>&1 || "$VPY" -m pip install --quiet tomli
# The distribution's version, which the constraint below pins (a CUDA build's may differ from
# torch.__version__, which some builds write without the local label).
torch_version=$("$VPY" -c "import importlib.metadata as m; print(m.version('torch'))")
"$VPY" scripts/project_deps.py --check-torch "$torch_version" || exit 1

constraint=$(mktemp)
trap 'rm -f "$constraint"' EXIT
echo "torch==$torch_version" >"$constraint"

if [ "$RESOLUTION" = lowest ]; then
    "$VPY" -m pip install --quiet uv
    say "every range at its floor (uv --resolution lowest-direct), torch $torch_version kept"
    # --reinstall-package: uv keeps an installed release that still satisfies a range, so a venv made
    # before a floor was lowered would stay above it. uv reads no pip configuration (its own UV_INDEX_URL,
    # UV_FIND_LINKS for a mirror).
    mapfile -t names < <("$VPY" scripts/project_deps.py --all-but-torch --names)
    reinstall=(); for name in "${names[@]}"; do reinstall+=(--reinstall-package "$name"); done
    "$VPY" -m uv pip install --quiet --python "$VPY" --resolution lowest-direct --constraint "$constraint" \
        "${reinstall[@]}" -e ".[all]"
else
    "$VPY" -m pip install --quiet --constraint "$constraint" -e ".[all]"
    mapfile -t deps < <("$VPY" scripts/project_deps.py --all-but-torch)
    say "newest allowed: ${deps[*]}"
    "$VPY" -m pip install --quiet --upgrade --constraint "$constraint" "${deps[@]}"
fi
"$VPY" scripts/project_deps.py --versions
