# The harness's entry point, not a test of the product: pytest collects benchmarks only from files
# named test_*.py. Each "test" here measures one case; the product's tests are in tests/.
"""The benchmark: one test per case of the matrix (see bench/conftest.py for the options)."""

from __future__ import annotations

import pytest

from bench.run.controller import interconnect_skip_reason, skip_reason
from bench.run.group_pool import SESSION_POOL
from bench.run.outcome import measure_or_failure


def test_train(case_benchmark, case, bench_options, sizing_options):
    benchmark = case_benchmark
    reason = skip_reason(case) or interconnect_skip_reason(case, bench_options.ceiling_timeout_s)
    if reason:
        pytest.skip(reason)
    try:
        failure = measure_or_failure(case, benchmark, bench_options, SESSION_POOL)
        if failure is None and sizing_options.find_max_batch:
            from bench.run.max_batch import find_max_batch  # after the case: its rank's memory is released

            benchmark.extra_info.update(find_max_batch(case, sizing_options, bench_options, SESSION_POOL))
    except BaseException:
        # Any failure not turned into one line (and Ctrl-C, SIGTERM, SIGHUP): pytest-benchmark marks a
        # benchmark failed on Exception only; an interrupted one would enter the result file written at
        # exit with no record (or break it with no rounds at all).
        benchmark.has_error = True
        raise
    if failure is not None:
        # Raised outside any except: no exception context (and its frames) rides along in the report.
        pytest.fail(failure, pytrace=False)
