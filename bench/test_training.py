"""The benchmark: one test per case of the matrix (see bench/conftest.py for the options)."""

from __future__ import annotations

import pytest

from bench.controller import measure_case, skip_reason


def test_train(benchmark, case, bench_options):
    reason = skip_reason(case)
    if reason:
        pytest.skip(reason)
    measure_case(case, benchmark, bench_options)
