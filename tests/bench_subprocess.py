"""`pytest bench/` as a user starts it, in a subprocess with a deadline, for tests that read its output files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent / "bench"


def run_bench_cpu(tmp_path: Path, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess:
    """A CPU run writing into ``tmp_path/results``, with the fault hook cleared."""
    command = [sys.executable, "-m", "pytest", str(BENCH_DIR), "-p", "no:cacheprovider", "-q", "--device", "cpu",
               "--results-dir", str(tmp_path / "results"), *args]
    return subprocess.run(command, check=False, cwd=tmp_path, capture_output=True, text=True, timeout=timeout_s,
                          env={**os.environ, "GPUSIZER_FAULT": ""})
