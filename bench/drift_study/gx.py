"""Time per call of the Great Expectations suites on real data (cold start, then the median of 3 calls)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from bench.drift_study.data import BINANCE_TRADES

CALLS = 3


@dataclass(frozen=True)
class GxTiming:
    """One suite call: rows validated, median seconds per call, whether every call passed."""

    label: str
    rows: int
    seconds: float
    success: bool


def _binance_bronze() -> pl.DataFrame:
    """The recorded Binance ticks as bronze trades."""
    from crypto_platform.schemas import BRONZE_TRADES, conform

    raw = pl.read_parquet(BINANCE_TRADES)
    side = pl.when(pl.col("is_buyer_maker") == 1).then(pl.lit("sell")).otherwise(pl.lit("buy"))
    return conform(
        raw.select(
            pl.lit("binance").alias("exchange"),
            pl.lit("BTC/USDT").alias("symbol"),
            pl.col("trade_id").cast(pl.String),
            pl.col("datetime").alias("ts"),
            "price",
            pl.col("quantity").alias("amount"),
            (pl.col("price") * pl.col("quantity")).alias("cost"),
            side.alias("side"),
        ),
        BRONZE_TRADES,
        name="bench trades",
    )


def gx_timing(ftx: pl.DataFrame) -> tuple[float, list[GxTiming]]:
    """Cold start (s) and per-call time of the bronze and candle suites on real data."""
    from crypto_platform.quality.expectations import validate_bronze, validate_candles, warm_up

    cold = warm_up()
    ws = datetime(2022, 1, 10, tzinfo=UTC)
    we = ws + timedelta(days=1)
    candles = ftx.filter((pl.col("ts") >= ws) & (pl.col("ts") < we))
    trades = _binance_bronze()
    big = pl.concat([trades.with_columns(pl.col("trade_id") + f"-{i}") for i in range(60)])
    tws = datetime(2024, 1, 1, tzinfo=UTC)
    twe = tws + timedelta(days=1)
    out = []
    for label, fn, frame in [
        ("validate_candles, one FTX day", lambda f: validate_candles(f, ws, we), candles),
        ("validate_bronze, Binance 30 min", lambda f: validate_bronze(f, tws, twe), trades),
        ("validate_bronze, 60 x that", lambda f: validate_bronze(f, tws, twe), big),
    ]:
        results = [fn(frame) for _ in range(CALLS)]
        seconds = float(np.median([r.duration_s for r in results]))
        out.append(GxTiming(label, frame.height, seconds, all(r.success for r in results)))
    return cold, out
