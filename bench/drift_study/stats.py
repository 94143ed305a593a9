"""PSI / KS of days against their references, alarm rates over thresholds, planted faults, a toy model."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl

from bench.drift_study.data import before, on, with_day
from crypto_platform.monitoring.drift import DRIFT_FEATURES, INFO_FEATURES, DriftThresholds, feature_drift
from crypto_platform.transforms.features import build_features


@dataclass(frozen=True)
class FeatureRow:
    """One feature over a set of days: PSI and D medians / maxima, shares of days over thresholds."""

    feature: str
    role: str  # 'alarm', 'info' or ''
    psi_median: float
    psi_max: float
    psi_over_01: float
    psi_over_error: float
    ks_median: float
    ks_max: float
    ks_over_warn: float


@dataclass(frozen=True)
class Stat:
    """PSI and KS statistic of one feature on one day against its reference."""

    day: date
    feature: str
    psi: float
    ks: float


@dataclass(frozen=True)
class Study:
    """PSI / KS of a set of days, each against its reference."""

    days: list[date]
    stats: list[Stat]

    def rate(self, columns: Sequence[str], psi_at: float | None, ks_at: float | None) -> float:
        """Share of days on which any of `columns` reaches psi_at or ks_at (None disables a test)."""
        cols, fired = set(columns), set()
        for s in self.stats:
            if s.feature in cols and (
                (psi_at is not None and s.psi >= psi_at) or (ks_at is not None and s.ks >= ks_at)
            ):
                fired.add(s.day)
        return len(fired) / len(self.days) if self.days else math.nan

    def warn_error(self, columns: Sequence[str], t: DriftThresholds) -> tuple[float, float]:
        """(share of days >= WARN, share of days ERROR) under thresholds t."""
        return self.rate(columns, t.psi_warn, t.ks_warn), self.rate(columns, t.psi_error, t.ks_error)

    def per_feature(self, columns: Sequence[str], t: DriftThresholds) -> list[FeatureRow]:
        """Median / max PSI and D per feature and the share of days over the thresholds."""
        rows, n = [], len(self.days)
        for c in columns:
            ps = np.array([s.psi for s in self.stats if s.feature == c])
            ds = np.array([s.ks for s in self.stats if s.feature == c])
            if len(ps) == 0:
                continue
            role = "alarm" if c in DRIFT_FEATURES else "info" if c in INFO_FEATURES else ""
            rows.append(
                FeatureRow(
                    feature=c,
                    role=role,
                    psi_median=float(np.median(ps)),
                    psi_max=float(ps.max()),
                    psi_over_01=float((ps >= 0.1).sum() / n),
                    psi_over_error=float((ps >= t.psi_error).sum() / n),
                    ks_median=float(np.median(ds)),
                    ks_max=float(ds.max()),
                    ks_over_warn=float((ds >= t.ks_warn).sum() / n),
                )
            )
        return rows


def study(
    features: pl.DataFrame,
    days: Sequence[date],
    columns: Sequence[str],
    reference_of: Callable[[date], pl.DataFrame],
    current_of: Callable[[date], pl.DataFrame] | None = None,
) -> Study:
    """PSI and KS statistic of each day vs its reference, for every column that can be judged."""
    current_of = current_of or (lambda d: on(features, d))
    out = []
    for d in days:
        ref, cur = reference_of(d), current_of(d)
        for c in columns:
            fd = feature_drift(ref[c], cur[c], name=c)
            if fd.psi is not None and fd.ks is not None:
                out.append(Stat(d, c, fd.psi, fd.ks))
    return Study(list(days), out)


def fault_study(
    candles: pl.DataFrame,
    days: Sequence[date],
    columns: Sequence[str],
    fault: Callable[[pl.DataFrame, date], pl.DataFrame],
) -> Study:
    """Plant `fault` on each day, rebuild the features and compare the day with the week before."""
    stats: list[Stat] = []
    for d in days:
        f = with_day(build_features(fault(candles, d)))
        stats += study(f, [d], columns, lambda dd, f=f: before(f, dd)).stats
    return Study(list(days), stats)


def freeze_feed(candles: pl.DataFrame, day: date, hours: int = 3, start_hour: int = 12) -> pl.DataFrame:
    """A feed outage: `hours` of minutes become empty bars (last close carried, zero volume)."""
    t0 = datetime(day.year, day.month, day.day, start_hour, tzinfo=UTC)
    frozen = (pl.col("ts") >= t0) & (pl.col("ts") < t0 + timedelta(hours=hours))
    last = candles.filter(pl.col("ts") < t0)["close"][-1]
    return candles.with_columns(
        *[
            pl.when(frozen).then(pl.lit(last)).otherwise(pl.col(c)).alias(c)
            for c in ["open", "high", "low", "close", "vwap"]
        ],
        *[pl.when(frozen).then(0.0).otherwise(pl.col(c)).alias(c) for c in ["volume", "quote_volume"]],
        pl.when(frozen).then(True).otherwise(pl.col("is_empty")).alias("is_empty"),
    )


def bad_ticks(bp: float) -> Callable[[pl.DataFrame, date], pl.DataFrame]:
    """Noisy prices on one day: each bar's prices times (1 + bp/1e4 * N(0,1)), e.g. a bad price source."""

    def plant(candles: pl.DataFrame, day: date) -> pl.DataFrame:
        rng = np.random.default_rng(day.toordinal())
        on_day = (candles["ts"].dt.date() == day).to_numpy()
        factor = pl.Series("_f", np.where(on_day, 1.0 + bp / 1e4 * rng.standard_normal(candles.height), 1.0))
        return candles.with_columns(
            *[(pl.col(c) * factor).alias(c) for c in ["open", "high", "low", "close", "vwap"]]
        )

    return plant


def toy_predictions(
    features: pl.DataFrame, candles: pl.DataFrame, train_days: Sequence[date]
) -> pl.DataFrame:
    """A vol-scaled linear 5-minute return forecast fitted on train_days (stands in for a real model)."""
    h = 5
    fwd = candles.select("ts", (pl.col("close").shift(-h).log() - pl.col("close").log()).alias("fwd"))
    target = pl.col("fwd") / (pl.col("rv_60") * math.sqrt(h))
    df = features.join(fwd, on="ts").with_columns(target.alias("y"))
    x_cols = ["zret_1", "zret_5", "zret_15", "rsi_14", "bb_pctb_20", "stoch_15", "volume_z_60"]
    usable = pl.all_horizontal([pl.col(c).is_finite() for c in [*x_cols, "rv_60"]])
    train = df.filter(usable & pl.col("y").is_finite() & pl.col("day").is_in(list(train_days)))
    x = np.column_stack([np.ones(train.height), train.select(x_cols).to_numpy()])
    beta, *_ = np.linalg.lstsq(x, train["y"].to_numpy(), rcond=None)
    full = df.filter(usable)
    z = np.column_stack([np.ones(full.height), full.select(x_cols).to_numpy()]) @ beta
    return full.select("ts", "day", "rv_60").with_columns(
        pl.Series("predicted_return", z * full["rv_60"].to_numpy() * math.sqrt(h))
    )
