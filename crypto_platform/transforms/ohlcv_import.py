"""Import OHLCV history (CSV, Kraken OHLCVT, Parquet, ccxt `fetch_ohlcv` rows) as silver CANDLES.

Imported bars are marked `origin='import:<file name>'` (or 'import:ccxt'). What the sources do not
say is left unknown rather than invented: the taker buy/sell split is null, and so is the trade
count when the file has none. Where only one of base/quote volume is known, the other is derived
with the bar's close as the price (an approximation: the bar's true average price is unknown), so
`vwap` (= quote_volume / volume) is then the close. Absent bars inside the covered span (sparse
exports list only bars with trades) become explicit empty bars: prices = the previous close,
volumes 0, `is_empty=True`. Bars coarser than 1 minute keep their own width (the interval is read
from the timestamps) and are gap-filled on their own grid.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Literal

import polars as pl

from crypto_platform.schemas import CANDLES, KEYS, UTC_TS, conform
from crypto_platform.transforms.ohlcv_files import ImportFormat, read_raw_ohlcv, sniff_format

__all__ = ["ImportFormat", "read_ohlcv", "sniff_format"]

VolumeUnit = Literal["base", "quote"]

_PRICES = ["open", "high", "low", "close"]
# Accepted column names (lower-cased) for each contract field, first match wins.
_ALIASES: dict[str, tuple[str, ...]] = {
    "ts": ("ts", "timestamp", "time", "datetime", "date", "open_time"),
    "open": ("open",),
    "high": ("high",),
    "low": ("low",),
    "close": ("close",),
    "volume": ("volume", "base_volume"),
    "quote_volume": ("quote_volume", "qav", "quote_asset_volume"),
    "trade_count": ("trade_count", "trades", "num_trades", "no_of_trades", "count"),
    "buy_volume": (
        "buy_volume",
        "taker_base_vol",
        "taker_buy_base_volume",
        "taker_buy_volume",
        "taker_buy_base",
    ),
    "vwap": ("vwap",),
}


def read_ohlcv(
    path: str | Path,
    *,
    exchange: str,
    symbol: str,
    fmt: ImportFormat = "auto",
    volume_unit: VolumeUnit = "base",
    interval: timedelta | None = None,
    fill_gaps: bool = True,
) -> pl.DataFrame:
    """Read one OHLCV history file into CANDLES (format sniffed from suffix/first line when 'auto').

    Formats (`ohlcv_files`): csv with a header, kraken OHLCVT, binance raw klines (header-less, 12
    columns: trade count and taker buy volume become silver's trade_count / buy_volume), parquet, feather.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: OHLCV file does not exist")
    kind = sniff_format(path) if fmt == "auto" else fmt
    raw = read_raw_ohlcv(path, kind)
    if kind in {"kraken", "binance"}:  # both fix the volume column: base volume
        volume_unit = "base"
    return candles_from_ohlcv(
        raw,
        exchange=exchange,
        symbol=symbol,
        origin=f"import:{path.name}",
        volume_unit=volume_unit,
        interval=interval,
        fill_gaps=fill_gaps,
        where=str(path),
    )


def read_ftx_csv(
    path: str | Path, *, exchange: str = "ftx", symbol: str = "BTC/USD:USD", fill_gaps: bool = True
) -> pl.DataFrame:
    """Read an FTX candle CSV (header; volume is QUOTE volume, so base volume = quote / close, approx)."""
    return read_ohlcv(
        path, exchange=exchange, symbol=symbol, fmt="csv", volume_unit="quote", fill_gaps=fill_gaps
    )


def read_kraken_ohlcvt(
    path: str | Path, *, symbol: str, exchange: str = "kraken", fill_gaps: bool = True
) -> pl.DataFrame:
    """Read a Kraken OHLCVT export (no header: unix s, o, h, l, c, base volume, trades); fills absent bars."""
    return read_ohlcv(path, exchange=exchange, symbol=symbol, fmt="kraken", fill_gaps=fill_gaps)


def from_ccxt_ohlcv(
    rows: Sequence[Sequence[float | int | None]],
    *,
    exchange: str,
    symbol: str,
    timeframe: str = "1m",
    fill_gaps: bool = True,
) -> pl.DataFrame:
    """ccxt `fetch_ohlcv` rows ([ms, open, high, low, close, base volume]) -> CANDLES ('import:ccxt')."""
    where = f"ccxt fetch_ohlcv {exchange} {symbol}"
    bad = [i for i, r in enumerate(rows) if len(r) < 6]
    if bad:
        raise ValueError(f"{where}: rows {bad[:5]} have fewer than 6 fields [ms, o, h, l, c, v]")
    fields = ["open", "high", "low", "close", "volume"]
    data: dict[str, list] = {"ts": [r[0] for r in rows]}
    for i, c in enumerate(fields, start=1):
        data[c] = [None if r[i] is None else float(r[i]) for r in rows]
    schema = {"ts": pl.Int64(), **{c: pl.Float64() for c in fields}}
    raw = pl.DataFrame(data, schema=schema).with_columns(pl.from_epoch("ts", time_unit="ms"))
    return candles_from_ohlcv(
        raw,
        exchange=exchange,
        symbol=symbol,
        origin="import:ccxt",
        interval=parse_timeframe(timeframe),
        fill_gaps=fill_gaps,
        where=where,
    )


def parse_timeframe(timeframe: str) -> timedelta:
    """'1m' / '5m' / '1h' / '1d' -> timedelta (ccxt timeframe notation)."""
    m = re.fullmatch(r"(\d+)([smhdw])", timeframe.strip())
    if not m:
        raise ValueError(f"timeframe {timeframe!r} is not like '1m', '5m', '1h', '1d'")
    n, unit = int(m.group(1)), m.group(2)
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]
    return timedelta(seconds=n * seconds)


def candles_from_ohlcv(
    raw: pl.DataFrame,
    *,
    exchange: str,
    symbol: str,
    origin: str,
    volume_unit: VolumeUnit = "base",
    interval: timedelta | None = None,
    fill_gaps: bool = True,
    where: str = "ohlcv",
) -> pl.DataFrame:
    """Validate a frame of OHLCV bars (ts + o/h/l/c/volume, optional extras) and conform it to CANDLES."""
    df = _rename_aliases(raw, where)
    missing = [c for c in ["ts", *_PRICES, "volume"] if c not in df.columns]
    if "volume" in missing and "quote_volume" in df.columns:
        missing.remove("volume")
    if missing:
        raise ValueError(f"{where}: missing OHLCV columns {missing} (have {raw.columns})")
    if df.height == 0:
        raise ValueError(f"{where}: no rows")
    df = df.with_columns(_to_utc(df["ts"], where).alias("ts"))
    for c in [*_PRICES, "volume", "quote_volume", "buy_volume", "vwap"]:
        if c in df.columns:
            if not df.schema[c].is_numeric():
                raise ValueError(f"{where}: column {c!r} is not numeric ({df.schema[c]})")
            df = df.with_columns(pl.col(c).cast(pl.Float64))
    if volume_unit == "quote":
        if "volume" not in df.columns:
            raise ValueError(f"{where}: volume_unit='quote' needs a 'volume' column")
        df = df.drop("quote_volume", strict=False).rename({"volume": "quote_volume"})
    df = _validate(df, where)
    df = _derive_volumes(df)
    df = df.with_columns(
        pl.lit(exchange).alias("exchange"),
        pl.lit(symbol).alias("symbol"),
        pl.lit(origin).alias("origin"),
        (pl.col("volume") == 0).alias("is_empty"),
    )
    step = interval or _infer_interval(df["ts"], where)
    _check_grid(df["ts"], step, where)
    out = conform(df, CANDLES, name=where)
    if fill_gaps:
        out = fill_missing_bars(out, step)
    return out.sort([*KEYS, "ts"])


def fill_missing_bars(candles: pl.DataFrame, interval: timedelta = timedelta(minutes=1)) -> pl.DataFrame:
    """Insert explicit empty bars (previous close carried, volumes 0, is_empty) for absent grid times."""
    if candles.height == 0:
        return candles
    parts = []
    for (exchange, symbol), g in candles.sort("ts").group_by(KEYS, maintain_order=True):
        grid = pl.DataFrame(
            {
                "ts": pl.datetime_range(
                    g["ts"].min(), g["ts"].max(), interval, eager=True, time_unit="us", time_zone="UTC"
                )
            }
        ).with_columns(pl.col("ts").cast(UTC_TS))
        empty_split = 0.0 if g["buy_volume"].is_not_null().any() else None  # unknown split stays unknown
        origin = g["origin"][0]
        full = grid.join(g, on="ts", how="left").with_columns(pl.col("exchange").is_null().alias("_new"))
        carried = pl.col("close").forward_fill()
        full = full.with_columns(
            pl.lit(exchange).alias("exchange"),
            pl.lit(symbol).alias("symbol"),
            *[pl.when(pl.col("_new")).then(carried).otherwise(pl.col(c)).alias(c) for c in _PRICES],
            *[pl.col(c).fill_null(0.0).alias(c) for c in ["volume", "quote_volume"]],
            pl.when(pl.col("_new")).then(carried).otherwise(pl.col("vwap")).alias("vwap"),
            pl.when(pl.col("_new")).then(0).otherwise(pl.col("trade_count")).alias("trade_count"),
            *[
                pl.when(pl.col("_new")).then(pl.lit(empty_split, pl.Float64)).otherwise(pl.col(c)).alias(c)
                for c in ["buy_volume", "sell_volume"]
            ],
            (pl.col("_new") | pl.col("is_empty")).alias("is_empty"),
            pl.lit(origin).alias("origin"),
        )
        parts.append(conform(full, CANDLES, name="fill_missing_bars"))
    return pl.concat(parts).sort([*KEYS, "ts"])


def split_by_day(candles: pl.DataFrame) -> dict[date, pl.DataFrame]:
    """Split candles into UTC-day frames (sorted by exchange, symbol, ts) for per-day partition writes."""
    if candles.height == 0:
        return {}
    keyed = candles.with_columns(pl.col("ts").dt.date().alias("_day")).sort([*KEYS, "ts"])
    out: dict[date, pl.DataFrame] = {}
    for (day,), g in keyed.group_by("_day", maintain_order=False):
        out[day] = g.drop("_day")
    return dict(sorted(out.items()))


# ----------------------------------------------------------------------------------------------
# readers and helpers


def _rename_aliases(df: pl.DataFrame, where: str) -> pl.DataFrame:
    lower = {c.lower().strip(): c for c in df.columns}
    select = []
    for field, names in _ALIASES.items():
        for n in names:
            if n in lower:
                select.append(pl.col(lower[n]).alias(field))
                break
    if not select:
        raise ValueError(f"{where}: no OHLCV columns recognised in {df.columns}")
    return df.select(select)


def _to_utc(ts: pl.Series, where: str) -> pl.Series:
    """Datetime (naive = UTC), integer/float epoch (s, ms or µs by magnitude) or ISO string -> UTC µs."""
    dtype = ts.dtype
    try:
        if isinstance(dtype, pl.Datetime):
            naive = dtype.time_zone is None
            out = ts.dt.replace_time_zone("UTC") if naive else ts.dt.convert_time_zone("UTC")
        elif dtype.is_numeric():
            v = ts.cast(pl.Float64)
            peak = v.abs().max() or 0.0
            unit = "s" if peak < 1e11 else "ms" if peak < 1e14 else "us"
            out = pl.from_epoch(v.round(0).cast(pl.Int64), time_unit=unit)
            out = out.dt.replace_time_zone("UTC")
        elif dtype == pl.String:
            out = ts.str.strip_chars().str.to_datetime(time_unit="us", time_zone="UTC")
        elif dtype == pl.Date:
            out = ts.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
        else:
            raise ValueError(f"unsupported timestamp type {dtype}")
    except (pl.exceptions.PolarsError, ValueError) as exc:
        raise ValueError(f"{where}: cannot parse timestamps ({exc})") from exc
    if out.null_count() > ts.null_count():
        raise ValueError(f"{where}: {out.null_count() - ts.null_count()} timestamps could not be parsed")
    return out.cast(UTC_TS)


def _validate(df: pl.DataFrame, where: str) -> pl.DataFrame:
    """Reject null/non-finite/non-positive prices, incoherent OHLC, negative volume, conflicting dupes."""
    cols = ["ts", *_PRICES]
    nulls = {c: n for c in cols if (n := df[c].null_count())}
    if nulls:
        raise ValueError(f"{where}: null values in {nulls}")
    vol_cols = [c for c in ["volume", "quote_volume"] if c in df.columns]
    problems = {
        "non-finite or non-positive prices": pl.any_horizontal(
            [~(pl.col(c) > 0) | ~pl.col(c).is_finite() for c in _PRICES]
        ),
        "high below open/close/low": pl.col("high") < pl.max_horizontal("open", "close", "low"),
        "low above open/close": pl.col("low") > pl.min_horizontal("open", "close"),
        "negative or non-finite volume": pl.any_horizontal(
            [(pl.col(c) < 0) | ~pl.col(c).is_finite() for c in vol_cols]
        ),
    }
    for what, cond in problems.items():
        bad = df.with_row_index("_row").filter(cond)
        if bad.height:
            rows = bad["_row"].head(5).to_list()
            first = bad.head(1).to_dicts()
            raise ValueError(f"{where}: {bad.height} rows with {what} (rows {rows}; first: {first})")
    df = df.unique(maintain_order=True)
    dup = df.filter(pl.col("ts").is_duplicated())
    if dup.height:
        raise ValueError(
            f"{where}: {dup.height} rows share a timestamp with different values, e.g. {dup['ts'][0]}"
        )
    return df.sort("ts")


def _derive_volumes(df: pl.DataFrame) -> pl.DataFrame:
    """Fill whichever of base/quote volume is missing (close as the price), vwap, taker split and count."""
    has_base, has_quote = "volume" in df.columns, "quote_volume" in df.columns
    if not has_base:
        df = df.with_columns((pl.col("quote_volume") / pl.col("close")).alias("volume"))
    if not has_quote:
        df = df.with_columns((pl.col("volume") * pl.col("close")).alias("quote_volume"))
    if "vwap" not in df.columns:
        df = df.with_columns(pl.lit(None, pl.Float64).alias("vwap"))
    # With one volume derived from the other through the close, the vwap is exactly the close.
    computed = pl.when(pl.col("volume") > 0).then(pl.col("quote_volume") / pl.col("volume"))
    both = has_base and has_quote
    sources = [pl.col("vwap"), computed, pl.col("close")] if both else [pl.col("vwap"), pl.col("close")]
    vwap = pl.coalesce(sources)
    if "buy_volume" in df.columns:
        sell = (pl.col("volume") - pl.col("buy_volume")).clip(lower_bound=0.0)
    else:
        df = df.with_columns(pl.lit(None, pl.Float64).alias("buy_volume"))
        sell = pl.lit(None, pl.Float64)
    if "trade_count" not in df.columns:
        df = df.with_columns(pl.lit(None, pl.Int64).alias("trade_count"))
    return df.with_columns(
        vwap.alias("vwap"), sell.alias("sell_volume"), pl.col("trade_count").cast(pl.Int64)
    )


def _infer_interval(ts: pl.Series, where: str) -> timedelta:
    """The bar width: the smallest gap between consecutive bars (1 minute for a single bar)."""
    diffs = ts.sort().diff().drop_nulls()
    if diffs.len() == 0:
        return timedelta(minutes=1)
    step = diffs.min()
    if not isinstance(step, timedelta) or step <= timedelta(0):
        raise ValueError(f"{where}: cannot infer the bar interval from timestamps")
    return step


def _check_grid(ts: pl.Series, step: timedelta, where: str) -> None:
    """Every bar must sit on the regular grid started by the first bar."""
    us = int(step.total_seconds() * 1_000_000)
    first = ts.min()
    off = ((ts - first).dt.total_microseconds() % us) != 0
    if off.any():
        bad = ts.filter(off)[0]
        raise ValueError(
            f"{where}: bar {bad} is not on the {step} grid starting at {first} "
            "(irregular timestamps; pass interval= if the inferred width is wrong)"
        )
