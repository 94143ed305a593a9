"""Column contracts of every lake table, defined once and shared by sources, transforms and checks.

Timestamps are UTC, microsecond precision; prices and amounts are float64 (the exchanges' own JSON
numbers; exact decimal strings stay available in the raw payload).
"""

from __future__ import annotations

import polars as pl

UTC_TS = pl.Datetime("us", "UTC")
# The identity of an instrument in every table, and of one of its minutes (bars, features, labels).
KEYS: list[str] = ["exchange", "symbol"]
INDEX_COLUMNS: list[str] = ["exchange", "symbol", "ts"]

# raw: trades exactly as received, in ccxt's unified trade shape plus the exchange's own payload.
# Values are kept as received (nulls and NaNs included) so that bronze can reject them with a reason.
RAW_TRADES: dict[str, pl.DataType] = {
    "exchange": pl.String(),
    "symbol": pl.String(),
    "trade_id": pl.String(),  # ccxt 'id' (string on every exchange)
    "timestamp_ms": pl.Int64(),  # ccxt 'timestamp': exchange time, ms since epoch
    "price": pl.Float64(),
    "amount": pl.Float64(),
    "cost": pl.Float64(),  # ccxt 'cost' (null when the exchange/source does not give it)
    "side": pl.String(),  # ccxt 'side': taker side, 'buy' | 'sell' (anything else is rejected)
    "payload": pl.String(),  # the exchange's own record (ccxt 'info'), JSON text, exactly as received
    "source": pl.String(),  # 'ccxt' | 'synthetic' | 'replay:<file name>'
    "received_at": UTC_TS,  # when the platform fetched / read it
}

# bronze: typed, validated, de-duplicated trades (one row per (exchange, symbol, trade_id)).
BRONZE_TRADES: dict[str, pl.DataType] = {
    "exchange": pl.String(),
    "symbol": pl.String(),
    "trade_id": pl.String(),
    "ts": UTC_TS,
    "price": pl.Float64(),
    "amount": pl.Float64(),
    "cost": pl.Float64(),
    "side": pl.Enum(["buy", "sell"]),
}

# bronze rejects: every raw row that did not make it into bronze, with the reason.
TRADE_REJECTS: dict[str, pl.DataType] = {
    **RAW_TRADES,
    "reason": pl.String(),
}

# silver: 1-minute OHLCV candles, every minute of the covered window present.
CANDLES: dict[str, pl.DataType] = {
    "exchange": pl.String(),
    "symbol": pl.String(),
    "ts": UTC_TS,  # minute (bar) open time
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Float64(),  # base volume
    "quote_volume": pl.Float64(),  # sum of price * amount
    "vwap": pl.Float64(),  # quote_volume / volume; the carried close on empty bars
    "trade_count": pl.Int64(),
    "buy_volume": pl.Float64(),  # taker-buy base volume
    "sell_volume": pl.Float64(),  # taker-sell base volume
    "is_empty": pl.Boolean(),  # no trade in this bar: prices carried forward, volumes 0
    "origin": pl.String(),  # 'trades' (built from bronze) or 'import:<source>' (imported OHLCV)
}

# gold labels: forward log return over `horizon` minutes from bar ts, known at label_available_at.
LABELS: dict[str, pl.DataType] = {
    "exchange": pl.String(),
    "symbol": pl.String(),
    "ts": UTC_TS,
    "horizon": pl.Int32(),
    "label": pl.Float64(),
    "label_available_at": UTC_TS,
}


def empty(schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """A zero-row frame with exactly this schema."""
    return pl.DataFrame(schema=schema)


def conform(df: pl.DataFrame, schema: dict[str, pl.DataType], *, name: str) -> pl.DataFrame:
    """Select and cast to the contract, failing with the table name and the missing columns."""
    missing = [c for c in schema if c not in df.columns]
    if missing:
        raise ValueError(f"{name}: missing columns {missing} (have {df.columns})")
    return df.select([pl.col(c).cast(t, strict=True) for c, t in schema.items()])
