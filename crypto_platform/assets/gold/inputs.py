"""Silver 1-minute candles as the gold assets read them from the lake, and the per-day gold frames.

Silver is read as it is: a minute absent from silver is unknown time and gold never fills it
(`transforms.gold_candles.priced_candles`). Corrupted or missing silver partitions fail the run
with the partition named, even when the candles_1m_suite check did not run.
"""

from __future__ import annotations

import math
from datetime import date, timedelta

import dagster as dg
import polars as pl

from crypto_platform import tables
from crypto_platform.partitions import DayPartition
from crypto_platform.resources.lake import LakeResource
from crypto_platform.settings import Instrument, load_universe
from crypto_platform.transforms.candles import candle_violations, describe_violations
from crypto_platform.transforms.features import (
    FEATURES_SCHEMA,
    INDEX_COLUMNS,
    LOOKBACK_MINUTES,
    segmented_features,
)
from crypto_platform.transforms.gold_candles import priced_candles
from crypto_platform.transforms.labels import LABEL_COLUMNS, forward_return_labels

HISTORY_DAYS = math.ceil(LOOKBACK_MINUTES / (24 * 60))  # earlier days a feature day needs


def silver_candles(lake: LakeResource, inst: Instrument, day: date, offsets: range) -> pl.DataFrame | None:
    """Priced 1-minute candles of one instrument over days relative to `day` (None: none written)."""
    parts = [DayPartition(inst, day + timedelta(days=d)) for d in offsets]
    df = lake.read_partitions(tables.CANDLES_1M, parts)
    if df is not None and (bad := candle_violations(df)).height:  # even when candles_1m_suite did not run
        part = DayPartition(inst, bad["ts"].min().date())
        raise dg.Failure(
            f"silver/candles_1m {part} is corrupted, refusing to build gold from it: "
            f"{describe_violations(bad.filter(pl.col('ts').dt.date() == part.day))}. Re-materialize or "
            "re-import that partition (the candles_1m_suite check reports every expectation)."
        )
    return None if df is None else priced_candles(df)


def day_rows(df: pl.DataFrame, part: DayPartition) -> pl.DataFrame:
    """The rows of one (instrument, UTC day) partition."""
    return df.filter(
        (pl.col("exchange") == part.instrument.exchange)
        & (pl.col("symbol") == part.instrument.symbol)
        & (pl.col("ts") >= part.start)
        & (pl.col("ts") < part.end)
    )


def require_silver(lake: LakeResource, part: DayPartition) -> None:
    """Fail naming the partition when silver/candles_1m has not been written for it."""
    if not lake.has_partition(tables.CANDLES_1M, part):
        raise dg.Failure(
            f"silver/candles_1m {part} is not materialized; materialize the silver layer (or import its "
            "OHLCV history with import_candles_job) first"
        )


def features_for(lake: LakeResource, part: DayPartition) -> pl.DataFrame:
    """Features of one (instrument, day): its candles plus same-exchange peers for cross-symbol features."""
    require_silver(lake, part)
    own = silver_candles(lake, part.instrument, part.day, range(-HISTORY_DAYS, 1))
    if own is None or day_rows(own, part).is_empty():
        return pl.DataFrame(schema=FEATURES_SCHEMA)  # no priced minute that day (see priced_candles)
    peers = [
        c
        for inst in load_universe().instruments
        if inst.exchange == part.instrument.exchange and inst != part.instrument
        if (c := silver_candles(lake, inst, part.day, range(-HISTORY_DAYS, 1))) is not None and c.height
    ]
    candles = pl.concat([own, *peers], how="vertical")
    return day_rows(segmented_features(candles), part)


def labels_for(lake: LakeResource, part: DayPartition, horizons: list[int]) -> pl.DataFrame:
    """Labels of one (instrument, day) for each horizon; the next day's candles complete the last ones."""
    require_silver(lake, part)
    candles = silver_candles(lake, part.instrument, part.day, range(-1, 2))  # day before: leading empties
    if candles is None or day_rows(candles, part).is_empty():
        return pl.DataFrame(schema=tables.LABELS.schema)
    frames = [day_rows(forward_return_labels(candles, h), part) for h in horizons]
    return pl.concat(frames, how="vertical").select(LABEL_COLUMNS).sort("horizon", *INDEX_COLUMNS)


def closes_for(lake: LakeResource, part: DayPartition) -> pl.DataFrame:
    """The priced candles of one partition as its features saw them (leading empty minutes priced
    from the day before), for the prices implied by forecasts."""
    require_silver(lake, part)
    candles = silver_candles(lake, part.instrument, part.day, range(-1, 1))
    return day_rows(candles, part)  # type: ignore[arg-type]  # present: require_silver passed
