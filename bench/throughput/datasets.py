"""The throughput bench's inputs: raw trade files (RAW_TRADES, payload included), one Parquet per UTC day.

`real`: the recorded Binance BTC/USDT ticks tiled to >= N trades over the days; `synthetic`: the
project's SyntheticSource (a numpy random walk when that module is missing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from crypto_platform.resources.lake import PARQUET_OPTIONS
from crypto_platform.schemas import RAW_TRADES, UTC_TS

REPO = Path(__file__).resolve().parents[2]
SHARED_TRADES = REPO.parent / "shared" / "data" / "trades"
REAL_FILE = SHARED_TRADES / "binance_spot_btcusdt_2024-01-01_1200-1230.parquet"
FIRST_DAY = datetime(2024, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)
DAY_MS = 86_400_000
PARQUET = dict(PARQUET_OPTIONS)  # exactly what LakeResource writes


@dataclass(frozen=True)
class Dataset:
    """Raw trade files of one instrument, one Parquet file per UTC day."""

    name: str
    exchange: str
    symbol: str
    days: tuple[tuple[datetime, str, int], ...]  # (day start, raw parquet path, rows)

    @property
    def trades(self) -> int:
        """Total trades over all day windows."""
        return sum(rows for _, _, rows in self.days)

    @property
    def max_day(self) -> int:
        """Trades of the largest day window."""
        return max(n for _, _, n in self.days)


def _payload(symbol: str) -> pl.Expr:
    """A Binance-like trade event as the raw payload (what a websocket/REST source keeps)."""
    return pl.concat_str(
        pl.lit('{"e":"trade","E":'), pl.col("timestamp_ms").cast(pl.String),
        pl.lit(f',"s":"{symbol}","t":'), pl.col("trade_id"),
        pl.lit(',"p":"'), pl.col("price").cast(pl.String),
        pl.lit('","q":"'), pl.col("amount").cast(pl.String),
        pl.lit('","T":'), pl.col("timestamp_ms").cast(pl.String),
        pl.lit(',"m":'), pl.when(pl.col("side") == "sell").then(pl.lit("true")).otherwise(pl.lit("false")),
        pl.lit(',"M":true}'),
    )  # fmt: skip


def _write_days(df: pl.DataFrame, name: str, exchange: str, symbol: str, folder: Path) -> Dataset:
    """Split RAW_TRADES rows by UTC day into one zstd Parquet file per day."""
    folder.mkdir(parents=True, exist_ok=True)
    days = []
    day_no = pl.col("timestamp_ms") // DAY_MS
    for (day,), part in df.sort("timestamp_ms").group_by(day_no.alias("_day"), maintain_order=True):
        start = datetime.fromtimestamp(int(day) * DAY_MS / 1000, UTC)  # type: ignore[call-overload]
        path = folder / f"{name}-{start:%Y-%m-%d}.parquet"
        part.drop("_day", strict=False).select(list(RAW_TRADES)).write_parquet(path, **PARQUET)
        days.append((start, str(path), part.height))
    return Dataset(name, exchange, symbol, tuple(days))


def make_real(n_trades: int, n_days: int, folder: Path) -> Dataset:
    """Real Binance ticks tiled to >= n_trades over n_days UTC days (fresh increasing ids)."""
    base = pl.read_parquet(REAL_FILE)
    t = base.get_column("datetime").dt.epoch("ms")
    rel = t - t.min()
    span = int(rel.max()) + 1
    n_tiles = math.ceil(n_trades / base.height)
    # Tiles start evenly over the days (each tile keeps its real intra-tile timing and prices);
    # neighbouring tiles overlap, which raises the density to n_trades / n_days per day.
    step = (n_days * DAY_MS - span) / max(n_tiles - 1, 1)
    offsets = pl.DataFrame({"tile": np.arange(n_tiles, dtype=np.int64)}).with_columns(
        (pl.lit(int(FIRST_DAY.timestamp() * 1000)) + (pl.col("tile") * step).cast(pl.Int64)).alias("t0")
    )
    tiles = (
        base.select(
            rel.alias("rel"), "price", pl.col("quantity").alias("amount"), "is_buyer_maker", "trade_id"
        )
        .join(offsets, how="cross")
        .select(
            (pl.col("t0") + pl.col("rel")).alias("timestamp_ms"),
            "price",
            "amount",
            pl.when(pl.col("is_buyer_maker") == 1)
            .then(pl.lit("sell"))
            .otherwise(pl.lit("buy"))
            .alias("side"),
            "tile",
            pl.col("trade_id").alias("orig_id"),
        )
        .sort("timestamp_ms", "tile", "orig_id")
        .with_columns(
            (pl.int_range(pl.len(), dtype=pl.Int64) + 10_000_000_000).cast(pl.String).alias("trade_id")
        )
    )
    raw = tiles.select(
        pl.lit("binance").alias("exchange"),
        pl.lit("BTC/USDT").alias("symbol"),
        "trade_id",
        "timestamp_ms",
        "price",
        "amount",
        pl.lit(None, dtype=pl.Float64).alias("cost"),  # the trade stream has no cost: bronze derives it
        "side",
        _payload("BTCUSDT").alias("payload"),
        pl.lit(f"replay:{REAL_FILE.name}").alias("source"),
        pl.lit(datetime(2024, 3, 5, tzinfo=UTC)).cast(UTC_TS).alias("received_at"),
    )
    return _write_days(raw, "real", "binance", "BTC/USDT", folder)


def make_synthetic(n_trades: int, n_days: int, folder: Path) -> Dataset:
    """Simulated trades: the project's SyntheticSource when present, else a numpy random walk."""
    rate = n_trades / (n_days * 1440)
    try:
        from crypto_platform.settings import Instrument
        from crypto_platform.sources.synthetic import SyntheticSource
    except ImportError:
        return _write_days(_numpy_trades(n_trades, n_days), "synthetic", "sim", "BTC/USDT", folder)
    instrument = Instrument("sim", "BTC/USDT", "synthetic")
    folder.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):  # the simulator's intraday profile makes the count approximate
        source = SyntheticSource(
            seed=7, trades_per_minute=min(rate, 49_000), now=lambda: datetime(2100, 1, 1, tzinfo=UTC)
        )
        days = []
        for d in range(n_days):
            start = FIRST_DAY + d * DAY
            batch = source.fetch(instrument, start, start + DAY)
            path = folder / f"synthetic-{start:%Y-%m-%d}.parquet"
            batch.trades.write_parquet(path, **PARQUET)
            days.append((start, str(path), batch.trades.height))
            del batch
        ds = Dataset("synthetic", "sim", "BTC/USDT", tuple(days))
        if ds.trades >= n_trades or attempt == 2:
            return ds
        rate *= 1.02 * n_trades / max(ds.trades, 1)
    raise AssertionError("unreachable")


def _numpy_trades(n_trades: int, n_days: int) -> pl.DataFrame:
    """Fallback generator: uniform arrival times, log-normal sizes, a Gaussian random-walk price."""
    rng = np.random.default_rng(7)
    t0 = int(FIRST_DAY.timestamp() * 1000)
    ts = np.sort(rng.integers(t0, t0 + n_days * DAY_MS, n_trades))
    price = np.round(60_000 * np.exp(np.cumsum(rng.normal(0, 2e-5, n_trades))), 2)
    amount = np.round(rng.lognormal(-6, 1.5, n_trades), 5) + 1e-5
    side = np.where(rng.random(n_trades) < 0.5, "buy", "sell")
    df = pl.DataFrame({"timestamp_ms": ts, "price": price, "amount": amount, "side": side})
    return df.select(
        pl.lit("sim").alias("exchange"),
        pl.lit("BTC/USDT").alias("symbol"),
        (pl.int_range(pl.len(), dtype=pl.Int64) + 1).cast(pl.String).alias("trade_id"),
        "timestamp_ms",
        "price",
        "amount",
        (pl.col("price") * pl.col("amount")).alias("cost"),
        "side",
    ).with_columns(
        _payload("BTCUSDT").alias("payload"),
        pl.lit("synthetic").alias("source"),
        pl.lit(datetime(2024, 3, 5, tzinfo=UTC)).cast(UTC_TS).alias("received_at"),
    )


MAKERS = {"real": make_real, "synthetic": make_synthetic}
