"""Small statistics on per-round timings: bootstrap confidence intervals and the Mann-Whitney U test.

Everything here takes plain sequences of positive numbers (round times in seconds, or throughputs)
and returns plain floats. The bootstrap is vectorised numpy with a fixed seed, so the same input gives
the same interval on every machine and every run; the report calls it for every case of hundreds of
files, so it resamples in large blocks rather than in a Python loop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

DEFAULT_CONFIDENCE = 0.95
DEFAULT_RESAMPLES = 2000
# Upper bound on the elements of one resample block: keeps memory flat for long runs of many rounds.
_BLOCK_ELEMENTS = 2_000_000


def _as_samples(samples: Sequence[float], name: str) -> np.ndarray:
    values = np.asarray(samples, dtype=float).ravel()
    if values.size == 0:
        raise ValueError(f"{name}: no samples; expected at least one number")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name}: holds a NaN or infinite value; expected finite numbers")
    return values


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: {confidence!r}; allowed: a number between 0 and 1 (e.g. 0.95)")


def _check_quantile(quantile: float) -> None:
    if not 0 <= quantile <= 1:
        raise ValueError(f"quantile: {quantile!r}; allowed: a number from 0 to 1 (0.5 = the median)")


def _bootstrap_quantiles(values: np.ndarray, quantile: float, n_resamples: int,
                         rng: np.random.Generator) -> np.ndarray:
    """The ``quantile`` (linear interpolation, as np.quantile) of ``n_resamples`` resamples of ``values``."""
    if n_resamples < 1:
        raise ValueError(f"n_resamples: {n_resamples!r}; allowed: an integer >= 1")
    n = values.size
    position = quantile * (n - 1)
    below = int(np.floor(position))
    above = min(below + 1, n - 1)
    weight = position - below
    block = max(1, _BLOCK_ELEMENTS // n)
    estimates = np.empty(n_resamples)
    for start in range(0, n_resamples, block):
        stop = min(start + block, n_resamples)
        # For the few-to-hundreds of rounds seen here, one sort beats np.quantile's partition per row.
        resamples = np.sort(values[rng.integers(0, n, size=(stop - start, n))], axis=1)
        estimates[start:stop] = resamples[:, below] * (1 - weight) + resamples[:, above] * weight
    return estimates


def _percentile_interval(estimates: np.ndarray, confidence: float) -> tuple[float, float]:
    tail_pct = (1 - confidence) / 2 * 100
    low, high = np.percentile(estimates, [tail_pct, 100 - tail_pct])
    return float(low), float(high)


def bootstrap_median_ci(samples: Sequence[float], confidence: float = DEFAULT_CONFIDENCE,
                        n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval ``(low, high)`` of the median of ``samples``.

    One sample gives the degenerate interval (x, x): there is no spread to learn from, and the caller
    should say so rather than read it as certainty.
    """
    _check_confidence(confidence)
    values = _as_samples(samples, "samples")
    if values.size == 1:
        return float(values[0]), float(values[0])
    medians = _bootstrap_quantiles(values, 0.5, n_resamples, np.random.default_rng(seed))
    return _percentile_interval(medians, confidence)


def median_ratio_ci(baseline_samples: Sequence[float], current_samples: Sequence[float],
                    confidence: float = DEFAULT_CONFIDENCE, n_resamples: int = DEFAULT_RESAMPLES,
                    seed: int = 0) -> tuple[float, float, float]:
    """``(ratio, low, high)``: median(current) / median(baseline) and its percentile-bootstrap interval.

    On round times a ratio of 1.10 means the current run is 10% slower; on throughputs, 10% faster.
    """
    return quantile_ratio_ci(baseline_samples, current_samples, 0.5, confidence, n_resamples, seed)


def quantile_ratio_ci(baseline_samples: Sequence[float], current_samples: Sequence[float], quantile: float,
                      confidence: float = DEFAULT_CONFIDENCE, n_resamples: int = DEFAULT_RESAMPLES,
                      seed: int = 0) -> tuple[float, float, float]:
    """``(ratio, low, high)``: the ``quantile`` of current over that of baseline, with its
    percentile-bootstrap interval. The two groups are resampled independently (they are separate runs)."""
    _check_confidence(confidence)
    _check_quantile(quantile)
    baseline = _as_samples(baseline_samples, "baseline_samples")
    current = _as_samples(current_samples, "current_samples")
    if np.any(baseline <= 0):
        raise ValueError("baseline_samples: holds a value <= 0; a ratio needs positive numbers")
    ratio = float(np.quantile(current, quantile) / np.quantile(baseline, quantile))
    rng = np.random.default_rng(seed)
    # Each group draws from its own stream so that adding a baseline round does not reshuffle the current's.
    baseline_rng, current_rng = rng.spawn(2)
    ratios = (_bootstrap_quantiles(current, quantile, n_resamples, current_rng)
              / _bootstrap_quantiles(baseline, quantile, n_resamples, baseline_rng))
    low, high = _percentile_interval(ratios, confidence)
    return ratio, low, high


def mann_whitney_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of the Mann-Whitney U test that ``a`` and ``b`` come from the same distribution.

    Rank-based, so one slow round (a page fault, a clock change) cannot swing it the way it swings a
    t-test. scipy picks the exact distribution for small samples without ties and the normal
    approximation (tie-corrected) otherwise. Identical samples give p = 1.
    """
    a_values = _as_samples(a, "a")
    b_values = _as_samples(b, "b")
    if np.ptp(np.concatenate([a_values, b_values])) == 0:
        return 1.0  # every value equal: no evidence of a difference (scipy would divide by a zero variance)
    from scipy.stats import mannwhitneyu  # late: only the statistical verdicts need scipy

    return float(mannwhitneyu(a_values, b_values, alternative="two-sided").pvalue)


def min_mann_whitney_p(n_a: int, n_b: int) -> float:
    """The smallest two-sided p-value the exact Mann-Whitney test can reach with these sample sizes:
    2 / C(n_a + n_b, n_a). With 3 rounds against 3 it is 0.1, so no difference can ever be significant
    at 0.01, however large; the caller reports "too few rounds" instead of "no change"."""
    if n_a < 1 or n_b < 1:
        raise ValueError(f"sample sizes {n_a} and {n_b}; allowed: integers >= 1")
    return min(1.0, 2 / math.comb(n_a + n_b, n_a))
