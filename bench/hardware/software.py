"""The software stack a run measured with: every version that can move a number, for ``machine_info``.

Two GPUs compared on different torch, CUDA or NCCL releases are not compared on the GPU alone; the report
says so when the stacks differ (reports/stack.py). Read from package metadata and the libraries torch
links (no CUDA context is made), and gpusizer's own checkout (git, bounded by a deadline).
"""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path

import torch

GIT_TIMEOUT_S = 5.0
SOURCE_ROOT = Path(__file__).resolve().parents[2]


def package_version(name: str) -> str | None:
    """Installed version from package metadata: importing Horovod would load MPI and torch plugins."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def nccl_version() -> str | None:
    if torch.version.cuda is None:
        return None
    try:
        version = torch.cuda.nccl.version()  # reads the linked library; starts no CUDA context
    except Exception:  # noqa: BLE001 - a torch built without NCCL
        return None
    return ".".join(str(part) for part in version) if isinstance(version, tuple) else str(version)


def cudnn_version() -> str | None:
    """cuDNN torch links (the MLP uses none of it; a convolution or attention kernel may), or None."""
    if torch.version.cuda is None:
        return None
    try:
        version = torch.backends.cudnn.version()  # loads the library; starts no CUDA context
    except Exception:  # noqa: BLE001 - a CUDA torch without cuDNN
        return None
    if not version:
        return None
    # cuDNN encodes 9.1.0 as 90100 (and 8.9.2 as 8902 before 9).
    major, rest = (version // 10000, version % 10000) if version >= 10000 else (version // 1000, version % 1000)
    return f"{major}.{rest // 100}.{rest % 100}"


def gpusizer_commit(root: Path = SOURCE_ROOT) -> str | None:
    """The commit of the checkout this gpusizer runs from, ``+dirty`` when tracked files differ from it;
    None outside a git checkout (an installed copy) or where git does not answer in time."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                                  timeout=GIT_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    # An installed copy inside someone else's repository is not a checkout of gpusizer.
    top = git("rev-parse", "--show-toplevel")
    if not top or Path(top).resolve() != root.resolve():
        return None
    commit = git("rev-parse", "HEAD")
    if not commit:
        return None
    changed = git("status", "--porcelain", "--untracked-files=no")
    return commit + ("+dirty" if changed else "")


def software_stack(driver_version: str | None) -> dict:
    """Each component's version, None where it is absent (no CUDA, no Horovod, not a checkout)."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,  # what torch was built with; the driver's own CUDA is in the inventory
        "cudnn": cudnn_version(),
        "nccl": nccl_version(),
        "driver": driver_version,
        "horovod": package_version("horovod"),
        "numpy": package_version("numpy"),
        "pytest": package_version("pytest"),
        "pytest_benchmark": package_version("pytest-benchmark"),
        "gpusizer": package_version("gpusizer"),
        "gpusizer_commit": gpusizer_commit(),
    }
