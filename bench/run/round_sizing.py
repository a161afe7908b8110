"""Time-sized rounds: how many steps one timed round takes, and how long the warm-up lasts.

A fixed step count sized for a CPU lasts milliseconds on a GPU: the controller's per-round IPC becomes
a tenth of the round and the measured window is shorter than one telemetry sample. So before the
measured rounds, a calibration grows the steps per round until one round lasts at least
``min_round_s``, and the warm-up runs until ``warmup_s`` have passed (and at least ``warmup_rounds``
rounds), so clocks have come up from idle before anything is measured.

Pure logic: the round function and the clock are passed in (the controller passes the ranks' own
slowest round time and ``time.monotonic``), so tests drive it with fakes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

# Below half the target a round is too short to scale from reliably (timer resolution, launch
# overhead): double. From there, scale by the measured ratio with a margin, then check again.
DOUBLING_BELOW_FRACTION = 0.5
SCALE_MARGIN = 1.10
MAX_CALIBRATION_ROUNDS = 30  # doubling from 1 step reaches ~1e9 steps well before this
MAX_STEPS_PER_ROUND = 1 << 30


@dataclass(frozen=True)
class RoundSizing:
    """What the sizing did, for the record (docs/record.md, ``round_sizing``)."""

    steps_per_round_requested: int
    steps_per_round: int  # actually used in the measured rounds
    min_round_s: float
    warmup_s_requested: float
    calibration_rounds: int
    calibration_s: float
    warmup_rounds_run: int
    warmup_s_run: float
    reached_min_round_s: bool  # False only when MAX_* stopped the growth

    def __post_init__(self) -> None:
        for name in ("steps_per_round_requested", "steps_per_round"):
            if getattr(self, name) < 1:
                raise ValueError(f"RoundSizing.{name}: {getattr(self, name)!r}; allowed: an integer >= 1")
        for name in ("min_round_s", "warmup_s_requested", "calibration_s", "warmup_s_run"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"RoundSizing.{name}: {value!r}; allowed: a finite number >= 0")

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def next_steps(steps: int, round_s: float, min_round_s: float) -> int:
    """The step count to try after a round of ``steps`` lasted ``round_s`` (shorter than the target)."""
    if round_s <= 0 or round_s < DOUBLING_BELOW_FRACTION * min_round_s:
        grown = steps * 2
    else:
        grown = math.ceil(steps * min_round_s / round_s * SCALE_MARGIN)
    return min(max(grown, steps + 1), MAX_STEPS_PER_ROUND)


def calibrate(run_round: Callable[[int], float], steps: int, min_round_s: float) -> tuple[int, int, bool]:
    """Grow ``steps`` until ``run_round(steps)`` lasts at least ``min_round_s``.

    Returns (steps, rounds run, whether the target was reached). ``min_round_s`` 0 runs nothing.
    The first round is run and not judged: it is cold (allocation, kernel selection, caches), and a
    round of one step of it has been seen here to last longer than a warm round of three.
    """
    if min_round_s <= 0:
        return steps, 0, True
    run_round(steps)
    for rounds in range(2, MAX_CALIBRATION_ROUNDS + 1):
        round_s = run_round(steps)
        if round_s >= min_round_s:
            return steps, rounds, True
        if steps >= MAX_STEPS_PER_ROUND:
            break
        steps = next_steps(steps, round_s, min_round_s)
    return steps, rounds, False


def size_rounds(run_round: Callable[[int], float], *, steps_per_round: int, min_round_s: float,
                warmup_rounds: int, warmup_s: float,
                clock: Callable[[], float] = time.monotonic) -> RoundSizing:
    """Calibrate, then warm up with the calibrated steps until both warm-up conditions hold.

    Calibration rounds are unmeasured too; they count towards ``warmup_s`` but not ``warmup_rounds``
    (those are rounds of the size that will be measured). A warm-up round that comes out shorter than
    the target (the device clocked up meanwhile) scales the steps once more, without another round.
    """
    began = clock()
    steps, calibration_rounds, reached = calibrate(run_round, steps_per_round, min_round_s)
    calibrated = clock()
    warm_rounds, last_round_s = 0, None
    while warm_rounds < warmup_rounds or clock() - began < warmup_s:
        last_round_s = run_round(steps)
        warm_rounds += 1
    if last_round_s is not None and min_round_s > 0 and last_round_s < min_round_s and steps < MAX_STEPS_PER_ROUND:
        steps = next_steps(steps, last_round_s, min_round_s)
    ended = clock()
    return RoundSizing(
        steps_per_round_requested=steps_per_round,
        steps_per_round=steps,
        min_round_s=float(min_round_s),
        warmup_s_requested=float(warmup_s),
        calibration_rounds=calibration_rounds,
        calibration_s=calibrated - began,
        warmup_rounds_run=warm_rounds,
        warmup_s_run=ended - calibrated,
        reached_min_round_s=reached,
    )
