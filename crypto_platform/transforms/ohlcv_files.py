"""OHLCV history files as raw frames (columns as the file names them): which format a file is, and reading it.

Formats:

* `csv`: a header row naming the columns (`ohlcv_import` maps the usual aliases);
* `kraken`: Kraken's OHLCVT export, no header: unix seconds, open, high, low, close, volume, trades;
* `binance`: data.binance.vision kline dumps, no header, 12 columns: open_time, open, high, low, close,
  volume (base), close_time, quote_volume, count (trades), taker_buy_base, taker_buy_quote, ignore.
  Binance's spot dumps switched open_time from milliseconds to **microseconds** on 2025-01-01, so the
  unit is read per row from its magnitude (>= 1e14: µs, else ms) and checked against close_time,
  which must lie inside the bar's minute (open_time + 59,999 ms or + 59,999,999 µs on all but rare
  exchange quirks): a misread unit is an error naming the file and row, not a bar in the year 57,000;
* `parquet`, `feather` (Arrow IPC, e.g. freqtrade's `user_data/data/<exchange>/*.feather`).

`sniff_format` tells them apart by suffix, then by the first line: a numeric first field means no
header, and the number of fields says which export it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import polars as pl

ImportFormat = Literal["auto", "csv", "kraken", "binance", "parquet", "feather"]

KRAKEN_COLUMNS = ["ts", "open", "high", "low", "close", "volume", "trade_count"]
BINANCE_KLINE_COLUMNS = [
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "count",
    "taker_buy_base",
    "taker_buy_quote",
    "ignore",
]
_US_THRESHOLD = 10**14  # epoch ms stays below this until the year 5138; epoch µs is above it since 1973
_FEATHER_SUFFIXES = {".feather", ".arrow", ".ipc"}


def sniff_format(path: Path) -> str:
    """Parquet / feather by suffix; a CSV whose first field is a number has no header: 12 fields is a
    Binance kline dump, anything else is read as Kraken OHLCVT (which checks its 7 columns)."""
    suffix = path.suffix.lower()
    if suffix in {".parquet", ".pq"}:
        return "parquet"
    if suffix in _FEATHER_SUFFIXES:
        return "feather"
    if suffix not in {".csv", ".txt"}:
        raise ValueError(f"{path}: cannot tell the OHLCV format from suffix {suffix!r}; pass fmt=")
    with path.open() as fh:
        first = fh.readline().strip()
    if not first:
        raise ValueError(f"{path}: empty file")
    fields = first.split(",")
    try:
        float(fields[0].strip())
    except ValueError:
        return "csv"
    return "binance" if len(fields) == len(BINANCE_KLINE_COLUMNS) else "kraken"


def read_raw_ohlcv(path: Path, kind: str) -> pl.DataFrame:
    """The file as a frame with a `ts` (or aliased) time column; `kind` is a format other than 'auto'."""
    readers = {
        "csv": _read_csv,
        "kraken": _read_kraken,
        "binance": read_binance_klines,
        "parquet": _read_parquet,
        "feather": _read_feather,
    }
    if kind not in readers:
        raise ValueError(f"{path}: unknown OHLCV format {kind!r} (expected auto, {', '.join(readers)})")
    return readers[kind](path)


def read_binance_klines(path: Path) -> pl.DataFrame:
    """A data.binance.vision kline dump (no header, 12 columns; a header row is tolerated) -> raw frame
    with ts (UTC bar open), o/h/l/c, volume, quote_volume, trade_count and buy_volume (taker buy base)."""
    try:
        with path.open() as fh:
            header = fh.readline().split(",")[0].strip().lower() == "open_time"
        df = pl.read_csv(path, has_header=header, infer_schema_length=10_000)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise ValueError(f"{path}: not a readable Binance kline CSV ({exc})") from exc
    if df.width != len(BINANCE_KLINE_COLUMNS):
        raise ValueError(
            f"{path}: Binance klines need {len(BINANCE_KLINE_COLUMNS)} columns "
            f"({', '.join(BINANCE_KLINE_COLUMNS)}), found {df.width}"
        )
    df.columns = BINANCE_KLINE_COLUMNS
    for c in ("open_time", "close_time"):
        if not df.schema[c].is_integer():
            raise ValueError(f"{path}: {c} must be integer epoch ms or µs, got {df.schema[c]}")
    opened, closed = epoch_ms_or_us(pl.col("open_time")), epoch_ms_or_us(pl.col("close_time"))
    bad = df.with_row_index("row").filter(
        (closed <= opened) | (closed >= opened + pl.duration(minutes=1)) | closed.is_null()
    )
    if bad.height:
        first = bad.row(0, named=True)
        raise ValueError(
            f"{path}: {bad.height} klines whose close_time is not inside their 1-minute bar (ms and µs "
            f"read by magnitude), e.g. row {first['row']}: open_time {first['open_time']}, "
            f"close_time {first['close_time']}"
        )
    return df.select(
        opened.alias("ts"),
        "open",
        "high",
        "low",
        "close",
        "volume",
        "quote_volume",
        pl.col("count").alias("trade_count"),
        pl.col("taker_buy_base").alias("buy_volume"),
    )


def epoch_ms_or_us(t: pl.Expr) -> pl.Expr:
    """Integer epoch milliseconds or microseconds, told apart per value by magnitude -> UTC µs datetime."""
    us = pl.when(t >= _US_THRESHOLD).then(t).otherwise(t * 1000)
    return pl.from_epoch(us, time_unit="us").dt.replace_time_zone("UTC")


def _read_csv(path: Path) -> pl.DataFrame:
    try:
        return pl.read_csv(path, infer_schema_length=10_000)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise ValueError(f"{path}: not a readable CSV with a header ({exc})") from exc


def _read_kraken(path: Path) -> pl.DataFrame:
    try:
        df = pl.read_csv(path, has_header=False, infer_schema_length=10_000)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise ValueError(f"{path}: not a readable Kraken OHLCVT CSV ({exc})") from exc
    if df.width != len(KRAKEN_COLUMNS):
        raise ValueError(
            f"{path}: Kraken OHLCVT needs {len(KRAKEN_COLUMNS)} columns "
            f"(unix seconds, open, high, low, close, volume, trades), found {df.width}"
            + (" (12 columns is a Binance kline dump: format binance)" if df.width == 12 else "")
        )
    df.columns = KRAKEN_COLUMNS
    if not df.schema["ts"].is_integer():
        raise ValueError(f"{path}: first column must be unix seconds (integers), got {df.schema['ts']}")
    return df.with_columns(pl.from_epoch("ts", time_unit="s"))


def _read_parquet(path: Path) -> pl.DataFrame:
    try:
        return pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise ValueError(f"{path}: not a readable Parquet file ({exc})") from exc


def _read_feather(path: Path) -> pl.DataFrame:
    try:
        return pl.read_ipc(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise ValueError(f"{path}: not a readable Feather (Arrow IPC) file ({exc})") from exc
