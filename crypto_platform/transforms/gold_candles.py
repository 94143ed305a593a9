"""Silver 1-minute candles as gold reads them: sorted, priced, and split where time is unknown.

Pure polars (no Dagster): used by the gold features, labels and predictions assets alike.
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from crypto_platform.schemas import INDEX_COLUMNS, KEYS

MINUTE = timedelta(minutes=1)
PRICE_COLUMNS = ["open", "high", "low", "close", "vwap"]


def segment_id() -> pl.Expr:
    """Run number of contiguous minutes per instrument: a new run starts after any absent minute."""
    breaks = (pl.col("ts").diff() != MINUTE).fill_null(True)
    return breaks.cast(pl.Int32).cum_sum().over(KEYS).alias("_seg")


def priced_candles(candles: pl.DataFrame) -> pl.DataFrame:
    """Silver 1-minute candles ready for gold: sorted, nothing invented, every row priced.

    * No minute is inserted. Silver has every minute of what its sources covered; a minute absent
      from silver is time no source vouched for (a day not materialized, a recording that ended),
      and a flat price carried across it would be invented data: fake zero returns in features and
      fake labels. Features therefore restart after such a gap (see `segmented_features`), and a
      label whose bar t+h is absent is not made.
    * Null prices: silver leaves the prices of leading empty minutes null when it had no earlier
      close (e.g. the previous day was materialized after this one). Where the minute before is
      present, its close is carried, exactly what silver writes for empty minutes; rows that stay
      without a price (nothing known before them) are dropped.
    """
    if candles.is_empty():
        return candles
    df = candles.sort(INDEX_COLUMNS)
    dupes = df.select(INDEX_COLUMNS).is_duplicated().sum()
    if dupes:
        raise ValueError(f"silver candles hold {dupes} duplicated (exchange, symbol, minute) rows")
    df = df.with_columns(segment_id())
    carried = pl.col("close").forward_fill().over([*KEYS, "_seg"])
    unpriced = pl.col("close").is_null()
    df = df.with_columns(
        *[pl.when(unpriced).then(carried).otherwise(pl.col(c)).alias(c) for c in PRICE_COLUMNS]
    )
    return df.filter(pl.col("close").is_not_null()).drop("_seg")
