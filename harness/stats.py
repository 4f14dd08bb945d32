"""Confidence intervals for timings: the median of a row, a ratio of two rows, a geomean over rows.

Every statistic here is a function of *medians* of timed samples (seconds per call). Its 95% confidence
interval comes from the nonparametric bootstrap (``scipy.stats.bootstrap``, percentile method): each
sample set is resampled with replacement independently of the others (the runs being compared are
independent; rows are timed one after another), the statistic is recomputed from the resampled medians
``n_resamples`` times, and the interval is the (1 - c)/2 and (1 + c)/2 percentiles of those values.

Why the percentile method and not BCa: BCa's acceleration comes from a jackknife, and the jackknife of a
median is inconsistent (leaving one sample out moves the median by at most one order-statistic step), so
BCa's correction is noise for medians; the percentile interval is transformation-respecting, which suits
ratios, and its coverage is checked in tests/harness/test_stats.py.

Why ``N_RESAMPLES = 2000``: the resampling count only adds Monte-Carlo error to where the endpoints sit
(the 2.5% point is estimated from the 50th of 2000 sorted values: its quantile level has a standard
error of sqrt(0.025 * 0.975 / 2000) = 0.35 percentage points), small beside the interval's own width;
Efron & Tibshirani (An Introduction to the Bootstrap, 1993, ch. 19) suggest 1000-2000 for percentile
intervals. It keeps a row's interval at ~10 ms on a 2-core machine.

Every function is deterministic given ``seed``. A sample set with fewer than two samples has no
interval: the bounds are NaN (the point value is still returned).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> ours, ref = rng.lognormal(0.0, 0.05, 40), rng.lognormal(0.2, 0.05, 40)
>>> speedup, lo, hi = ratio_ci(ref, ours)        # reference time / our time
>>> lo < speedup < hi
True
"""
from __future__ import annotations

import inspect
import math
import warnings
from typing import Callable, Sequence

import numpy as np

CONFIDENCE = 0.95
N_RESAMPLES = 2000
# NOTE: 1.349 = the interquartile range of a standard normal distribution, so IQR / 1.349 estimates a
# standard deviation without letting a few outlying samples (a context switch, a clock change) inflate it.
IQR_PER_SIGMA = 1.349
# resampled values held at once (8 bytes each): bounds memory for geomeans over hundreds of rows
_BATCH_ELEMENTS = 4_000_000


def available() -> bool:
    """True when SciPy (the bootstrap) is installed; callers that must not fail without it check first."""
    import importlib.util

    return importlib.util.find_spec("scipy") is not None


def as_samples(samples, what: str = "samples") -> np.ndarray:
    """``samples`` as a 1-D float64 array of finite times > 0; ValueError naming the problem otherwise."""
    a = np.asarray(samples, dtype=np.float64).ravel()
    if a.size == 0:
        raise ValueError(f"{what}: no samples")
    bad = ~np.isfinite(a) | (a <= 0)
    if bad.any():
        raise ValueError(f"{what}: sample {int(np.argmax(bad))} is {float(a[bad][0])!r}; timings must be finite "
                         "and > 0")
    return a


def relative_noise(samples) -> float:
    """Robust relative standard deviation of timed samples: IQR / (1.349 * median).

    For normally distributed samples this estimates stdev / mean (nvbench's "noise"); a few outliers do
    not move it. 0 for a single sample.
    """
    a = as_samples(samples)
    if a.size < 2:
        return 0.0
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    return float((q3 - q1) / (IQR_PER_SIGMA * med))


def _rng_kwargs(seed: int) -> dict:
    """scipy >= 1.15 takes ``rng``; older releases ``random_state`` (both: a Generator)."""
    from scipy import stats

    key = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"
    return {key: np.random.default_rng(seed)}


def statistic_ci(samples: Sequence, fn: Callable[[np.ndarray], np.ndarray], *, confidence: float = CONFIDENCE,
                 n_resamples: int = N_RESAMPLES, seed: int = 0) -> tuple[float, float, float]:
    """(value, low, high) of ``fn`` applied to the medians of several independent sample sets.

    ``samples``: k sample sets (each 1-D, times > 0). ``fn`` maps an array of medians of shape (k, m)
    to m values (one per column: the point estimate is column 0 of a (k, 1) array; the bootstrap passes
    many columns at once). Each set is resampled independently (``scipy.stats.bootstrap``,
    ``paired=False``, percentile method). Any set with fewer than two samples: low and high are NaN.

    >>> import numpy as np
    >>> a, b = np.array([1.0, 1.1, 0.9, 1.05]), np.array([2.0, 2.2, 1.9, 2.1])
    >>> v, lo, hi = statistic_ci([a, b], lambda m: m[1] / m[0])
    >>> round(v, 3)
    2.0
    """
    sets = [as_samples(s, f"sample set {i}") for i, s in enumerate(samples)]
    if not sets:
        raise ValueError("statistic_ci: no sample sets")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (e.g. 0.95), got {confidence!r}")
    if int(n_resamples) < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    meds = np.array([[np.median(s)] for s in sets])
    value = float(np.asarray(fn(meds)).ravel()[0])
    if any(s.size < 2 for s in sets):
        return value, math.nan, math.nan
    from scipy import stats

    def statistic(*resampled, axis=-1):
        m = np.stack([np.median(r, axis=axis) for r in resampled])
        flat = m.ndim == 1
        out = np.asarray(fn(m[:, None] if flat else m))
        return out[0] if flat else out

    total = sum(s.size for s in sets)
    batch = max(1, min(int(n_resamples), _BATCH_ELEMENTS // total))
    with warnings.catch_warnings():
        # NOTE: identical samples (a clock with coarse ticks) give a degenerate bootstrap distribution;
        # the percentile interval is then that single value, which is the right answer, not a warning.
        warnings.simplefilter("ignore")
        res = stats.bootstrap(tuple(sets), statistic, n_resamples=int(n_resamples), batch=batch,
                              vectorized=True, paired=False, confidence_level=confidence, method="percentile",
                              **_rng_kwargs(seed))
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return value, low, high


def median_ci(samples, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
              seed: int = 0) -> tuple[float, float]:
    """(low, high): bootstrap confidence interval of the median of ``samples`` (NaN, NaN under 2 samples).

    >>> lo, hi = median_ci([1.0, 1.2, 0.9, 1.1, 1.05, 0.95])
    >>> lo <= 1.025 <= hi
    True
    """
    _, low, high = statistic_ci([samples], lambda m: m[0], confidence=confidence, n_resamples=n_resamples,
                                seed=seed)
    return low, high


def ratio_ci(num_samples, den_samples, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
             seed: int = 0) -> tuple[float, float, float]:
    """(ratio, low, high) of median(num) / median(den), e.g. speedup = reference time / our time."""
    return statistic_ci([num_samples, den_samples], lambda m: m[0] / m[1], confidence=confidence,
                        n_resamples=n_resamples, seed=seed)


def geomean(values) -> float:
    """Geometric mean of positive values (NaN for none)."""
    v = np.asarray(list(values), dtype=np.float64)
    return float(np.exp(np.mean(np.log(v)))) if v.size else math.nan


def geomean_ci(pairs: Sequence[tuple], confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
               seed: int = 0) -> tuple[float, float, float]:
    """(geomean, low, high) of median(num_i) / median(den_i) over ``pairs`` = [(num_i, den_i), ...].

    Every sample set of every pair is resampled independently, so the interval carries the noise of
    each row's timings (not the spread between rows: the rows are the fixed set of workloads measured).
    """
    if not pairs:
        raise ValueError("geomean_ci: no pairs")
    flat = [s for pair in pairs for s in pair]

    def fn(m):
        return np.exp(np.mean(np.log(m[0::2] / m[1::2]), axis=0))

    return statistic_ci(flat, fn, confidence=confidence, n_resamples=n_resamples, seed=seed)
