"""The derived numbers, each defined once: throughput, MFU, scaling efficiency, energy per sample and cost.

bench/ (the record's convenience copy of the throughput, its MFU flag, the telemetry's energy per sample),
reports/ (tables, charts, verdicts, the projection) and scripts/ all call these, so the same case gives
the same number in every output. Each is plain arithmetic: it takes floats, and the same expression works
element-wise on numpy arrays and pandas Series, which is how reports/analyse.py applies it to every setup
at once. Names carry units; a statistic that differs on purpose gets a name of its own (compare's
``samples_per_s_at_round_quantile``), never ``samples_per_s``.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence

SECONDS_PER_HOUR = 3600.0
MILLION_SAMPLES = 1e6


# -- throughput ------------------------------------------------------------------------------------


def samples_per_round(global_batch_size: float, steps_per_round: float) -> float:
    """Global samples one round trains: every rank's batch, K steps (never rank 0's batch x world size)."""
    return global_batch_size * steps_per_round


def samples_per_s_at(samples_in_round: float, round_s: float) -> float:
    """The samples of a round over one given round time. ``samples_per_s`` feeds it the median round;
    a statistic at another round time is named for that time where it is shown."""
    return samples_in_round / round_s


def samples_per_s(samples_in_round: float, round_times_s: Sequence[float]) -> float:
    """Throughput: global samples in a round over the median round's time (DESIGN.md).

    The median of the round times, then the reciprocal: never the median (or mean) of per-round rates,
    which differs whenever the round count is even (the median of reciprocals is not the reciprocal of
    the median), and never a mean of per-step rates. Several runs of one setup: ``pooled_rounds`` first.
    """
    return samples_per_s_at(samples_in_round, statistics.median(round_times_s))


def pooled_rounds(runs: Iterable[tuple[float, Sequence[float]]]) -> tuple[float, list[float]]:
    """Several runs of one setup as one run: ``(samples per round, every round's time)``.

    ``runs``: ``(samples per round, round times)`` per run. Round sizing may have chosen a different K in
    each run, so each round's time is put on the first run's samples per round (its time x first run's
    samples / its own samples): a round of twice the samples counts as two of half the time. For one run,
    or runs of equal samples per round (the usual case), the measured times come back unchanged
    (x 1.0), so ``samples_per_s`` of the result is exactly that of a single run.
    """
    runs = list(runs)
    reference = runs[0][0]
    times = [time_s * (reference / samples) for samples, round_times_s in runs for time_s in round_times_s]
    return reference, times


# -- what the throughput is worth --------------------------------------------------------------------


def mfu(samples_per_s: float, flops_per_sample: float, peak_flops_per_s: float, compute_devices: float) -> float:
    """Model FLOPs utilisation, a fraction: the training FLOP/s achieved over the measured matmul peak of
    every compute device that trained (above 1: faster than the peak, a measuring problem)."""
    return samples_per_s * flops_per_sample / (peak_flops_per_s * compute_devices)


def scaling_efficiency(samples_per_s: float, world_size: float, baseline_samples_per_s: float) -> float:
    """Per-device throughput over the throughput of the 1-device baseline: 1.0 is perfect scaling."""
    return samples_per_s / world_size / baseline_samples_per_s


def joules_per_sample(energy_j: float, samples_trained: float) -> float:
    """Energy per sample: the energy measured over the rounds / the global samples trained in them."""
    return energy_j / samples_trained


def seconds_to_train(samples: float, samples_per_s: float) -> float:
    """How long ``samples`` take at this throughput."""
    return samples / samples_per_s


def cost_of(price_per_hour: float, seconds: float) -> float:
    """What ``seconds`` on the machine cost, in the price's currency."""
    return price_per_hour * seconds / SECONDS_PER_HOUR


def cost_per_million_samples(price_per_hour: float, samples_per_s: float) -> float:
    """Cost per sample, as the cost of a million of them at this throughput, in the price's currency."""
    return cost_of(price_per_hour, seconds_to_train(MILLION_SAMPLES, samples_per_s))
