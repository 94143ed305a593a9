"""Simple forecasts a model must beat, fitted on the training window only (polars/numpy in, forecasts out).

* reversal: s * ret_k, the past k-minute log return with sign s (-1: reversal, +1: continuation); the
  (s, k) with k in 1/5/15 minutes is the one with the best rank IC on the training window, and it is
  then scored unchanged on the evaluation window (choosing it there would flatter it);
* ridge: ridge regression on the model's features, standardized with training means and standard
  deviations (nulls -> the training mean, i.e. 0), target clipped and centred like the LightGBM model's.

The zero and momentum forecasts need no fitting (see `evaluation`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from crypto_platform.ml.evaluation import rank_ic

REVERSAL_LOOKBACKS: tuple[int, ...] = (1, 5, 15)
RIDGE_ALPHA = 1.0  # penalty per observation on standardized features: (1/n)|y - Xb|^2 + alpha |b|^2
CLIP_QUANTILE = 0.005  # the LightGBM model's target clipping (training.CLIP_QUANTILE)


@dataclass(frozen=True)
class Reversal:
    """sign * ret_<lookback>, chosen on the training window by rank IC."""

    sign: int
    lookback: int
    train_rank_ic: float
    candidates: dict[tuple[int, int], float] = field(default_factory=dict)  # (sign, lookback) -> IC

    @property
    def column(self) -> str:
        return f"ret_{self.lookback}"

    def describe(self) -> str:
        """e.g. 'reversal: -ret_5 (training rank IC 0.031)'."""
        kind = "reversal" if self.sign < 0 else "continuation"
        sign = "-" if self.sign < 0 else "+"
        return f"{kind}: {sign}{self.column} (training rank IC {self.train_rank_ic:.4g})"

    def predict(self, frame: pl.DataFrame) -> np.ndarray:
        """The forecast on `frame` (a null past return forecasts 0)."""
        return self.sign * _past_return(frame, self.lookback)


def fit_reversal(
    train: pl.DataFrame, *, label_col: str = "label", lookbacks: tuple[int, ...] = REVERSAL_LOOKBACKS
) -> Reversal:
    """Pick the (sign, lookback) whose forecast sign * ret_k has the best rank IC on `train`."""
    missing = [c for c in [*(f"ret_{k}" for k in lookbacks), label_col] if c not in train.columns]
    if missing:
        raise ValueError(f"fit_reversal: training frame lacks columns {missing}")
    if train.height < 3:
        raise ValueError(f"fit_reversal: {train.height} training rows, need at least 3")
    real = train[label_col].cast(pl.Float64).to_numpy()
    candidates: dict[tuple[int, int], float] = {}
    for k in lookbacks:
        past = _past_return(train, k)
        for sign in (-1, 1):
            candidates[(sign, k)] = rank_ic(sign * past, real)
    # ties and undefined ICs: the earlier candidate (shorter lookback, reversal first) wins
    best = max(candidates, key=lambda c: candidates[c] if math.isfinite(candidates[c]) else -math.inf)
    return Reversal(sign=best[0], lookback=best[1], train_rank_ic=candidates[best], candidates=candidates)


@dataclass(frozen=True)
class Ridge:
    """A ridge regression on standardized features; features null or constant in training are dropped."""

    features: list[str]
    dropped: list[str]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    alpha: float

    def describe(self) -> str:
        """e.g. 'ridge (alpha 1) on 30 standardized features; dropped (null or constant): vwap_dist'."""
        text = f"ridge (alpha {self.alpha:g}) on {len(self.features)} standardized features"
        if not self.dropped:
            return text
        names = ", ".join(self.dropped[:5]) + (", ..." if len(self.dropped) > 5 else "")
        return f"{text}; dropped (null or constant in training): {names}"

    def predict(self, frame: pl.DataFrame) -> np.ndarray:
        """The forecast on `frame`: intercept + standardized(features) @ coef."""
        return self.intercept + standardize(frame, self.features, self.mean, self.scale) @ self.coef


def fit_ridge(
    train: pl.DataFrame,
    feature_cols: list[str],
    *,
    label_col: str = "label",
    alpha: float = RIDGE_ALPHA,
    clip_quantile: float = CLIP_QUANTILE,
    center_target: bool = True,
) -> Ridge:
    """Fit the ridge baseline on `train` (the model's training window and features)."""
    missing = [c for c in [*feature_cols, label_col] if c not in train.columns]
    if missing:
        raise ValueError(f"fit_ridge: training frame lacks columns {missing}")
    if alpha < 0:
        raise ValueError(f"fit_ridge: alpha must be >= 0, got {alpha}")
    raw = train.select([pl.col(c).cast(pl.Float64) for c in feature_cols]).to_numpy()
    finite = np.where(np.isfinite(raw), raw, np.nan)
    with warnings.catch_warnings():  # an all-null column: NaN mean and scale, dropped below
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, scale = np.nanmean(finite, axis=0), np.nanstd(finite, axis=0)
    keep = np.isfinite(mean) & np.isfinite(scale) & (scale > 0)
    used = [c for c, k in zip(feature_cols, keep, strict=True) if k]
    dropped = [c for c, k in zip(feature_cols, keep, strict=True) if not k]
    if not used:
        raise ValueError(f"fit_ridge: every feature of {feature_cols} is null or constant in training")
    mean, scale = mean[keep], scale[keep]
    x = standardize(train, used, mean, scale)
    y = train[label_col].cast(pl.Float64).to_numpy()
    if clip_quantile > 0:
        lo, hi = np.quantile(y, [clip_quantile, 1 - clip_quantile])
        y = np.clip(y, lo, hi)
    y_mean = float(y.mean())
    coef = ridge_coefficients(x, y - y_mean, alpha)
    return Ridge(used, dropped, mean, scale, coef, 0.0 if center_target else y_mean, alpha)


def ridge_coefficients(x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """argmin_b (1/n)|y - x b|^2 + alpha |b|^2 = (x'x + n alpha I)^-1 x'y (no intercept)."""
    n, p = x.shape
    return np.linalg.solve(x.T @ x + n * alpha * np.eye(p), x.T @ y)


def standardize(frame: pl.DataFrame, cols: list[str], mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(x - mean) / scale with the training statistics; null or non-finite values -> 0 (the mean)."""
    x = (frame.select([pl.col(c).cast(pl.Float64) for c in cols]).to_numpy() - mean) / scale
    return np.where(np.isfinite(x), x, 0.0)


def _past_return(frame: pl.DataFrame, k: int) -> np.ndarray:
    col = f"ret_{k}"
    if col not in frame.columns:
        raise ValueError(f"reversal baseline: frame lacks column {col}")
    return frame[col].cast(pl.Float64).fill_null(0.0).fill_nan(0.0).to_numpy()
