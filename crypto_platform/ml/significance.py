"""Paired significance tests of a forecast against a baseline when h-minute labels overlap.

Per-observation scores whose mean is the metric (rank IC: the product of the z-scored ranks; hit
rate: 1/0 per hit/miss, 1/2 for no call; MAE and RMSE: minus the absolute and squared error) are
differenced row by row, summed per bar time (instruments at one minute are one observation) and
given a HAC standard error at lag horizon - 1: Hansen-Hodrick (equal) weights, exact for the MA(h-1)
dependence of overlapping labels; Newey-West's Bartlett weights at the same lag under-weight it, so
a test that should reject 5% of the time rejects more often.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

HacKernel = Literal["hansen-hodrick", "bartlett"]
METRICS: dict[str, bool] = {"rank_ic": True, "hit_rate": True, "mae": False, "rmse": False}  # higher better


@dataclass(frozen=True)
class BaselineTest:
    """The model vs one baseline on one metric: values, the model's advantage, one-sided HAC p-value."""

    metric: str
    baseline: str
    spec: str
    model_value: float  # on the test's scale: a constant forecast has rank IC 0, a no-call hit rate 1/2
    baseline_value: float
    advantage: float  # how much better the model is (positive: better), in the metric's units
    p_value: float  # one-sided: H0 the model is not better (Newey-West t, normal)
    t_stat: float
    lag: int
    n: int
    n_times: int


def observation_scores(prediction: np.ndarray, realised: np.ndarray, metric: str) -> np.ndarray:
    """Per-row scores whose mean is the metric, oriented so that higher is better (NaN: row not scored).

    rank_ic: z(rank forecast) * z(rank outcome), population z-scores, so the mean is exactly Spearman's
    rho (0 for a constant forecast); hit_rate: 1 hit, 0 miss, 1/2 no call, on rows with a move;
    mae: -|error|; rmse: -error^2 (the test is on the mean squared error).
    """
    pred = np.asarray(prediction, dtype=float)
    real = np.asarray(realised, dtype=float)
    if metric == "rank_ic":
        return _zrank(pred) * _zrank(real)
    if metric == "hit_rate":
        hit = np.where(pred == 0, 0.5, (np.sign(pred) == np.sign(real)).astype(float))
        return np.where(real == 0, np.nan, hit)
    if metric == "mae":
        return -np.abs(pred - real)
    if metric == "rmse":
        return -((pred - real) ** 2)
    raise ValueError(f"observation_scores: metric must be one of {sorted(METRICS)}, got {metric!r}")


def hac_mean_test(
    diff: np.ndarray, times: np.ndarray | None = None, *, lag: int, kernel: HacKernel = "hansen-hodrick"
) -> tuple[float, float, float]:
    """(mean, HAC standard error, one-sided p of mean > 0) of per-row differences.

    Rows sharing a time are summed into one observation of the time series (cross-sectional
    dependence); the weighted autocovariances of those sums up to `lag` (in distinct times, oldest
    first) give the variance of the mean: se^2 = (g0 + 2 sum_l w_l g_l) / n^2, g_l = sum_t e_t e_(t-l),
    e_t = sum over the time's rows of (d - mean). Weights: 'hansen-hodrick' w_l = 1 (exact for the
    MA(h-1) dependence of h-period overlapping labels; Bartlett's when that sum is not positive),
    'bartlett' (Newey-West) w_l = 1 - l/(lag+1). p uses the normal law.
    """
    if kernel not in ("hansen-hodrick", "bartlett"):
        raise ValueError(f"hac_mean_test: kernel must be 'hansen-hodrick' or 'bartlett', got {kernel!r}")
    d = np.asarray(diff, dtype=float)
    t = np.arange(d.size) if times is None else np.asarray(times)
    if t.shape != d.shape:
        raise ValueError(f"hac_mean_test: {t.shape} times for {d.shape} differences")
    if lag < 0:
        raise ValueError(f"hac_mean_test: lag must be >= 0, got {lag}")
    ok = np.isfinite(d)
    d, t = d[ok], t[ok]
    n = d.size
    if n < 2:
        return float("nan"), float("nan"), 1.0
    mean = float(d.mean())
    _, inverse = np.unique(t, return_inverse=True)
    e = np.bincount(inverse, weights=d - mean)
    cross = [float(e[ell:] @ e[:-ell]) for ell in range(1, min(lag, e.size - 1) + 1)]
    bartlett = float(e @ e) + 2.0 * sum((1.0 - ell / (lag + 1)) * g for ell, g in enumerate(cross, 1))
    uniform = float(e @ e) + 2.0 * sum(cross)
    s = uniform if kernel == "hansen-hodrick" and uniform > 0 else bartlett
    se = math.sqrt(max(s, 0.0)) / n
    if se == 0.0:
        return mean, 0.0, (0.0 if mean > 0 else 1.0)
    from scipy import stats  # imported when a test is computed, not when the code location loads

    return mean, se, float(stats.norm.sf(mean / se))


def paired_test(
    prediction: np.ndarray,
    baseline: np.ndarray,
    realised: np.ndarray,
    times: np.ndarray,
    *,
    metric: str,
    lag: int,
    baseline_name: str = "baseline",
    spec: str = "",
) -> BaselineTest:
    """Is the model better than `baseline` on `metric`? Paired HAC test of the per-row score difference."""
    pred, base, real = (np.asarray(a, dtype=float) for a in (prediction, baseline, realised))
    ok = np.isfinite(pred) & np.isfinite(base) & np.isfinite(real)
    pred, base, real, times = pred[ok], base[ok], real[ok], np.asarray(times)[ok]
    mine, theirs = observation_scores(pred, real, metric), observation_scores(base, real, metric)
    diff = mine - theirs
    _, se, p = hac_mean_test(diff, times, lag=max(0, lag))
    m, b = (
        float(np.nanmean(mine)) if mine.size else math.nan,
        float(np.nanmean(theirs)) if mine.size else math.nan,
    )
    if metric == "mae":
        m, b = -m, -b
    elif metric == "rmse":
        m, b = math.sqrt(-m), math.sqrt(-b)
    advantage = (m - b) if METRICS[metric] else (b - m)
    mean_diff = float(np.nanmean(diff)) if diff.size else math.nan
    return BaselineTest(
        metric=metric,
        baseline=baseline_name,
        spec=spec,
        model_value=m,
        baseline_value=b,
        advantage=advantage,
        p_value=p,
        t_stat=mean_diff / se if se and math.isfinite(se) else math.nan,
        lag=max(0, lag),
        n=int(np.isfinite(diff).sum()),
        n_times=int(np.unique(times[np.isfinite(diff)]).size),
    )


def _zrank(x: np.ndarray) -> np.ndarray:
    """Population z-score of the average ranks (0 everywhere for a constant)."""
    from scipy import stats

    r = stats.rankdata(x)
    sd = float(r.std())
    return np.zeros_like(r) if sd == 0 else (r - r.mean()) / sd
