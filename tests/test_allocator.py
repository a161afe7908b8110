"""The malloc state every rank and probe starts with (bench/hardware/allocator.py): glibc's thresholds fixed
unless the user set the allocator themselves, passed on by the launchers and named in the record.

The real launchers' ranks (python, torchrun, horovodrun) are checked in
tests/test_step_breakdown_runs.py, whose run already starts every strategy: each record's
``host_allocator`` is what its rank 0 read from its own environment."""

from __future__ import annotations

import os
import platform

import pytest

from bench.hardware.allocator import ALLOCATOR_ENV, FIXED, allocator_env, allocator_setting, users_own
from bench.launch.probe import run_in_ranks

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the thresholds are glibc's")


def test_a_clean_environment_gets_the_fixed_thresholds():
    assert allocator_env({"PATH": "/usr/bin"}) == ALLOCATOR_ENV
    assert allocator_setting({"PATH": "/usr/bin", **ALLOCATOR_ENV}) == FIXED
    assert allocator_setting({"PATH": "/usr/bin"}) == "glibc defaults (dynamic thresholds)"


@pytest.mark.parametrize("own", [{"MALLOC_ARENA_MAX": "2"}, {"MALLOC_MMAP_THRESHOLD_": "131072"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}])
def test_the_users_own_allocator_settings_are_kept_and_named(own):
    assert allocator_env(own) == {}  # nothing added: theirs pass through unchanged
    assert allocator_setting(own) == f"the user's: {users_own(own)[0]}"
    # One of ours beside one of theirs is theirs too, not "fixed by gpusizer".
    assert allocator_setting({**ALLOCATOR_ENV, **own}).startswith("the user's: ")


def test_tunables_of_something_else_are_not_an_allocator_setting():
    assert allocator_env({"GLIBC_TUNABLES": "glibc.rtld.nns=4"}) == ALLOCATOR_ENV


def test_a_probe_process_starts_with_the_fixed_thresholds(monkeypatch):
    for name in [name for name in os.environ if name.startswith("MALLOC_")]:
        monkeypatch.delenv(name)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert run_in_ranks("bench.hardware.allocator:this_process", [{}], threads=1, timeout_s=120,
                        what="allocator") == [FIXED]
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert run_in_ranks("bench.hardware.allocator:this_process", [{}], threads=1, timeout_s=120,
                        what="allocator") == ["the user's: MALLOC_ARENA_MAX=2"]
