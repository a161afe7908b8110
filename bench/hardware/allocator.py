"""The host allocator every rank and probe starts with: glibc malloc's thresholds fixed from the first
allocation at the values its own dynamic adjustment climbs to.

Why: by default glibc starts with a 128 KiB mmap threshold and raises it (and the trim threshold, to twice
that) the first time a large mmapped block is freed, which in a training step depends on which thread
(and so which arena) freed which gradient first. A process that lands in the wrong state hands its
gradients' and activations' pages back to the kernel every step and takes them again as page faults. On
this project's 2-core machine a `small` step then ran up to 25 % slower (a few percent in the median
process), decided once per process: suite and plain loop alike came out fast or slow by the luck of their
start (README, Performance: 108k-1M minor faults per run against 90k, scripts/measure-allocator.py). With the thresholds fixed from the start every
process is in the same state, the fast one. On a GPU the tensors live in CUDA's caching allocator and this
only steadies the host's bookkeeping.

A user who set the allocator themselves (any ``MALLOC_*`` variable, or ``glibc.malloc`` tunables in
``GLIBC_TUNABLES``) keeps theirs, and the record says so.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping

MIB = 2**20
# glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit, the most the dynamic threshold ever reaches; blocks above it
# are still mapped and unmapped each time (on CPU only presets far above `small` have such tensors, and
# their steps are long enough for the faults to be a small share).
MMAP_THRESHOLD_BYTES = 32 * MIB
TRIM_THRESHOLD_BYTES = 2 * MMAP_THRESHOLD_BYTES  # what glibc sets beside a raised mmap threshold
ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD_BYTES),
                 "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD_BYTES)}
FIXED = f"glibc thresholds fixed by gpusizer: mmap {MMAP_THRESHOLD_BYTES // MIB} MiB, trim {TRIM_THRESHOLD_BYTES // MIB} MiB"


def users_own(environ: Mapping[str, str]) -> list[str]:
    """The allocator settings the user made in ``environ`` (``NAME=value``), sorted; empty if none."""
    own = [f"{name}={value}" for name, value in environ.items() if name.startswith("MALLOC_")]
    tunables = environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc." in tunables:
        own.append(f"GLIBC_TUNABLES={tunables}")
    return sorted(own)


def allocator_env(environ: Mapping[str, str]) -> dict[str, str]:
    """What a rank's or probe's environment adds: the fixed thresholds, or nothing where the user set the
    allocator themselves (their settings pass through unchanged) or the C library is not glibc."""
    if users_own(environ) or platform.libc_ver()[0] != "glibc":
        return {}
    return dict(ALLOCATOR_ENV)


def allocator_setting(environ: Mapping[str, str]) -> str:
    """The record's words for the allocator a process runs with, read from its own environment."""
    if platform.libc_ver()[0] != "glibc":
        return "not glibc: the C library's own defaults"
    own = users_own(environ)
    if own == sorted(f"{name}={value}" for name, value in ALLOCATOR_ENV.items()):  # ours, and nothing else
        return FIXED
    return f"the user's: {', '.join(own)}" if own else "glibc defaults (dynamic thresholds)"


def this_process() -> str:
    """``allocator_setting`` of the calling process (a rank's record, a probe's check)."""
    return allocator_setting(os.environ)
