"""Gold-layer labels: forward log returns, with the moment each label becomes known (point in time).

The label of bar t over h minutes is log(close[t+h] / close[t]). It is known once bar t+h has
closed, at `label_available_at = ts + h + 1 minute`; training must only use labels available at its
cut-off (see `crypto_platform.ml.dataset.training_frame`). A label whose bar t+h is not in the data
(the last h minutes, or a hole in the grid) is absent, never guessed.
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from crypto_platform.schemas import INDEX_COLUMNS, KEYS

LABEL_COLUMNS = ["exchange", "symbol", "ts", "horizon", "label", "label_available_at"]


def forward_return_labels(candles: pl.DataFrame, horizon_minutes: int = 5) -> pl.DataFrame:
    """(exchange, symbol, ts, horizon, label, label_available_at); rows only where bar t+h exists."""
    _check(candles, horizon_minutes)
    h = timedelta(minutes=horizon_minutes)
    now = candles.select(*INDEX_COLUMNS, "close")
    later = candles.select(*KEYS, (pl.col("ts") - h).alias("ts"), pl.col("close").alias("_close_h"))
    return (
        now.join(later, on=INDEX_COLUMNS, how="inner")
        .select(
            *INDEX_COLUMNS,
            pl.lit(horizon_minutes, pl.Int32).alias("horizon"),
            (pl.col("_close_h") / pl.col("close")).log().alias("label"),
            (pl.col("ts") + h + timedelta(minutes=1)).alias("label_available_at"),
        )
        .sort(INDEX_COLUMNS)
    )


def past_log_return(candles: pl.DataFrame, horizon_minutes: int = 5) -> pl.DataFrame:
    """(exchange, symbol, ts, momentum = log(close[t] / close[t-h])): the causal momentum forecast."""
    _check(candles, horizon_minutes)
    h = timedelta(minutes=horizon_minutes)
    now = candles.select(*INDEX_COLUMNS, "close")
    earlier = candles.select(*KEYS, (pl.col("ts") + h).alias("ts"), pl.col("close").alias("_close_h"))
    return (
        now.join(earlier, on=INDEX_COLUMNS, how="left")
        .select(*INDEX_COLUMNS, (pl.col("close") / pl.col("_close_h")).log().alias("momentum"))
        .sort(INDEX_COLUMNS)
    )


def _check(candles: pl.DataFrame, horizon_minutes: int) -> None:
    if horizon_minutes < 1:
        raise ValueError(f"horizon_minutes must be >= 1, got {horizon_minutes}")
    missing = [c for c in [*INDEX_COLUMNS, "close"] if c not in candles.columns]
    if missing:
        raise ValueError(f"labels: candles lack columns {missing}")
    dupes = candles.select(INDEX_COLUMNS).is_duplicated().sum()
    if dupes:
        raise ValueError(f"labels: {dupes} candles share (exchange, symbol, ts)")
