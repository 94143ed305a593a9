"""Feature and prediction drift: PSI and two-sample Kolmogorov–Smirnov between a reference and a window.

What drift means here (measured in bench/drift_study.py, figures in bench/MONITORING.md): in crypto the
price level and the volatility level change distribution almost every day, so PSI on level- or
volatility-scaled features (raw returns, realised volatility, ATR, bar range, MACD, day of week) alarms
on most days of a perfectly ordinary month. A short-horizon return model cares about the *shape* of
its inputs in their own normalised units, so drift alarms are raised only on scale-free
price-dynamics features (`DRIFT_FEATURES`): returns divided by trailing volatility, the volatility
ratio and bounded oscillators. Activity / liquidity levels and order-flow imbalance are reported but
do not alarm (`INFO_FEATURES`: liquidity moves daily on illiquid markets and feed health is a
data-quality check), and time encodings are excluded (deterministic: a single day is always "drifted"
in day of week). Loss of skill, the question that actually decides a retrain, is measured directly on
matured predictions in `performance.py`.

Liquidity still reaches the alarm features: empty minutes are flat bars (zero return), so a market far
less liquid than the reference alarms through `zret_1` and the oscillators. Drift is computed on all
minutes on purpose (the model is fed those flat bars), but such an alarm means "the liquidity regime
changed" more than "price dynamics changed": Kraken Q1 2023 vs the FTX January 2022 reference is ERROR
on all minutes and only WARN on its liquid minutes (empty_frac_60 <= 0.2); `psi.empty_frac_60` in the
report's metadata tells the two apart (bench/MONITORING.md section b).

Severity uses effect sizes, not p-values: one-minute features are strongly autocorrelated (rolling
windows overlap), so a KS p-value on 1,440 rows a day is meaninglessly small; the KS *statistic* D is
compared with the thresholds and the p-value is only reported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import polars as pl

# Scale-free features whose drift raises WARN / ERROR (names from crypto_platform.transforms.features):
#   zret_1/5/15       log return over 1/5/15 min divided by trailing 60-min volatility (sqrt-time scaled)
#   vol_ratio_15_60   15-min / 60-min realised volatility: a volatility *regime change*, not its level
#   rsi_14, bb_pctb_20, stoch_15   bounded oscillators (position of the close in its recent range)
# Measured (bench/MONITORING.md): 0 of 24 January 2022 FTX days and 1 of 83 Kraken Q1 2023 days reach
# ERROR against the preceding 7 days, while Kraken against the January reference is ERROR on 90 of 90
# days (mostly through its empty minutes: on liquid minutes only the quarter is WARN) and 10 bp
# bad-tick noise is caught on most days.
DRIFT_FEATURES: tuple[str, ...] = (
    "zret_1",
    "zret_5",
    "zret_15",
    "vol_ratio_15_60",
    "rsi_14",
    "bb_pctb_20",
    "stoch_15",
)

# Reported next to DRIFT_FEATURES (pass as `info_features`) but never raising the severity:
#   volume_z_60, empty_frac_60   activity / liquidity *levels*: stable on a liquid market, but on an
#       illiquid one they move every day (with them the check is WARN on 86% and ERROR on 78% of
#       Kraken days vs its own preceding week). A feed outage within a day is data quality (the candle
#       suite's per-instrument `min_non_empty_share`); a sustained liquidity change still shows in the
#       alarm features through flat bars (see the module docstring).
#   taker_buy_ratio_15   taker order-flow imbalance: scale-free, but null in imported OHLCV, so its
#       false-alarm rate could not be measured on the available history; promote it once measured on
#       candles built from trades.
#   zret_60   scale-free, but its 60-minute windows overlap (~24 independent values a day): daily PSI
#       is noise (>= 0.1 on 38% of January days).
INFO_FEATURES: tuple[str, ...] = ("volume_z_60", "empty_frac_60", "taker_buy_ratio_15", "zret_60")

# Default thresholds, chosen from the false-alarm study (each day vs the preceding 7 days, FTX January
# 2022 and Kraken Q1 2023) and the regime / planted-fault checks; see bench/MONITORING.md.
PSI_WARN = 0.2
PSI_ERROR = 0.3
KS_WARN = 0.15
KS_ERROR = 0.2
PSI_BINS = 10
PSI_EPSILON = 1e-4
MIN_ROWS = 360  # fewer finite values (6 hours of minutes) in either sample: the feature is not judged


class Severity(StrEnum):
    """Drift verdict, ordered OK < WARN < ERROR."""

    OK = "OK"
    WARN = "WARN"
    ERROR = "ERROR"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Severity.OK: 0, Severity.WARN: 1, Severity.ERROR: 2}  # (StrEnum compares as strings)


def worst(severities: Sequence[Severity]) -> Severity:
    """The most severe of these (OK when empty)."""
    return max(severities, key=lambda s: s.rank, default=Severity.OK)


@dataclass(frozen=True)
class DriftThresholds:
    """PSI and KS-statistic levels at which a feature is WARN / ERROR (inclusive)."""

    psi_warn: float = PSI_WARN
    psi_error: float = PSI_ERROR
    ks_warn: float = KS_WARN
    ks_error: float = KS_ERROR

    def __post_init__(self) -> None:
        if not (0 < self.psi_warn <= self.psi_error and 0 < self.ks_warn <= self.ks_error <= 1):
            raise ValueError(f"thresholds must satisfy 0 < warn <= error (KS <= 1): {self}")

    def classify(self, psi_value: float | None, ks_value: float | None) -> Severity:
        """Severity of one feature from its PSI and KS statistic (None = not computed)."""
        p = -math.inf if psi_value is None else psi_value
        k = -math.inf if ks_value is None else ks_value
        if p >= self.psi_error or k >= self.ks_error:
            return Severity.ERROR
        if p >= self.psi_warn or k >= self.ks_warn:
            return Severity.WARN
        return Severity.OK


@dataclass(frozen=True)
class FeatureDrift:
    """Drift statistics of one feature between the reference and the current window."""

    feature: str
    severity: Severity
    psi: float | None  # None when not judged (too few finite values)
    ks: float | None  # KS statistic D
    ks_pvalue: float | None  # reported only: invalid under autocorrelation
    n_reference: int  # finite values used
    n_current: int
    null_share_reference: float  # share of null / NaN / inf values
    null_share_current: float
    monitored: bool = True  # False: informational, never raises the report's severity
    note: str | None = None


@dataclass(frozen=True)
class DriftReport:
    """Per-feature drift and the overall severity (worst monitored feature)."""

    severity: Severity
    features: tuple[FeatureDrift, ...]
    thresholds: DriftThresholds
    n_reference: int  # rows
    n_current: int

    @property
    def drifted(self) -> tuple[FeatureDrift, ...]:
        """Monitored features at WARN or ERROR, worst first."""
        hit = [f for f in self.features if f.monitored and f.severity is not Severity.OK]
        return tuple(sorted(hit, key=lambda f: (-f.severity.rank, -(f.psi or 0.0))))

    def feature(self, name: str) -> FeatureDrift:
        """The statistics of one feature (KeyError if absent)."""
        for f in self.features:
            if f.feature == name:
                return f
        raise KeyError(name)

    def to_metadata(self) -> dict[str, str | int | float]:
        """Flat figures for Dagster metadata: severity, drifted features, PSI and KS per feature."""
        out: dict[str, str | int | float] = {
            "severity": self.severity.value,
            "drifted": ", ".join(f"{f.feature}={f.severity.value}" for f in self.drifted) or "-",
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "thresholds": (
                f"psi {self.thresholds.psi_warn}/{self.thresholds.psi_error}, "
                f"ks {self.thresholds.ks_warn}/{self.thresholds.ks_error}"
            ),
        }
        for f in self.features:
            if f.psi is not None:
                out[f"psi.{f.feature}"] = round(f.psi, 4)
            if f.ks is not None:
                out[f"ks.{f.feature}"] = round(f.ks, 4)
        return out

    def summary(self) -> str:
        """One line: severity and the drifted features with their PSI / KS."""
        if not self.drifted:
            judged = sum(f.psi is not None for f in self.features if f.monitored)
            return f"drift {self.severity.value}: {judged} features judged, none drifted"
        parts = [f"{f.feature} {f.severity.value} (psi {f.psi:.3f}, ks {f.ks:.3f})" for f in self.drifted]
        return f"drift {self.severity.value}: " + "; ".join(parts)


# ----------------------------------------------------------------------------------------------
# statistics


def finite_values(values: pl.Series | np.ndarray | Sequence[float]) -> np.ndarray:
    """The finite values as float64 (nulls, NaN and inf dropped)."""
    if isinstance(values, pl.Series):
        arr = values.cast(pl.Float64).to_numpy()
    else:
        arr = np.asarray(values, dtype=np.float64)
    return arr[np.isfinite(arr)]


def quantile_edges(reference: np.ndarray, bins: int = PSI_BINS) -> np.ndarray:
    """Interior bin edges: the distinct reference quantiles at 1/bins, ..., (bins-1)/bins."""
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}")
    return np.unique(np.quantile(reference, np.arange(1, bins) / bins))


def bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of values in the bins (-inf, e1], (e1, e2], ..., (e_last, inf)."""
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
    return counts / max(len(values), 1)


def psi(
    reference: pl.Series | np.ndarray | Sequence[float],
    current: pl.Series | np.ndarray | Sequence[float],
    *,
    bins: int = PSI_BINS,
    epsilon: float = PSI_EPSILON,
) -> float:
    """Population stability index of current vs reference over reference-quantile bins."""
    ref, cur = finite_values(reference), finite_values(current)
    if len(ref) == 0 or len(cur) == 0:
        raise ValueError("psi needs finite values in both samples")
    edges = quantile_edges(ref, bins)
    r = np.clip(bin_shares(ref, edges), epsilon, None)  # epsilon: an empty bin must not give log(0)
    c = np.clip(bin_shares(cur, edges), epsilon, None)
    return float(np.sum((c - r) * np.log(c / r)))


def ks(
    reference: pl.Series | np.ndarray | Sequence[float],
    current: pl.Series | np.ndarray | Sequence[float],
) -> tuple[float, float]:
    """Two-sample Kolmogorov–Smirnov statistic D and its p-value (scipy.stats.ks_2samp)."""
    ref, cur = finite_values(reference), finite_values(current)
    if len(ref) == 0 or len(cur) == 0:
        raise ValueError("ks needs finite values in both samples")
    from scipy import stats  # imported by the drift checks when they run, not by the code location

    res = stats.ks_2samp(ref, cur)
    return float(res.statistic), float(res.pvalue)


# ----------------------------------------------------------------------------------------------
# reports


def feature_drift(
    reference: pl.Series,
    current: pl.Series,
    thresholds: DriftThresholds | None = None,
    *,
    name: str | None = None,
    bins: int = PSI_BINS,
    min_rows: int = MIN_ROWS,
    monitored: bool = True,
) -> FeatureDrift:
    """PSI, KS and severity of one feature (not judged, severity OK, when a sample is too small)."""
    thresholds = thresholds or DriftThresholds()
    ref, cur = finite_values(reference), finite_values(current)
    name = name or current.name
    null_ref = 1.0 - len(ref) / len(reference) if len(reference) else 0.0
    null_cur = 1.0 - len(cur) / len(current) if len(current) else 0.0
    if len(ref) < min_rows or len(cur) < min_rows:
        return FeatureDrift(
            feature=name,
            severity=Severity.OK,
            psi=None,
            ks=None,
            ks_pvalue=None,
            n_reference=len(ref),
            n_current=len(cur),
            null_share_reference=null_ref,
            null_share_current=null_cur,
            monitored=monitored,
            note=f"not judged: < {min_rows} finite values (reference {len(ref)}, current {len(cur)})",
        )
    p = psi(ref, cur, bins=bins)
    d, pvalue = ks(ref, cur)
    severity = thresholds.classify(p, d) if monitored else Severity.OK
    return FeatureDrift(
        feature=name,
        severity=severity,
        psi=p,
        ks=d,
        ks_pvalue=pvalue,
        n_reference=len(ref),
        n_current=len(cur),
        null_share_reference=null_ref,
        null_share_current=null_cur,
        monitored=monitored,
    )


def drift_report(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    features: Sequence[str] = DRIFT_FEATURES,
    psi_warn: float = PSI_WARN,
    psi_error: float = PSI_ERROR,
    ks_warn: float = KS_WARN,
    ks_error: float = KS_ERROR,
    *,
    info_features: Sequence[str] = (),
    bins: int = PSI_BINS,
    min_rows: int = MIN_ROWS,
) -> DriftReport:
    """Drift of each feature (current vs reference); severity = worst monitored feature."""
    thresholds = DriftThresholds(psi_warn, psi_error, ks_warn, ks_error)
    wanted = [*features, *[f for f in info_features if f not in features]]
    missing = sorted({f for f in wanted if f not in reference.columns or f not in current.columns})
    if missing:
        raise ValueError(f"drift_report: features missing from reference/current: {missing}")
    out = [
        feature_drift(
            reference[f],
            current[f],
            thresholds,
            name=f,
            bins=bins,
            min_rows=min_rows,
            monitored=f in features,
        )
        for f in wanted
    ]
    return DriftReport(
        severity=worst([f.severity for f in out if f.monitored]),
        features=tuple(out),
        thresholds=thresholds,
        n_reference=reference.height,
        n_current=current.height,
    )


def prediction_drift(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    column: str = "predicted_return",
    *,
    scale_column: str | None = None,
    psi_warn: float = PSI_WARN,
    psi_error: float = PSI_ERROR,
    ks_warn: float = KS_WARN,
    ks_error: float = KS_ERROR,
    bins: int = PSI_BINS,
    min_rows: int = MIN_ROWS,
) -> DriftReport:
    """Drift of the model output; scale_column (e.g. 'rv_60') divides it first to remove vol scale."""
    name = column if scale_column is None else f"{column}/{scale_column}"

    def values(df: pl.DataFrame) -> pl.DataFrame:
        expr = pl.col(column).cast(pl.Float64)
        if scale_column is not None:
            den = pl.col(scale_column).cast(pl.Float64)
            expr = pl.when(den > 0).then(expr / den)
        return df.select(expr.alias(name))

    return drift_report(
        values(reference),
        values(current),
        [name],
        psi_warn,
        psi_error,
        ks_warn,
        ks_error,
        bins=bins,
        min_rows=min_rows,
    )
