"""A case's measurement, or the one line it failed with: what ``test_train`` turns into pass or fail.

Every strategy trains in rank processes, so out of memory reaches this process as a rank's one-line
failure (WorkerError), which becomes bench/run/out_of_memory.py's "does not fit" line; the rank that
ran out is stopped like any other failed rank, and its memory goes with its process.
"""

from __future__ import annotations

from bench.config.cases import BenchCase
from bench.config.options import BenchOptions
from bench.launch.probe import ProbeError
from bench.launch.remote import WorkerError
from bench.run.controller import measure_case
from bench.run.out_of_memory import device_memory_bytes, does_not_fit, is_out_of_memory
from bench.run.verify import VerifyError


def measure_or_failure(case: BenchCase, benchmark, options: BenchOptions, pool=None) -> str | None:
    """Measure the case; None when it passed, else the one line it failed with.
    ``pool``: bench/run/group_pool.py's, to share launched groups between cases (measure_case)."""
    try:
        measure_case(case, benchmark, options, pool)
    except (WorkerError, VerifyError, ProbeError) as error:
        # A case that failed after some rounds were timed keeps no statistics: neither in the terminal
        # table nor in the result file (pytest-benchmark marks only failures inside the timed function).
        benchmark.has_error = True
        # Already one line naming the rank or the difference; a traceback into the harness adds nothing.
        text = str(error)
        if is_out_of_memory(text):
            return does_not_fit(case, device_memory_bytes(case.device_type), text.removeprefix(f"{case.case_id}: "))
        return text
    return None
