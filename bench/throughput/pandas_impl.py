"""The pandas variant of the throughput bench: the steps of `to_bronze`, `candles_1m` and `rollup`, in pandas.

Same rules, same de-duplication fast path for strictly increasing ids, minute `groupby`, grid
`reindex` and `ffill`; its candles are compared with the polars variants' after every run.
"""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np
import pandas as pd

PANDAS_FREQ = {"5m": "5min", "1h": "1h"}
DEDUP_KEYS = ["exchange", "symbol", "trade_id"]


def _rules(raw: pd.DataFrame, start: datetime, end: datetime) -> list[tuple[str, np.ndarray]]:
    """(reason, failing-row mask) of every validation rule of `to_bronze`."""
    start_ms = math.ceil(start.timestamp() * 1000)
    end_ms = math.ceil(end.timestamp() * 1000)
    price, amount = raw["price"].to_numpy(dtype="float64"), raw["amount"].to_numpy(dtype="float64")
    ts, side = raw["timestamp_ms"], raw["side"]
    return [
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


def _strictly_increasing(good: pd.DataFrame) -> bool:
    """The fast path: one instrument, numeric ids strictly increasing in time order (nothing to de-dup)."""
    ids = pd.to_numeric(good["trade_id"], errors="coerce")
    one = good["exchange"].nunique() <= 1 and good["symbol"].nunique() <= 1
    return bool(
        one
        and not ids.isna().any()
        and good["timestamp_ms"].is_monotonic_increasing
        and bool((np.diff(ids.to_numpy()) > 0).all())
    )


def _deduplicate(good: pd.DataFrame, rejects: list[pd.DataFrame]) -> tuple[pd.DataFrame, int]:
    """Reject conflicting repeats, drop identical ones, sort by (time, id); returns (rows, dropped)."""
    keys = DEDUP_KEYS
    dropped = 0
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
    return good, dropped


def pandas_to_bronze(
    raw: pd.DataFrame, start: datetime, end: datetime
) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """The same validation, de-duplication and typing as `to_bronze`, in straightforward pandas."""
    rules = _rules(raw, start, end)
    bad = np.logical_or.reduce([m for _, m in rules])
    rejects = [
        raw[bad].assign(reason=np.select([m[bad] for _, m in rules], [r for r, _ in rules], default=""))
    ]
    good = raw[~bad]
    dropped = 0
    if not _strictly_increasing(good):
        good, dropped = _deduplicate(good, rejects)
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


def _minute_bars(b: pd.DataFrame) -> pd.DataFrame:
    """OHLCV, trade count and taker split per traded minute of bronze rows."""
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
    return frame.groupby("minute", sort=True).agg(
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


def pandas_candles_1m(
    bronze: pd.DataFrame,
    start: datetime,
    end: datetime,
    prev_close: float | None,
    *,
    exchange: str,
    symbol: str,
) -> pd.DataFrame:
    """1-minute candles on the full minute grid of [start, end), empty minutes carrying the close."""
    lo, hi = pd.Timestamp(start), pd.Timestamp(end)
    agg = _minute_bars(bronze[(bronze["ts"] >= lo) & (bronze["ts"] < hi)])
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
    prices = {col: c[col].to_numpy() for col in ("open", "high", "low", "close", "volume", "quote_volume")}
    return pd.DataFrame(
        {
            "exchange": exchange,
            "symbol": symbol,
            "ts": grid,
            **prices,
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
