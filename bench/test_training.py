"""The benchmark: one test per case of the matrix (see bench/conftest.py for the options)."""

from __future__ import annotations

import pytest

from bench.controller import measure_case, skip_reason
from bench.launch.remote import WorkerError
from bench.verify import VerifyError


def test_train(benchmark, case, bench_options, sizing_options):
    reason = skip_reason(case)
    if reason:
        pytest.skip(reason)
    try:
        measure_case(case, benchmark, bench_options)
        if sizing_options.find_max_batch:
            from bench.max_batch import find_max_batch  # after the case: its rank's memory is released

            benchmark.extra_info.update(find_max_batch(case, sizing_options))
    except (WorkerError, VerifyError) as error:
        # Already one line naming the rank or the difference; a traceback into the harness adds nothing.
        pytest.fail(str(error), pytrace=False)
    except KeyboardInterrupt:
        # pytest-benchmark marks a benchmark failed on Exception only; an interrupted one would enter
        # the result file written at exit with no record (or break it with no rounds at all).
        benchmark.has_error = True
        raise
