"""Record keys beyond build_record's: what the strategy configured, what the ranks measured, and the
TF32 override variables (docs/record.md). Kept apart so the controller adds them in one line."""

from __future__ import annotations

import os
from collections.abc import Mapping

from bench.config.cases import BenchCase
from bench.run.tf32 import tf32_overridden, tf32_override_env
from bench.strategies import REGISTRY

TF32_OVERRIDE_FLAG = "tf32_override"


def add_case_facts(record: dict, case: BenchCase, group, environ: Mapping[str, str] = os.environ) -> dict:
    """Add the keys to ``record`` (in place, and returned); call it before the group is closed."""
    overridden = tf32_overridden(case.device_type, case.precision, environ)
    record["tf32_override"] = overridden
    record["tf32_override_env"] = tf32_override_env(environ)
    record.update(REGISTRY[case.strategy].case_facts(case.precision))
    facts = getattr(group, "facts", None)  # measured by the ranks: per-device peaks, replica dtypes
    if facts is not None:
        record.update(facts())
    if overridden:
        record["flags"] = sorted({*record.get("flags", []), TF32_OVERRIDE_FLAG})
    return record
