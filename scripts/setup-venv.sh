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

if [ ! -x "$VPY" ]; then
    if "$PYTHON" -c "import torch" >/dev/null 2>&1; then
        say "the system Python has torch $("$PYTHON" -c 'import torch; print(torch.__version__)'): $VENV sees it (--system-site-packages)"
        "$PYTHON" -m venv --system-site-packages "$VENV"
    else
        "$PYTHON" -m venv "$VENV"
    fi
fi

if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
    say "no torch in $VENV: installing $TORCH_SPEC"
    "$VPY" -m pip install --quiet "$TORCH_SPEC"
fi

# The project's torch floor, read from pyproject.toml by scripts/project_deps.py (no install needed;
# it reads TOML with tomllib, or tomli before Python 3.11).
"$VPY" -c "import tomllib" >/dev/null 2>&1 || "$VPY" -m pip install --quiet tomli
# The distribution's version (2.6.0), which a constraint matches; torch.__version__ may add a local
# label the index does not know (2.6.0+cu124).
torch_version=$("$VPY" -c "import importlib.metadata as m; print(m.version('torch'))")
"$VPY" scripts/project_deps.py --check-torch "$torch_version" || exit 1

constraint=$(mktemp)
trap 'rm -f "$constraint"' EXIT
echo "torch==$torch_version" >"$constraint"

if [ "$RESOLUTION" = lowest ]; then
    "$VPY" -m pip install --quiet uv
    say "every range at its floor (uv --resolution lowest-direct), torch $torch_version kept"
    "$VPY" -m uv pip install --quiet --python "$VPY" --resolution lowest-direct --constraint "$constraint" -e ".[all]"
else
    "$VPY" -m pip install --quiet --constraint "$constraint" -e ".[all]"
    mapfile -t deps < <("$VPY" scripts/project_deps.py --all-but-torch)
    say "newest allowed: ${deps[*]}"
    "$VPY" -m pip install --quiet --upgrade --constraint "$constraint" "${deps[@]}"
fi
"$VPY" scripts/project_deps.py --versions
