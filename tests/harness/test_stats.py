"""Bootstrap confidence intervals (harness/stats.py): coverage on known distributions, determinism,
degenerate inputs, and the intervals of the targets (harness/targets.py).

Coverage: for each statistic, 200 independent synthetic data sets with a known true value (fixed seeds),
each with its 95% interval; the share of intervals holding the true value must be within the binomial
tolerance of 0.95. With 200 trials the share's standard deviation is sqrt(0.95 * 0.05 / 200) = 0.0154;
the band is 0.95 +- 3 standard deviations = [0.904, 0.996], which a method with the stated coverage
leaves with probability ~0.3%, while one that covers 0.90 or less (an interval ~25% too narrow) falls
out of it more often than not. The seeds are fixed, so the result does not change from run to run.

Why 500 resamples here (the default is 2000): the resample count only adds Monte-Carlo error to where
each endpoint sits (its quantile level has a standard error of sqrt(0.025 * 0.975 / 500) = 0.7
percentage points at 500), which averages out over trials: it moves the coverage far less than the 3-sigma
band. Measured on this code (2000 lognormal median trials at n=25): 0.939 with 500-ish (400) resamples,
0.955 with 2000 over 1000 trials; ratios 0.962 / 0.965, geomeans 0.976 / 0.970. The whole file runs in
a few seconds on 2 cores.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from harness import stats

TRIALS, RESAMPLES, N = 200, 500, 25
NOMINAL = 0.95
SIGMA = math.sqrt(NOMINAL * (1 - NOMINAL) / TRIALS)    # binomial standard deviation of the observed share
BAND = (NOMINAL - 3 * SIGMA, min(1.0, NOMINAL + 3 * SIGMA))


def _coverage(hit) -> float:
    return sum(bool(hit(i)) for i in range(TRIALS)) / TRIALS


def test_median_ci_covers_the_true_median():
    # lognormal(0, 0.1): median exp(0) = 1; right-skewed like timings
    def hit(i):
        rng = np.random.default_rng(i)
        lo, hi = stats.median_ci(rng.lognormal(0.0, 0.1, N), n_resamples=RESAMPLES, seed=i)
        return lo <= 1.0 <= hi

    assert BAND[0] <= _coverage(hit) <= BAND[1]


def test_ratio_ci_covers_the_true_ratio_lognormal():
    # two runs of unequal noise (10% and 20%); true ratio of medians exp(0.3) / exp(0)
    def hit(i):
        rng = np.random.default_rng(10_000 + i)
        r, lo, hi = stats.ratio_ci(rng.lognormal(0.3, 0.1, N), rng.lognormal(0.0, 0.2, N), n_resamples=RESAMPLES,
                                   seed=i)
        return lo <= math.exp(0.3) <= hi

    assert BAND[0] <= _coverage(hit) <= BAND[1]


def test_ratio_ci_covers_the_true_ratio_shifted_exponential():
    # a floor plus exponential delays, the usual shape of a timing: median = floor + scale * ln 2
    true = (2.0 + 0.10 * math.log(2)) / (1.0 + 0.05 * math.log(2))

    def hit(i):
        rng = np.random.default_rng(20_000 + i)
        num, den = 2.0 + rng.exponential(0.10, N), 1.0 + rng.exponential(0.05, N)
        r, lo, hi = stats.ratio_ci(num, den, n_resamples=RESAMPLES, seed=i)
        return lo <= true <= hi

    assert BAND[0] <= _coverage(hit) <= BAND[1]


def test_geomean_ci_covers_the_true_geomean():
    mus = (0.1, 0.5, -0.2, 0.0)     # four rows, true ratios exp(mu); true geomean exp(mean(mu))

    def hit(i):
        rng = np.random.default_rng(30_000 + i)
        pairs = [(rng.lognormal(m, 0.1, N), rng.lognormal(0.0, 0.1, N)) for m in mus]
        g, lo, hi = stats.geomean_ci(pairs, n_resamples=RESAMPLES, seed=i)
        return lo <= math.exp(np.mean(mus)) <= hi

    assert BAND[0] <= _coverage(hit) <= BAND[1]


def test_point_values_determinism_and_width():
    rng = np.random.default_rng(7)
    a, b = rng.lognormal(0.0, 0.05, 33), rng.lognormal(0.4, 0.05, 41)
    r, lo, hi = stats.ratio_ci(b, a, seed=3)
    assert r == pytest.approx(np.median(b) / np.median(a), rel=1e-12) and lo < r < hi
    assert stats.ratio_ci(b, a, seed=3) == (r, lo, hi)                  # deterministic given the seed
    assert stats.ratio_ci(b, a, seed=4) != (r, lo, hi)
    g, glo, ghi = stats.geomean_ci([(b, a), (a, b)], seed=1)
    assert g == pytest.approx(1.0, rel=1e-12) and glo < 1.0 < ghi      # ratios r and 1/r
    # 16x the samples: the interval of a median narrows ~4x (sqrt(n)); > 2.5x leaves room for sampling
    small = stats.median_ci(rng.lognormal(0.0, 0.1, 25), seed=0)
    large = stats.median_ci(rng.lognormal(0.0, 0.1, 400), seed=0)
    assert (small[1] - small[0]) > 2.5 * (large[1] - large[0])


def test_degenerate_and_bad_samples():
    assert all(math.isnan(v) for v in stats.median_ci([1e-3]))             # one sample: no interval
    r, lo, hi = stats.ratio_ci([2e-3], [1e-3, 1.1e-3])
    assert r == pytest.approx(2e-3 / 1.05e-3) and math.isnan(lo) and math.isnan(hi)
    assert stats.median_ci([2e-3] * 9) == (2e-3, 2e-3)                     # identical samples: that value
    for bad, needle in (([], "no samples"), ([1.0, 0.0], "sample 1 is 0.0"), ([1.0, -2.0], "sample 1"),
                        ([1.0, float("nan")], "finite")):
        with pytest.raises(ValueError, match=needle):
            stats.median_ci(bad)
    with pytest.raises(ValueError, match="confidence"):
        stats.median_ci([1.0, 2.0], confidence=95)
    with pytest.raises(ValueError, match="no pairs"):
        stats.geomean_ci([])


def test_relative_noise_estimates_the_relative_standard_deviation():
    rng = np.random.default_rng(5)
    x = rng.normal(10.0, 0.5, 20_000)
    # IQR / 1.349 estimates sigma for normal samples; 20000 samples: the estimate is within ~1.5%
    assert stats.relative_noise(x) == pytest.approx(0.05, rel=0.03)
    outliers = np.concatenate([x[:1000], [1e3] * 20])       # 2% wild samples barely move it
    assert stats.relative_noise(outliers) == pytest.approx(0.05, rel=0.1)
    assert stats.relative_noise([3.0]) == 0.0


def test_targets_carry_the_interval_of_their_figure():
    from harness.results import row_id
    from harness.targets import evaluate

    rng = np.random.default_rng(11)

    def row(impl, variant, kind, workload, batch, phase, ms):
        return {"impl": impl, "variant": variant, "device": "gpu", "kind": kind, "workload": workload,
                "batch": str(batch), "phase": phase, "precision": "fp32", "spec_hash": "", "median_ms": str(ms),
                "status": "ok", "parity_ok": "True"}

    rows, samples = [], {}
    for impl, variant, kind, wl, ms in (("custom", "cuda", "dense", "dense_M4096_N4096_K4096", 2.0),
                                        ("reference", "torch", "dense", "dense_M4096_N4096_K4096", 1.9),
                                        ("custom", "cuda", "conv2d", "c1", 1.0),
                                        ("reference", "torch", "conv2d", "c1", 0.4),
                                        ("custom", "cuda", "conv2d", "c2", 1.0),
                                        ("reference", "torch", "conv2d", "c2", 0.8)):
        s = ms / 1e3 * rng.lognormal(0.0, 0.03, 31)
        r = row(impl, variant, kind, wl, 8, "forward", 1e3 * float(np.median(s)))
        rows.append(r)
        samples[row_id(r)] = s
    t = {x["target"]: x for x in evaluate(rows, None, samples)}
    for name in ("dense_gemm_4096", "conv_suite_geomean", "conv_suite_min"):
        lo, hi, v = float(t[name]["ci_low"]), float(t[name]["ci_high"]), float(t[name]["measured"])
        assert lo <= v <= hi and hi / lo < 1.2, t[name]   # 3% noise, 31 samples: a few % wide
    assert t["train_step_vs_best_torch"]["ci_low"] == ""     # no rows behind it
    no_samples = {x["target"]: x for x in evaluate(rows, None)}
    assert no_samples["dense_gemm_4096"]["ci_low"] == "" and no_samples["dense_gemm_4096"]["measured"] != ""
