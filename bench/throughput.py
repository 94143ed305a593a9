"""End-to-end throughput of trades -> bronze -> candles (1m, 5m, 1h) with Parquet I/O: polars vs pandas.

Run from the repository root:  uv run --frozen python -m bench.throughput [--trades N] [--repeats R]

Per UTC day window (the lake's partition), each variant reads the day's raw trades from Parquet,
validates / de-duplicates them into bronze (+ rejects), writes both, builds the complete 1-minute
candle grid and its 5-minute and 1-hour roll-ups, and writes those. Datasets: (a) real Binance
BTC/USDT ticks (../shared/data) tiled to >= N trades over `--days` UTC days, (b) simulated trades.
Every variant runs in a fresh process (so peak RSS is its own); times are medians over repeats.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import gc
import math
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from crypto_platform.resources.lake import PARQUET_OPTIONS
from crypto_platform.schemas import RAW_TRADES, UTC_TS
from crypto_platform.transforms.candles import candles_1m, rollup
from crypto_platform.transforms.trades import to_bronze

REPO = Path(__file__).resolve().parent.parent
SHARED_TRADES = REPO.parent / "shared" / "data" / "trades"
REAL_FILE = SHARED_TRADES / "binance_spot_btcusdt_2024-01-01_1200-1230.parquet"
FIRST_DAY = datetime(2024, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)
DAY_MS = 86_400_000
ROLLUPS = ("5m", "1h")
PANDAS_FREQ = {"5m": "5min", "1h": "1h"}
VARIANTS = ("polars", "polars-eager", "pandas")
VARIANT_NOTES = {
    "polars": "polars, raw read as a lazy Parquet scan (payload read only for rejected rows)",
    "polars-eager": "polars, raw read fully with pl.read_parquet (payload included)",
    "pandas": "pandas (pyarrow Parquet), same steps, same checks, raw read fully",
}
PARQUET = dict(PARQUET_OPTIONS)  # exactly what LakeResource writes
# pandas/pyarrow spells the level differently; same codec, same level, statistics on by default
PANDAS_PARQUET = {"compression": "zstd", "compression_level": PARQUET_OPTIONS["compression_level"]}


# --------------------------------------------------------------------------------------- datasets


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


# ---------------------------------------------------------------------------- pandas implementation


def pandas_to_bronze(
    raw: pd.DataFrame, start: datetime, end: datetime
) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """The same validation, de-duplication and typing as `to_bronze`, in straightforward pandas."""
    start_ms = math.ceil(start.timestamp() * 1000)
    end_ms = math.ceil(end.timestamp() * 1000)
    price, amount = raw["price"].to_numpy(dtype="float64"), raw["amount"].to_numpy(dtype="float64")
    ts, side = raw["timestamp_ms"], raw["side"]
    rules = [
        ("price is null/NaN", np.isnan(price)),
        ("price is infinite", np.isinf(price)),
        ("price <= 0", price <= 0),
        ("amount is null/NaN", np.isnan(amount)),
        ("amount is infinite", np.isinf(amount)),
        ("amount <= 0", amount <= 0),
        ("timestamp is null", ts.isna().to_numpy()),
        ("timestamp outside partition window", ((ts < start_ms) | (ts >= end_ms)).to_numpy()),
        ("unknown side", (~side.isin(["buy", "sell"])).to_numpy()),
        ("trade_id is null", raw["trade_id"].isna().to_numpy()),
        ("exchange is null", raw["exchange"].isna().to_numpy()),
        ("symbol is null", raw["symbol"].isna().to_numpy()),
    ]
    bad = np.logical_or.reduce([m for _, m in rules])
    rejects = [
        raw[bad].assign(reason=np.select([m[bad] for _, m in rules], [r for r, _ in rules], default=""))
    ]
    good = raw[~bad]
    ids = pd.to_numeric(good["trade_id"], errors="coerce")
    keys = ["exchange", "symbol", "trade_id"]
    one = good["exchange"].nunique() <= 1 and good["symbol"].nunique() <= 1
    fast = (
        one
        and not ids.isna().any()
        and good["timestamp_ms"].is_monotonic_increasing
        and bool((np.diff(ids.to_numpy()) > 0).all())
    )
    dropped = 0
    if not fast:
        repeated = good.duplicated(keys, keep=False)
        if repeated.any():
            values = ["timestamp_ms", "price", "amount", "side"]
            versions = good[repeated].drop_duplicates(keys + values)
            conflict_keys = versions[versions.duplicated(keys, keep=False)][keys].drop_duplicates()
            marked = good.merge(conflict_keys.assign(_conflict=True), on=keys, how="left")
            conflicting = marked["_conflict"].fillna(False).astype(bool).to_numpy()
            rejects.append(good[conflicting].assign(reason="duplicate trade_id with conflicting values"))
            good = good[~conflicting]
            before = len(good)
            good = good.drop_duplicates(keys, keep="first")
            dropped = before - len(good)
        ids = pd.to_numeric(good["trade_id"], errors="coerce")
        good = good.assign(_id=ids).sort_values(["timestamp_ms", "_id"], kind="stable").drop(columns="_id")
    bronze = pd.DataFrame(
        {
            "exchange": good["exchange"],
            "symbol": good["symbol"],
            "trade_id": good["trade_id"],
            "ts": pd.to_datetime(good["timestamp_ms"], unit="ms", utc=True).astype("datetime64[us, UTC]"),
            "price": good["price"],
            "amount": good["amount"],
            "cost": good["cost"].fillna(good["price"] * good["amount"]),
            "side": pd.Categorical(good["side"], categories=["buy", "sell"]),
        }
    ).reset_index(drop=True)
    return bronze, pd.concat(rejects).reset_index(drop=True), dropped


def pandas_candles_1m(
    bronze: pd.DataFrame, start: datetime, end: datetime, prev_close: float | None, exchange: str, symbol: str
) -> pd.DataFrame:
    """1-minute candles on the full minute grid of [start, end), empty minutes carrying the close."""
    lo, hi = pd.Timestamp(start), pd.Timestamp(end)
    b = bronze[(bronze["ts"] >= lo) & (bronze["ts"] < hi)]
    amount = b["amount"]
    frame = pd.DataFrame(
        {
            "minute": b["ts"].dt.floor("min"),
            "price": b["price"],
            "amount": amount,
            "qv": b["price"] * amount,
            "buy": amount.where(b["side"] == "buy", 0.0),
            "sell": amount.where(b["side"] == "sell", 0.0),
        }
    )
    agg = frame.groupby("minute", sort=True).agg(
        open=("price", "first"),
        high=("price", "max"),
        low=("price", "min"),
        close=("price", "last"),
        volume=("amount", "sum"),
        quote_volume=("qv", "sum"),
        trade_count=("price", "size"),
        buy_volume=("buy", "sum"),
        sell_volume=("sell", "sum"),
    )
    grid = pd.date_range(
        lo.floor("min"), (hi - pd.Timedelta(microseconds=1)).floor("min"), freq="min", unit="us"
    )
    c = agg.reindex(grid)
    is_empty = c["trade_count"].isna()
    carried = c["close"].ffill()
    if prev_close is not None:
        carried = carried.fillna(prev_close)
    for col in ("open", "high", "low", "close"):
        c[col] = c[col].fillna(carried)
    for col in ("volume", "quote_volume", "buy_volume", "sell_volume"):
        c[col] = c[col].fillna(0.0)
    return pd.DataFrame(
        {
            "exchange": exchange,
            "symbol": symbol,
            "ts": grid,
            "open": c["open"].to_numpy(),
            "high": c["high"].to_numpy(),
            "low": c["low"].to_numpy(),
            "close": c["close"].to_numpy(),
            "volume": c["volume"].to_numpy(),
            "quote_volume": c["quote_volume"].to_numpy(),
            "vwap": np.where(is_empty, carried, c["quote_volume"] / c["volume"]),
            "trade_count": c["trade_count"].fillna(0).astype("int64").to_numpy(),
            "buy_volume": c["buy_volume"].to_numpy(),
            "sell_volume": c["sell_volume"].to_numpy(),
            "is_empty": is_empty.to_numpy(),
            "origin": "trades",
        }
    )


def pandas_rollup(c1: pd.DataFrame, every: str) -> pd.DataFrame:
    """Roll 1-minute candles up to `every`, UTC epoch-aligned, prices over non-empty minutes only."""
    bucket = c1["ts"].dt.floor(PANDAS_FREQ[every])
    traded = ~c1["is_empty"]
    g = c1.groupby(bucket, sort=True)
    close = g["close"].last()
    out = pd.DataFrame(
        {
            "open": c1["open"].where(traded).groupby(bucket).first(),
            "high": c1["high"].where(traded).groupby(bucket).max(),
            "low": c1["low"].where(traded).groupby(bucket).min(),
            "close": close,
            "volume": g["volume"].sum(),
            "quote_volume": g["quote_volume"].sum(),
            "trade_count": g["trade_count"].sum(),
            "buy_volume": g["buy_volume"].sum(),
            "sell_volume": g["sell_volume"].sum(),
            "is_empty": g["is_empty"].all(),
        }
    )
    for col in ("open", "high", "low"):
        out[col] = out[col].fillna(out["close"])
    out["vwap"] = np.where(out["is_empty"], out["close"], out["quote_volume"] / out["volume"])
    out = out.rename_axis("ts").reset_index()
    out.insert(0, "exchange", c1["exchange"].iloc[0])
    out.insert(1, "symbol", c1["symbol"].iloc[0])
    out["origin"] = "trades"
    return out


# --------------------------------------------------------------------------------------- one run


@dataclass
class Stages:
    """Seconds spent per pipeline stage, summed over the day windows of one run."""

    read_bronze: float = 0.0
    write_bronze: float = 0.0
    candles: float = 0.0
    write_candles: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> float:
        """Sum of the stage times of one run."""
        return self.read_bronze + self.write_bronze + self.candles + self.write_candles


def _run_polars(ds: Dataset, out: Path, *, lazy: bool) -> Stages:
    st = Stages()
    prev_close: float | None = None
    bronze_rows = rejects = 0
    for start, path, _ in ds.days:
        end = start + DAY
        t = time.perf_counter()
        raw = pl.scan_parquet(path) if lazy else pl.read_parquet(path)
        res = to_bronze(raw, start, end)
        del raw
        t1 = time.perf_counter()
        res.bronze.write_parquet(out / "bronze.parquet", **PARQUET)
        res.rejects.write_parquet(out / "rejects.parquet", **PARQUET)
        t2 = time.perf_counter()
        c1 = candles_1m(res.bronze, start, end, prev_close=prev_close, exchange=ds.exchange, symbol=ds.symbol)
        bars = {"1m": c1, **{w: rollup(c1, w) for w in ROLLUPS}}
        t3 = time.perf_counter()
        for width, df in bars.items():
            df.write_parquet(out / f"candles_{width}-{start:%Y%m%d}.parquet", **PARQUET)
        t4 = time.perf_counter()
        closes = c1.get_column("close").drop_nulls()
        prev_close = float(closes[-1]) if len(closes) else prev_close
        bronze_rows += res.bronze.height
        rejects += res.rejects.height
        st.read_bronze += t1 - t
        st.write_bronze += t2 - t1
        st.candles += t3 - t2
        st.write_candles += t4 - t3
        del res, c1, bars
    st.extra = {"bronze_rows": bronze_rows, "rejects": rejects}
    return st


def _run_pandas(ds: Dataset, out: Path) -> Stages:
    st = Stages()
    prev_close: float | None = None
    bronze_rows = rejects = 0
    for start, path, _ in ds.days:
        end = start + DAY
        t = time.perf_counter()
        raw = pd.read_parquet(path)
        bronze, rej, _ = pandas_to_bronze(raw, start, end)
        del raw
        t1 = time.perf_counter()
        bronze.to_parquet(out / "bronze.parquet", index=False, **PANDAS_PARQUET)
        rej.to_parquet(out / "rejects.parquet", index=False, **PANDAS_PARQUET)
        t2 = time.perf_counter()
        c1 = pandas_candles_1m(bronze, start, end, prev_close, ds.exchange, ds.symbol)
        bars = {"1m": c1, **{w: pandas_rollup(c1, w) for w in ROLLUPS}}
        t3 = time.perf_counter()
        for width, df in bars.items():
            df.to_parquet(out / f"candles_{width}-{start:%Y%m%d}.parquet", index=False, **PANDAS_PARQUET)
        t4 = time.perf_counter()
        closes = c1["close"].dropna()
        prev_close = float(closes.iloc[-1]) if len(closes) else prev_close
        bronze_rows += len(bronze)
        rejects += len(rej)
        st.read_bronze += t1 - t
        st.write_bronze += t2 - t1
        st.candles += t3 - t2
        st.write_candles += t4 - t3
        del bronze, rej, c1, bars
    st.extra = {"bronze_rows": bronze_rows, "rejects": rejects}
    return st


def _max_rss_mib() -> float:
    """This process's RSS high-water mark in MiB.

    Linux `VmHWM` (/proc/self/status) belongs to the current address space only, whereas
    `getrusage().ru_maxrss` keeps the high-water mark of the parent across fork + exec.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _child(variant: str, ds: Dataset, out: str, repeats: int, queue: Any) -> None:
    """Run one variant `repeats` times in this (fresh) process; report stage times and peak RSS."""
    try:
        baseline = _max_rss_mib()
        runs = []
        for _ in range(repeats):
            gc.collect()
            cpu = time.process_time()
            if variant == "pandas":
                st = _run_pandas(ds, Path(out))
            else:
                st = _run_polars(ds, Path(out), lazy=variant == "polars")
            st.extra["cpu_s"] = time.process_time() - cpu  # all threads, user + system
            runs.append(st)
        queue.put({"runs": runs, "baseline_mib": baseline, "peak_mib": _max_rss_mib()})
    except BaseException as exc:  # report, never hang the parent
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def run_variant(variant: str, ds: Dataset, out: Path, repeats: int) -> dict[str, Any]:
    """Run a variant in a fresh spawned interpreter so its peak RSS is measured on its own."""
    out.mkdir(parents=True, exist_ok=True)
    return _in_subprocess(_child, variant, ds, str(out), repeats)


def _make_child(name: str, n_trades: int, n_days: int, folder: str, queue: Any) -> None:
    """Generate a dataset's raw files (in a child, so the parent process stays small)."""
    try:
        maker = {"real": make_real, "synthetic": make_synthetic}[name]
        queue.put({"dataset": maker(n_trades, n_days, Path(folder))})
    except BaseException as exc:
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def _in_subprocess(target: Any, *args: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    if "error" in result:
        raise RuntimeError(f"{target.__name__}{args[:2]}: {result['error']}")
    return result


# ---------------------------------------------------------------------------------------- report


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return float("nan")


def check_same_candles(out: Path, ds: Dataset, variants: list[str]) -> str:
    """Compare every variant's candle files with the first variant's: prices/counts exact, sums 1e-9."""
    if len(variants) < 2:
        return "n/a (one variant)"
    ref = variants[0]
    for v in variants[1:]:
        for start, _, _ in ds.days:
            for width in ("1m", *ROLLUPS):
                name = f"candles_{width}-{start:%Y%m%d}.parquet"
                a = pl.read_parquet(out / ds.name / ref / name)
                b = pl.read_parquet(out / ds.name / v / name).select(a.columns).cast(a.schema)
                b = b.with_columns(pl.col(pl.Float64).fill_nan(None))  # pandas writes NaN for missing
                exact = ["ts", "open", "high", "low", "close", "trade_count", "is_empty"]
                if not a.select(exact).equals(b.select(exact)):
                    return f"MISMATCH: {v} vs {ref} in {name}"
                for col in ("volume", "quote_volume", "vwap", "buy_volume", "sell_volume"):
                    x, y = a.get_column(col), b.get_column(col).fill_nan(None)
                    close = ((x - y).abs() <= 1e-9 * x.abs().clip(lower_bound=1.0)).fill_null(True).all()
                    if not (close and (x.is_null() == y.is_null()).all()):
                        return f"MISMATCH ({col}): {v} vs {ref} in {name}"
    return f"identical candles (1m/5m/1h) across {', '.join(variants)}"


def main(argv: list[str] | None = None) -> int:
    """Entry point: build the datasets, run every variant, cross-check, write the results table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trades", type=int, default=10_000_000, help="trades per dataset (default 10M)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per variant (median reported)")
    ap.add_argument(
        "--days", type=int, default=2, help="UTC days the trades are spread over (one window each)"
    )
    ap.add_argument("--datasets", default="real,synthetic", help="comma list: real, synthetic")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    ap.add_argument(
        "--pandas-repeats", type=int, default=None, help="repeats for pandas (default: --repeats)"
    )
    ap.add_argument("--output", default=str(REPO / "bench" / "RESULTS.md"), help="markdown report to write")
    args = ap.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        ap.error(f"unknown variants {unknown}")

    began = datetime.now(UTC)
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    checks: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp:
        tmpdir = Path(tmp)
        for name in [d for d in args.datasets.split(",") if d]:
            t = time.perf_counter()
            ds = _in_subprocess(_make_child, name, args.trades, args.days, str(tmpdir / "raw" / name))[
                "dataset"
            ]
            per_day = ", ".join(f"{s:%Y-%m-%d}: {n:,}" for s, _, n in ds.days)
            print(
                f"[{name}] {ds.trades:,} trades ({per_day}) generated in {time.perf_counter() - t:.1f}s",
                flush=True,
            )
            for variant in variants:
                repeats = args.pandas_repeats if variant == "pandas" and args.pandas_repeats else args.repeats
                res = run_variant(variant, ds, tmpdir / "out" / name / variant, repeats)
                runs: list[Stages] = res["runs"]
                med = statistics.median(r.total for r in runs)
                row = {
                    "dataset": name,
                    "variant": variant,
                    "trades": ds.trades,
                    "days": len(ds.days),
                    "max_day": max(n for _, _, n in ds.days),
                    "repeats": repeats,
                    "median_s": med,
                    "min_s": min(r.total for r in runs),
                    "cpu_s": statistics.median(r.extra["cpu_s"] for r in runs),
                    "trades_per_s": ds.trades / med,
                    "stages": {
                        k: statistics.median(getattr(r, k) for r in runs)
                        for k in ("read_bronze", "write_bronze", "candles", "write_candles")
                    },
                    "peak_mib": res["peak_mib"],
                    "baseline_mib": res["baseline_mib"],
                    "bronze_rows": runs[-1].extra["bronze_rows"],
                    "rejects": runs[-1].extra["rejects"],
                }
                rows.append(row)
                print(
                    f"  {variant:13s} median {med:7.2f}s (cpu {row['cpu_s']:.2f}s)  "
                    f"{row['trades_per_s'] / 1e6:6.2f} M trades/s  "
                    f"peak RSS {row['peak_mib']:7.0f} MiB  stages "
                    + " ".join(f"{k}={v:.2f}" for k, v in row["stages"].items()),
                    flush=True,
                )
            checks[name] = check_same_candles(tmpdir / "out", ds, variants)
            counts = {(r["bronze_rows"], r["rejects"]) for r in rows if r["dataset"] == name}
            (bronze_rows, rejects), *others = sorted(counts)
            checks[name] += (
                f"; bronze rows {bronze_rows:,}, rejects {rejects:,} in every variant"
                if not others
                else f"; MISMATCH of bronze/reject row counts across variants: {sorted(counts)}"
            )
            print(f"  check: {checks[name]}", flush=True)
            for _, path, _ in ds.days:
                Path(path).unlink()
    elapsed = time.perf_counter() - t_start
    report = render(rows, checks, args, began, load_before, os.getloadavg(), elapsed)
    Path(args.output).write_text(report)
    print(f"wrote {args.output} ({elapsed:.0f}s)")
    return 0


def render(
    rows: list[dict[str, Any]],
    checks: dict[str, str],
    args: argparse.Namespace,
    began: datetime,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
    elapsed: float,
) -> str:
    """The markdown report: machine, versions, results table, targets."""
    import duckdb
    import pyarrow

    lines = [
        "# Throughput: trades -> bronze -> candles (1m + 5m/1h roll-ups), Parquet I/O included",
        "",
        "Generated by `uv run --frozen python -m bench.throughput"
        f" --trades {args.trades} --repeats {args.repeats} --days {args.days}`"
        f" on {began:%Y-%m-%d %H:%M} UTC ({elapsed:.0f} s in total).",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        f"| CPU | {_cpu_model()} |",
        f"| nproc | {os.cpu_count()} |",
        f"| RAM | {_mem_total_gib():.1f} GiB |",
        f"| OS | {platform.platform()} |",
        f"| load average (1/5/15 min) before / after | {' '.join(f'{x:.2f}' for x in load_before)} / "
        f"{' '.join(f'{x:.2f}' for x in load_after)} |",
        f"| Python | {platform.python_version()} |",
        f"| polars / pandas / pyarrow / numpy / duckdb | {pl.__version__} / {pd.__version__} / "
        f"{pyarrow.__version__} / {np.__version__} / {duckdb.__version__} |",
        "",
        "## Results",
        "",
        "Median wall time of one full run over all day windows (read raw Parquet, to bronze + rejects,"
        " write both, 1-minute candles + 5m/1h roll-ups, write them). Peak RSS is the high-water mark of"
        " the variant's own process (Linux `VmHWM`), which processes one UTC day window at a time, so it is"
        " the peak of a `max trades/day` day; `base` is the RSS after imports. `CPU s` is the median"
        " process CPU time (user + system, all threads): the machine is shared, so compare it with the wall"
        " time and the load average above. `vs pandas` is the throughput ratio variant / pandas.",
        "",
        "| dataset | variant | trades | days | max trades/day | repeats | median s | min s | CPU s "
        "| M trades/s | vs pandas | read+bronze s | write bronze s | candles s | write candles s "
        "| peak RSS MiB (base) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    pandas_tps = {r["dataset"]: r["trades_per_s"] for r in rows if r["variant"] == "pandas"}
    for r in rows:
        ratio = r["trades_per_s"] / pandas_tps[r["dataset"]] if r["dataset"] in pandas_tps else float("nan")
        s = r["stages"]
        lines.append(
            f"| {r['dataset']} | {r['variant']} | {r['trades']:,} | {r['days']} | {r['max_day']:,} "
            f"| {r['repeats']} | {r['median_s']:.2f} | {r['min_s']:.2f} | {r['cpu_s']:.2f} "
            f"| {r['trades_per_s'] / 1e6:.2f} "
            f"| {ratio:.1f}x | {s['read_bronze']:.2f} | {s['write_bronze']:.2f} | {s['candles']:.2f} "
            f"| {s['write_candles']:.2f} | {r['peak_mib']:,.0f} ({r['baseline_mib']:,.0f}) |"
        )
    lines += ["", "Variants:", ""]
    lines += [f"- `{v}`: {VARIANT_NOTES[v]}" for v in VARIANTS]
    lines += ["", "Cross-check of the outputs:", ""]
    lines += [f"- {name}: {msg}" for name, msg in checks.items()]
    lines += ["", "## Targets", ""]
    for r in rows:
        if r["variant"].startswith("polars"):
            ok_speed = "met" if r["trades_per_s"] >= 5e6 else "MISSED"
            ok_mem = "met" if r["peak_mib"] <= 2048 else "MISSED"
            lines.append(
                f"- {r['dataset']} / {r['variant']}: {r['trades_per_s'] / 1e6:.2f} M trades/s end to end "
                f"(target >= 5: {ok_speed}); peak RSS {r['peak_mib']:,.0f} MiB for days of up to "
                f"{r['max_day']:,} trades (target <= 2048 MiB for a 5 M-trade day: {ok_mem})"
            )
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
