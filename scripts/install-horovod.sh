#!/usr/bin/env bash
# Install Horovod 0.28.1 (PyTorch + Gloo) into the environment of ${PYTHON:-python}.
#
#   PYTHON=.venv/bin/python scripts/install-horovod.sh
#
# Horovod 0.28.1 is the last release and ships only as an sdist, which does not build as
# published against torch >= 2.1 or CMake 4 (see shared/notes/horovod-build.md). This script
#   1. exits at once when a working horovod (compiled torch extension loads) is already installed;
#   2. else installs a wheel built earlier from the cache
#      ${GPUSIZER_CACHE_DIR:-$HOME/.cache/gpusizer}/horovod/<key>/  (key: horovod, Python, torch,
#      CUDA versions and machine), which takes seconds;
#   3. else downloads the sdist, patches it (C++17 for the torch extension and gloo), builds a wheel
#      (2 to 8 minutes on 2 cores), stores it in the cache and installs it.
# It never installs or upgrades torch; everything is installed with --no-deps.
#
# On a CUDA torch it builds the GPU operations with NCCL (HOROVOD_GPU_OPERATIONS=NCCL), so Horovod
# can all-reduce GPU tensors. It stops with an error saying what is missing and how to get it when
# nvcc or the NCCL headers (nccl.h) cannot be found, instead of silently building a CPU-only Horovod;
# after installing it checks hvd.nccl_built(). A CPU-only Horovod already installed beside a CUDA
# torch is replaced. GPUSIZER_HOROVOD_CPU_ONLY=1 asks for a CPU-only build on a CUDA torch anyway.
#
# Environment: PYTHON (interpreter), GPUSIZER_CACHE_DIR (cache root), CUDA_HOME / HOROVOD_CUDA_HOME
# (where nvcc is, if not on PATH), HOROVOD_NCCL_HOME / HOROVOD_NCCL_INCLUDE / HOROVOD_NCCL_LIB (NCCL,
# if not the nvidia-nccl-cu* wheel CUDA torch depends on), GPUSIZER_HOROVOD_CPU_ONLY.
# For tests (tests/test_gpu_scripts.py), without a GPU or a build:
#   GPUSIZER_TORCH_CUDA        stands in for torch.version.cuda ("cpu": a CPU torch)
#   GPUSIZER_CUDA_SEARCH_DIRS  CUDA roots searched for bin/nvcc and include/nccl.h (default /usr/local/cuda)
#   GPUSIZER_NCCL_SEARCH_DIRS  further folders searched for nccl.h (default /usr/include)
#   GPUSIZER_HOROVOD_PLAN_ONLY=1  print what would be built (GPU operations, nvcc, NCCL) and exit 0
set -euo pipefail

HVD_VERSION=0.28.1
PYTHON=${PYTHON:-python}

say() { echo "gpusizer: $*"; }
die() { echo "gpusizer: ERROR: $*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null 2>&1 || die "python interpreter '$PYTHON' not found (set PYTHON=...)"

# Directory holding the environment's scripts (horovodrun). In a venv sys.executable is the venv's
# own path even when bin/python is a symlink, which is what we want here.
BIN_DIR=$("$PYTHON" -c 'import sys, os; print(os.path.dirname(sys.executable))')

# Runs quickly: does the compiled extension load, and can a single process initialise?
# (`import horovod.torch` alone succeeds even when the extension is missing.)
# HOROVOD_* rendezvous variables are dropped so a caller running under horovodrun cannot make
# hvd.init() wait for peers.
horovod_works() {
    env -u HOROVOD_RANK -u HOROVOD_SIZE -u HOROVOD_LOCAL_RANK -u HOROVOD_LOCAL_SIZE \
        -u HOROVOD_CROSS_RANK -u HOROVOD_CROSS_SIZE -u HOROVOD_GLOO_RENDEZVOUS_ADDR \
        -u HOROVOD_GLOO_RENDEZVOUS_PORT -u HOROVOD_CONTROLLER -u HOROVOD_CPU_OPERATIONS \
        timeout 120 "$PYTHON" -c '
import horovod, horovod.torch as hvd
from horovod.torch import mpi_lib_v2
hvd.DistributedOptimizer
hvd.init()
assert hvd.size() >= 1
print("horovod %s (gloo=%s, nccl=%s)" % (horovod.__version__, hvd.gloo_built(), hvd.nccl_built()))
' 2>/dev/null
}

# Full check: --check-build must list PyTorch and Gloo, and the extension must load.
# Returns non-zero with a one-line reason on stderr.
verify() {
    local out info
    if [ ! -x "$BIN_DIR/horovodrun" ]; then
        echo "gpusizer: horovodrun not found in $BIN_DIR" >&2; return 1
    fi
    if ! out=$("$BIN_DIR/horovodrun" --check-build 2>&1); then
        echo "$out"; echo "gpusizer: 'horovodrun --check-build' failed" >&2; return 1
    fi
    echo "$out"
    if ! grep -Eq '\[X\] PyTorch' <<<"$out"; then
        echo "gpusizer: horovodrun --check-build does not list PyTorch as available" >&2; return 1
    fi
    if ! grep -Eq '\[X\] Gloo' <<<"$out"; then
        echo "gpusizer: horovodrun --check-build does not list Gloo as available" >&2; return 1
    fi
    if ! info=$(horovod_works); then
        echo "gpusizer: the compiled torch extension does not load (try: $PYTHON -c 'from horovod.torch import mpi_lib_v2')" >&2
        return 1
    fi
    if [ -n "${GPU_OPS:-}" ] && ! horovod_nccl_built; then
        echo "gpusizer: horovod was built for GPUs but hvd.nccl_built() is false ($info); see the build log" >&2
        return 1
    fi
    say "verified: $info"
}

# --- 1. which torch, and is a working horovod for it already installed? ----------------------
read -r PY_VER TORCH_VER TORCH_CUDA MACHINE < <("$PYTHON" -c '
import platform, sys, torch
print("%d.%d" % sys.version_info[:2], torch.__version__, torch.version.cuda or "cpu", platform.machine())
' 2>/dev/null) || true
[ -n "${MACHINE:-}" ] \
    || die "torch is not importable with $PYTHON; install torch first (this script never installs torch)"
TORCH_CUDA=${GPUSIZER_TORCH_CUDA:-$TORCH_CUDA}
WANT_NCCL=""
[ "$TORCH_CUDA" != "cpu" ] && [ "${GPUSIZER_HOROVOD_CPU_ONLY:-0}" != 1 ] && WANT_NCCL=1

horovod_nccl_built() {
    timeout 120 "$PYTHON" -c 'import sys, horovod.torch as hvd; sys.exit(0 if hvd.nccl_built() else 1)' 2>/dev/null
}

if info=$(horovod_works); then
    if [ -z "$WANT_NCCL" ] || horovod_nccl_built; then
        say "horovod already installed and working in $("$PYTHON" -c 'import sys; print(sys.prefix)'): $info"
        exit 0
    fi
    say "the installed horovod was built without NCCL ($info), but torch is a CUDA build ($TORCH_CUDA):"
    say "  replacing it with one built with HOROVOD_GPU_OPERATIONS=NCCL"
fi

# --- 2. what to build: GPU operations need nvcc and NCCL's headers -------------------------------
# GPU operations only with a CUDA torch (the build otherwise notices a stray nvcc, e.g.
# /usr/local/bin/nvcc, and would build GPU ops for a CPU torch). On a CUDA torch a missing nvcc or
# nccl.h is an error: a CPU-only Horovod there cannot all-reduce the GPU tensors gpusizer trains.
CUDA_DIRS=("${HOROVOD_CUDA_HOME:-}" "${CUDA_HOME:-}")
read -r -a more <<<"${GPUSIZER_CUDA_SEARCH_DIRS-/usr/local/cuda}"
CUDA_DIRS+=("${more[@]}")
CPU_ONLY_HINT="or set GPUSIZER_HOROVOD_CPU_ONLY=1 for a CPU-only Horovod (its horovod cases are then skipped on GPUs)"
NVCC=""
NVCC_HOME=""
NCCL_INCLUDE=""
NCCL_LIB_DIR=""
GPU_OPS=""
if [ -n "$WANT_NCCL" ]; then
    NVCC=$(command -v nvcc 2>/dev/null || true)
    for c in "${CUDA_DIRS[@]}"; do
        if [ -z "$NVCC" ] && [ -n "$c" ] && [ -x "$c/bin/nvcc" ]; then NVCC="$c/bin/nvcc"; NVCC_HOME="$c"; fi
    done
    [ -n "$NVCC" ] || die "torch is a CUDA $TORCH_CUDA build but nvcc was not found (PATH, HOROVOD_CUDA_HOME, CUDA_HOME,
  ${GPUSIZER_CUDA_SEARCH_DIRS-/usr/local/cuda}): Horovod's NCCL operations need the CUDA compiler. Install the CUDA
  toolkit $TORCH_CUDA (e.g. apt-get install cuda-toolkit-${TORCH_CUDA/./-}) or set CUDA_HOME to it; $CPU_ONLY_HINT"
    nvcc_rel=$("$NVCC" --version 2>/dev/null | sed -n 's/.*release \([0-9][0-9.]*\),.*/\1/p' || true)
    if [ "${nvcc_rel%%.*}" != "${TORCH_CUDA%%.*}" ]; then
        say "WARNING: nvcc ($NVCC) is CUDA ${nvcc_rel:-?}, torch was built with CUDA $TORCH_CUDA"
    fi
    # NCCL: where the user said, else the nvidia-nccl-cu* wheel CUDA torch depends on, else the system's.
    searched=()
    nccl_dir=$("$PYTHON" -c 'import nvidia.nccl, os; print(list(nvidia.nccl.__path__)[0])' 2>/dev/null || true)
    read -r -a system_dirs <<<"${GPUSIZER_NCCL_SEARCH_DIRS-/usr/include}"
    for inc in "${HOROVOD_NCCL_INCLUDE:-}" "${HOROVOD_NCCL_HOME:+$HOROVOD_NCCL_HOME/include}" \
               "${nccl_dir:+$nccl_dir/include}" "${NVCC_HOME:+$NVCC_HOME/include}" "${system_dirs[@]}"; do
        [ -n "$inc" ] || continue
        searched+=("$inc")
        if [ -z "$NCCL_INCLUDE" ] && [ -f "$inc/nccl.h" ]; then NCCL_INCLUDE=$inc; fi
    done
    [ -n "$NCCL_INCLUDE" ] || die "torch is a CUDA $TORCH_CUDA build but NCCL's header nccl.h was not found (searched:
  ${searched[*]:-nothing}): Horovod's GPU all-reduce is built on NCCL. Install the nvidia-nccl-cu${TORCH_CUDA%%.*} wheel
  ($PYTHON -m pip install nvidia-nccl-cu${TORCH_CUDA%%.*}) or libnccl-dev, or set HOROVOD_NCCL_HOME; $CPU_ONLY_HINT"
    if [ -n "$nccl_dir" ] && [ "$NCCL_INCLUDE" = "$nccl_dir/include" ]; then NCCL_LIB_DIR="$nccl_dir/lib"; fi
    GPU_OPS=NCCL
elif [ "$TORCH_CUDA" != "cpu" ]; then
    say "WARNING: GPUSIZER_HOROVOD_CPU_ONLY=1: building without NCCL; horovod cases will be skipped on GPUs"
fi

if [ "${GPUSIZER_HOROVOD_PLAN_ONLY:-0}" = 1 ]; then
    say "plan: torch cuda $TORCH_CUDA, gpu ops: ${GPU_OPS:-none}, nvcc: ${NVCC:-none}, nccl.h in: ${NCCL_INCLUDE:-none}"
    [ -n "$GPU_OPS" ] && say "plan: HOROVOD_GPU_OPERATIONS=$GPU_OPS"
    exit 0
fi

# --- 3. cache key and cached wheel ---------------------------------------------------------

CUDA_TAG=cpu
[ "$TORCH_CUDA" = "cpu" ] || CUDA_TAG="cu$TORCH_CUDA"
KEY="hvd${HVD_VERSION}-py${PY_VER}-torch${TORCH_VER}-${CUDA_TAG}-${MACHINE}"
[ -n "$GPU_OPS" ] && KEY="${KEY}-nccl"
CACHE_ROOT=${GPUSIZER_CACHE_DIR:-$HOME/.cache/gpusizer}
CACHE_DIR="$CACHE_ROOT/horovod/$KEY"
LOG="$CACHE_DIR/build.log"
mkdir -p "$CACHE_DIR"

# One build per key at a time; a second caller waits and then finds the cached wheel.
exec 9>"$CACHE_DIR/.lock"
if ! flock -n 9; then
    say "another install-horovod run holds $CACHE_DIR/.lock; waiting for it..."
    flock 9
fi

# Runtime requirements of the horovod wheel (installed --no-deps). Never torch.
ensure_runtime_deps() {
    local missing=()
    "$PYTHON" -c 'import cloudpickle' 2>/dev/null || missing+=(cloudpickle)
    "$PYTHON" -c 'import psutil' 2>/dev/null || missing+=(psutil)
    "$PYTHON" -c 'import yaml' 2>/dev/null || missing+=(pyyaml)
    "$PYTHON" -c 'import packaging.version' 2>/dev/null || missing+=(packaging)
    # On Python >= 3.12 horovodrun and the build import distutils, which setuptools provides.
    "$PYTHON" -c 'import setuptools' 2>/dev/null || missing+=(setuptools)
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing missing horovod requirements: ${missing[*]}"
        "$PYTHON" -m pip install --quiet "${missing[@]}" || die "pip install ${missing[*]} failed"
    fi
}

install_wheel() {
    "$PYTHON" -m pip install --quiet --no-deps --force-reinstall "$1" \
        || die "pip install of $1 failed"
}

shopt -s nullglob
cached=("$CACHE_DIR"/horovod-"$HVD_VERSION"-*.whl)
shopt -u nullglob
if [ ${#cached[@]} -gt 0 ]; then
    say "installing cached horovod wheel ${cached[0]}"
    ensure_runtime_deps
    install_wheel "${cached[0]}"
    if verify; then
        exit 0
    fi
    say "cached wheel does not work in this environment; removing it and rebuilding"
    rm -f "${cached[0]}"
fi

# --- 4. build from the sdist -----------------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/gpusizer-horovod.XXXXXX")
HEARTBEAT=""
trap 'if [ -n "$HEARTBEAT" ]; then kill "$HEARTBEAT" 2>/dev/null || true; fi; rm -rf "$TMP"' EXIT
trap 'exit 130' INT TERM

# Build requirements, installed only when missing. cmake: setup.py wants >= 3.13 on PATH
# (else it tries to pip-install cmake 3.13 itself); CMake 4 is handled by
# CMAKE_POLICY_VERSION_MINIMUM=3.5 below.
export PATH="$BIN_DIR:$PATH"   # a pip-installed cmake lands in the env's bin dir
need=()
"$PYTHON" -c 'import setuptools' 2>/dev/null || need+=(setuptools)
"$PYTHON" -c 'import packaging.version' 2>/dev/null || need+=(packaging)
# setuptools >= 70.1 ships bdist_wheel itself; older ones need the wheel package.
"$PYTHON" -c 'import setuptools.command.bdist_wheel' 2>/dev/null \
    || "$PYTHON" -c 'import wheel.bdist_wheel' 2>/dev/null || need+=(wheel)
CMAKE_VER=$(cmake --version 2>/dev/null | sed -n 's/^cmake version \([0-9][0-9.]*\).*/\1/p' || true)
if [ -z "$CMAKE_VER" ] || ! "$PYTHON" -c "import sys; from packaging.version import Version as V; sys.exit(V('$CMAKE_VER') < V('3.13'))" 2>/dev/null; then
    need+=("cmake>=3.13")
fi
if [ ${#need[@]} -gt 0 ]; then
    say "installing missing build requirements: ${need[*]}"
    "$PYTHON" -m pip install --quiet "${need[@]}" || die "pip install ${need[*]} failed"
fi
ensure_runtime_deps
CMAKE_VER=$(cmake --version | sed -n 's/^cmake version \([0-9][0-9.]*\).*/\1/p')

say "downloading horovod $HVD_VERSION sdist"
"$PYTHON" -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation \
    -d "$TMP" "horovod==$HVD_VERSION" >"$TMP/download.log" 2>&1 \
    || { tail -n 30 "$TMP/download.log" >&2; die "pip download horovod==$HVD_VERSION failed"; }
tar -xzf "$TMP/horovod-$HVD_VERSION.tar.gz" -C "$TMP"
SRC="$TMP/horovod-$HVD_VERSION"
[ -f "$SRC/setup.py" ] || die "unexpected sdist layout: $SRC/setup.py missing"

# patch FILE OLD NEW: replace the literal line fragment OLD (exactly one occurrence expected)
# by NEW, and check that it happened; fails when the sdist no longer matches the notes.
patch_src() {
    local file="$SRC/$1" old="$2" new="$3" n
    [ -f "$file" ] || die "patch target $1 not found in the horovod sdist"
    n=$(grep -cF -- "$old" "$file" || true)
    [ "$n" = 1 ] || die "patch: expected 1 '$old' in $1, found $n (sdist changed?)"
    local old_re new_re
    old_re=$(printf '%s' "$old" | sed 's/[][\.*^$/]/\\&/g')
    new_re=$(printf '%s' "$new" | sed 's/[\/&]/\\&/g')
    sed -i "s/$old_re/$new_re/" "$file"
    if ! grep -qF -- "$new" "$file" || grep -qF -- "$old" "$file"; then
        die "patch: replacing '$old' in $1 did not take effect"
    fi
}
# torch >= 2.1 needs C++17 (fix 2 of the notes) ...
patch_src CMakeLists.txt 'set(CMAKE_CXX_STANDARD 14)' 'set(CMAKE_CXX_STANDARD 17)'
patch_src horovod/torch/CMakeLists.txt 'set(CMAKE_CXX_STANDARD 14)' 'set(CMAKE_CXX_STANDARD 17)'
# ... and gloo must be C++17 too, else gloo::rendezvous::Store::kDefaultTimeout is defined twice (fix 3).
patch_src third_party/gloo/CMakeLists.txt '-std=c++11' '-std=c++17'
say "patched the sdist for C++17 (CMakeLists.txt, horovod/torch/CMakeLists.txt, third_party/gloo/CMakeLists.txt)"

JOBS=$(nproc 2>/dev/null || echo 2)
build_env=(
    HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1
    HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 HOROVOD_CPU_OPERATIONS=gloo
    CMAKE_POLICY_VERSION_MINIMUM=3.5 "MAKEFLAGS=-j$JOBS"
)
if [ -n "$GPU_OPS" ]; then
    build_env+=("HOROVOD_GPU_OPERATIONS=$GPU_OPS")
    [ -n "$NVCC_HOME" ] && build_env+=("HOROVOD_CUDA_HOME=$NVCC_HOME")
    # NCCL from the nvidia-nccl-cu* wheel that CUDA torch depends on, unless the user set it up.
    # (Linked by soname libnccl.so.2, which `import torch` has loaded before horovod's extension;
    # the wheel ships libnccl.so.2 only, so the linker gets a libnccl.so beside it.)
    if [ -n "$NCCL_LIB_DIR" ] && [ -z "${HOROVOD_NCCL_HOME:-}${HOROVOD_NCCL_LIB:-}" ]; then
        mkdir -p "$TMP/nccl/lib"
        for so in "$NCCL_LIB_DIR"/libnccl.so*; do
            [ -e "$so" ] && ln -sf "$so" "$TMP/nccl/lib/libnccl.so" && break
        done
        build_env+=("HOROVOD_NCCL_INCLUDE=$NCCL_INCLUDE" "HOROVOD_NCCL_LIB=$TMP/nccl/lib" HOROVOD_NCCL_LINK=SHARED)
    elif [ -z "${HOROVOD_NCCL_HOME:-}${HOROVOD_NCCL_INCLUDE:-}" ]; then
        build_env+=("HOROVOD_NCCL_INCLUDE=$NCCL_INCLUDE")
    fi
fi

say "building horovod $HVD_VERSION (2 to 8 minutes on 2 cores; using $JOBS)..."
say "  python $PY_VER, torch $TORCH_VER, cuda $TORCH_CUDA, cmake $CMAKE_VER, gpu ops: ${GPU_OPS:-none}${NVCC:+ (nvcc $NVCC)}"
say "  build log: $LOG"
{
    echo "# $(date -u +%FT%TZ) building horovod $HVD_VERSION key=$KEY"
    echo "# env: ${build_env[*]}"
} >"$LOG"
start=$(date +%s)
# The build runs in the foreground (Ctrl-C stops it); a background loop prints a heartbeat.
# (It closes the lock fd and its sleep writes nowhere, so nothing it leaves behind holds either.)
( exec 9>&-; while sleep 60 >/dev/null 2>&1; do
    say "  still building ($(( ($(date +%s) - start) / 60 )) min so far)..."; done ) &
HEARTBEAT=$!
if ! env "${build_env[@]}" "$PYTHON" -m pip wheel -v --no-build-isolation --no-deps \
        -w "$TMP/wheelhouse" "$SRC" >>"$LOG" 2>&1; then
    kill "$HEARTBEAT" 2>/dev/null || true
    echo "----- last 30 lines of $LOG -----" >&2
    tail -n 30 "$LOG" >&2
    die "horovod build failed; full log: $LOG"
fi
shopt -s nullglob
built=("$TMP"/wheelhouse/horovod-"$HVD_VERSION"-*.whl)
shopt -u nullglob
kill "$HEARTBEAT" 2>/dev/null || true
[ ${#built[@]} -eq 1 ] || die "build produced no horovod wheel; see $LOG"
say "built $(basename "${built[0]}") in $(( $(date +%s) - start ))s"

# Into the cache atomically, so an interrupted copy never looks like a good wheel.
cp "${built[0]}" "$CACHE_DIR/.$(basename "${built[0]}").part"
mv "$CACHE_DIR/.$(basename "${built[0]}").part" "$CACHE_DIR/$(basename "${built[0]}")"
say "cached wheel in $CACHE_DIR"

install_wheel "$CACHE_DIR/$(basename "${built[0]}")"
verify || die "horovod $HVD_VERSION was built and installed but does not work; build log: $LOG"
