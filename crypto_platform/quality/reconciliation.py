"""Reconciliation: bronze trades against the exchange's own 1-minute candles, minute by minute.

An independent completeness check: the exchange's candles are built by the exchange from all of its
trades, so a minute whose base volume in bronze differs from the exchange's candle lost (or gained)
trades, whatever the pager believed. Base volume is compared (not the trade count: aggregated trade
feeds such as Binance aggTrades count fewer rows than the exchange's candles count trades).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

VOLUME_REL_TOLERANCE = (
    1e-9  # float sums of thousands of amounts differ from the exchange's in the last digits
)
VOLUME_ABS_TOLERANCE = 1e-8  # one satoshi-sized step


@dataclass(frozen=True)
class Reconciliation:
    """The minutes compared and those whose base volume disagrees beyond the tolerance."""

    minutes: int  # whole minutes of the window (a minute empty on both sides agrees)
    mismatches: pl.DataFrame  # minute, bronze_trades, bronze_volume, exchange_volume, volume_diff

    @property
    def passed(self) -> bool:
        """True when every compared minute agrees."""
        return self.mismatches.is_empty()


def reconcile_minutes(
    bronze: pl.DataFrame,
    candles: pl.DataFrame,
    start: datetime,
    end: datetime,
    *,
    rel_tolerance: float = VOLUME_REL_TOLERANCE,
    abs_tolerance: float = VOLUME_ABS_TOLERANCE,
) -> Reconciliation:
    """Compare per-minute base volume of bronze trades (`ts`, `amount`) with the exchange's 1-minute
    candles (`ts`, `volume`) over the whole minutes of [start, end); a minute missing on one side
    counts as volume 0 there."""
    in_window = (pl.col("ts") >= start) & (pl.col("ts") < end)
    ours = (
        bronze.filter(in_window)
        .group_by(pl.col("ts").dt.truncate("1m").alias("minute"))
        .agg(pl.len().alias("bronze_trades"), pl.col("amount").sum().alias("bronze_volume"))
    )
    theirs = candles.filter(in_window).select(
        pl.col("ts").alias("minute"), pl.col("volume").alias("exchange_volume")
    )
    joined = ours.join(theirs, on="minute", how="full", coalesce=True).with_columns(
        pl.col("bronze_trades").fill_null(0),
        pl.col("bronze_volume").fill_null(0.0),
        pl.col("exchange_volume").fill_null(0.0),
    )
    joined = joined.with_columns((pl.col("bronze_volume") - pl.col("exchange_volume")).alias("volume_diff"))
    bound = pl.max_horizontal(pl.lit(abs_tolerance), pl.col("exchange_volume").abs() * rel_tolerance)
    bad = joined.filter(pl.col("volume_diff").abs() > bound).sort("minute")
    return Reconciliation(minutes=max(0, (end - start) // timedelta(minutes=1)), mismatches=bad)
