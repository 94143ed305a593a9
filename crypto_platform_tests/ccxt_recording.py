"""The recorded Binance trades served by the fake exchange, and the ccxt test universe around them:
shared by the ccxt pipeline, raw-ingest wire and reconciliation tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl

from crypto_platform import tables
from crypto_platform.partitions import DayPartition
from crypto_platform.resources.lake import LakeResource
from crypto_platform.settings import load_universe
from crypto_platform_tests.exchange_server import RecordedTrades
from crypto_platform_tests.paths import SHARED_DATA

RECORDED = SHARED_DATA / "trades" / "binance_spot_btcusdt_2024-01-01_1200-1230.parquet"


def ms(ts: datetime) -> int:
    """Epoch milliseconds of a UTC datetime."""
    return (ts - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def ms_delta(d: timedelta) -> int:
    return d // timedelta(milliseconds=1)


def recorded_trades(shift: timedelta = timedelta(0), next_day: bool = False) -> RecordedTrades:
    """The recorded Binance trades, as the fake exchange serves them (times moved by `shift`); with
    `next_day`, the recording again a day later (ids continued), so the exchange has traded after the
    day: what proves to the pager that the day was read to its end."""
    df = pl.read_parquet(RECORDED).select(
        pl.col("trade_id").cast(pl.Int64),
        (pl.col("datetime").dt.epoch("ms") + ms_delta(shift)).alias("timestamp_ms"),
        "price",
        "quantity",
        (pl.col("is_buyer_maker") == 1).alias("is_buyer_maker"),
    )
    if next_day:
        later = df.with_columns(
            pl.col("trade_id") + df.height, pl.col("timestamp_ms") + ms_delta(timedelta(days=1))
        )
        df = pl.concat([df, later])
    return RecordedTrades.from_frame("BTCUSDT", df)


CCXT_KEY = "2024-01-01|binance.BTC-USDT"


DAY_END = datetime(2024, 1, 2, tzinfo=UTC)


NOW = datetime(2024, 1, 3, tzinfo=UTC)  # the day is over and settled


def part() -> DayPartition:
    return DayPartition(load_universe().instrument("binance.BTC-USDT"), DAY_END.date() - timedelta(days=1))


def bronze_figures(tmp: Path) -> tuple[int, int, str]:
    """(rows, unique ids, exact sum of amounts) of the bronze partition."""
    df = LakeResource(root=str(tmp / "lake")).read_partition(tables.BRONZE_TRADES, part())
    [(total,)] = duckdb.sql("select sum(amount::decimal(18, 8))::varchar from df").fetchall()
    return df.height, df["trade_id"].n_unique(), total


def recording_figures(until_ms: int | None = None) -> tuple[int, int, str]:
    """The same figures of the recorded file (trades up to `until_ms` inclusive), by DuckDB."""
    where = "" if until_ms is None else f"where epoch_ms(datetime) <= {until_ms}"
    [(n, total)] = duckdb.sql(
        f"select count(*), sum(quantity::decimal(18, 8))::varchar from read_parquet('{RECORDED}') {where}"
    ).fetchall()
    return n, n, total
