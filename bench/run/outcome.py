"""A case's measurement, or the one line it failed with: what ``test_train`` turns into pass or fail.

Out of memory is caught here, wherever it happened (setting up, a step, a rank), and turned into
bench/run/out_of_memory.py's "does not fit" line. The line is built inside the ``except`` and the error
is dropped when it ends, before the case is failed: a traceback kept by pytest would keep the
frames that hold the model, its optimizer and the batches alive, and the next case would find the
device still full.
"""

from __future__ import annotations

from bench.config.cases import BenchCase
from bench.config.options import BenchOptions
from bench.launch.remote import WorkerError
from bench.run.controller import measure_case
from bench.run.memory import release_cached_memory
from bench.run.out_of_memory import device_memory_bytes, does_not_fit, is_out_of_memory
from bench.run.verify import VerifyError


def measure_or_failure(case: BenchCase, benchmark, options: BenchOptions, pool=None) -> str | None:
    """Measure the case; None when it passed, else the one line it failed with (memory released).
    ``pool``: bench/run/group_pool.py's, to share launched groups between cases (measure_case)."""
    failure = None
    try:
        measure_case(case, benchmark, options, pool)
    except (WorkerError, VerifyError) as error:
        # A case that failed after some rounds were timed keeps no statistics: neither in the terminal
        # table nor in the result file (pytest-benchmark marks only failures inside the timed function).
        benchmark.has_error = True
        # Already one line naming the rank or the difference; a traceback into the harness adds nothing.
        text = str(error)
        if is_out_of_memory(text):
            failure = does_not_fit(case, device_memory_bytes(case.device_type),
                                   text.removeprefix(f"{case.case_id}: "))
        else:
            failure = text
    except RuntimeError as error:
        # torch.OutOfMemoryError in this process, and the cuBLAS/CUDA allocation failures that arrive as a
        # plain RuntimeError: "does not fit". Any other RuntimeError is a real failure, for pytest to
        # report with its traceback. (After the clause above: WorkerError is a RuntimeError too.)
        if not is_out_of_memory(_first_line(error)):
            raise
        failure = does_not_fit(case, device_memory_bytes(case.device_type), _first_line(error))
        benchmark.has_error = True
    if failure is not None:
        release_cached_memory()  # the error and its frames are gone: what they held can be collected now
    return failure


def _first_line(error: BaseException) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0].strip() if lines else ''}"
