"""The benchmark: one test per case of the matrix (see bench/conftest.py for the options)."""

from __future__ import annotations

import pytest

from bench.controller import measure_case, skip_reason
from bench.launch.remote import WorkerError
from bench.verify import VerifyError


def test_train(benchmark, case, bench_options):
    reason = skip_reason(case)
    if reason:
        pytest.skip(reason)
    try:
        measure_case(case, benchmark, bench_options)
    except (WorkerError, VerifyError) as error:
        # A case that failed after some rounds were timed keeps no statistics: neither in the terminal
        # table nor in the result file (pytest-benchmark marks only failures inside the timed function).
        benchmark.has_error = True
        # Already one line naming the rank or the difference; a traceback into the harness adds nothing.
        pytest.fail(str(error), pytrace=False)
    except BaseException:
        # The same for any other failure; for Ctrl-C (SIGTERM, SIGHUP) too: an interrupted case would
        # otherwise enter the result file written at exit with no record (or break it with no rounds).
        benchmark.has_error = True
        raise
