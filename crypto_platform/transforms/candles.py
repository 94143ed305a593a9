"""bronze trades -> silver OHLCV candles: a complete 1-minute grid, and UTC-aligned roll-ups of it.

1-minute candles (`candles_1m`): one bar per minute from floor_minute(covered_from) to
floor_minute(covered_to - 1 µs), built from the trades with covered_from <= ts < covered_to (the
span the source vouches for; trades outside it are not used). OHLC follow the trades in
(ts, trade_id) order (trade ids in natural order). A minute without trades is explicit:
`is_empty`, volumes and count 0, open = high = low = close = vwap = the previous close carried
forward (`prev_close` for leading empty minutes, null when there is none).

Preconditions (`candle_violations`, `describe_violations`): the OHLC contract every consumer of the
1-minute table relies on (one bar per minute, low <= open, close <= high, positive prices), checked
in pure polars so gold can refuse a corrupted partition even when the GX suite did not run.

Roll-ups (`rollup`): bars of `every` aligned to multiples of `every` since the Unix epoch (UTC),
labelled by their open time, derived only from the 1-minute table. A bucket only partly covered by
the 1-minute table (the edges of a partial day) is kept: it aggregates the minutes that are there.
"""

from __future__ import annotations

import re
from datetime import datetime

import polars as pl

from crypto_platform.schemas import CANDLES, UTC_TS, conform, empty
from crypto_platform.timeutil import epoch_us
from crypto_platform.transforms.trades import (
    increasing_ids_in_time_order,
    natural_order,
    numeric_ids,
    trade_facts,
)

MINUTE_US = 60_000_000
_EVERY_RE = re.compile(r"^([1-9][0-9]*)(m|h|d)$")
_UNIT_US = {"m": MINUTE_US, "h": 60 * MINUTE_US, "d": 1440 * MINUTE_US}
PRICE_COLUMNS = ("open", "high", "low", "close")


def _in_trade_order(trades: pl.DataFrame) -> pl.DataFrame:
    """The trades in (ts, trade_id natural) order: checked row against row first, sorted only if needed."""
    ids = numeric_ids(trades.get_column("trade_id"))
    if ids is None:
        return trades.sort(pl.col("ts"), *natural_order())
    step = pl.col("ts").cast(pl.Int64).diff()
    ordered = trades.select(((step > 0) | ((step == 0) & (ids.diff() > 0))).all()).item()
    return trades if ordered else trades.with_columns(ids.alias("_id")).sort("ts", "_id").drop("_id")


def _minute_sum(column: str) -> pl.Expr:
    """Sum of a minute's values, added in trade order. polars' grouped `sum` splits large frames across
    threads and adds the partial sums, so a minute's rounding would depend on where the frame starts;
    this one depends on the minute's trades only: bars recomputed from a late minute on (an open day's
    tick, transforms/incremental.py) equal the whole day's bars bit for bit (~15 ms per 1 M trades)."""
    return pl.col(column).cum_sum().last()


def candles_1m(
    bronze: pl.DataFrame,
    covered_from: datetime,
    covered_to: datetime,
    *,
    prev_close: float | None = None,
    exchange: str,
    symbol: str,
) -> pl.DataFrame:
    """One instrument's bronze -> CANDLES for every minute of [covered_from, covered_to), gaps explicit."""
    from_us, to_us = epoch_us(covered_from), epoch_us(covered_to)
    if to_us <= from_us:
        return empty(CANDLES)
    ts_us = pl.col("ts").cast(pl.Int64)
    foreign = (pl.col("exchange") != exchange) | (pl.col("symbol") != symbol)
    facts = trade_facts(bronze, ts_us, foreign.any().alias("_foreign"))
    if facts["_foreign"]:
        found = bronze.filter(foreign).select("exchange", "symbol").unique().sort("exchange", "symbol").rows()
        raise ValueError(f"candles_1m({exchange} {symbol}): bronze holds other instruments' trades: {found}")

    trades = bronze.select("ts", "trade_id", "price", "amount", "side")
    if not increasing_ids_in_time_order(facts):  # O(n) checks instead of always sorting
        trades = _in_trade_order(trades)
    if facts["_first"] is not None and (facts["_first"] < from_us or facts["_last"] >= to_us):
        trades = trades.filter((ts_us >= from_us) & (ts_us < to_us))
    buy = pl.col("side") == "buy"
    amount = pl.col("amount")
    bars = (
        trades.lazy()
        .select(
            (ts_us // MINUTE_US).set_sorted().alias("_minute"),  # trades are in time order
            "price",
            "amount",
            (pl.col("price") * amount).alias("_quote"),
            pl.when(buy).then(amount).otherwise(0.0).alias("_buy"),
            pl.when(buy).then(0.0).otherwise(amount).alias("_sell"),
        )
        .group_by("_minute", maintain_order=True)
        .agg(
            pl.col("price").first().alias("open"),
            pl.col("price").max().alias("high"),
            pl.col("price").min().alias("low"),
            pl.col("price").last().alias("close"),
            _minute_sum("amount").alias("volume"),
            _minute_sum("_quote").alias("quote_volume"),
            pl.len().cast(pl.Int64).alias("trade_count"),
            _minute_sum("_buy").alias("buy_volume"),
            _minute_sum("_sell").alias("sell_volume"),
        )
    )
    grid = pl.LazyFrame(
        {
            "_minute": pl.int_range(
                from_us // MINUTE_US, (to_us - 1) // MINUTE_US + 1, dtype=pl.Int64, eager=True
            )
        }
    )
    carried = pl.col("close").forward_fill().fill_null(pl.lit(prev_close, dtype=pl.Float64))
    out = (
        grid.join(bars, on="_minute", how="left", maintain_order="left")
        .with_columns(pl.col("trade_count").is_null().alias("is_empty"), carried.alias("_carried"))
        .select(
            pl.lit(exchange, dtype=pl.String).alias("exchange"),
            pl.lit(symbol, dtype=pl.String).alias("symbol"),
            (pl.col("_minute") * MINUTE_US).cast(UTC_TS).alias("ts"),
            *[pl.col(c).fill_null(pl.col("_carried")).alias(c) for c in PRICE_COLUMNS],
            *[pl.col(c).fill_null(0.0) for c in ("volume", "quote_volume")],
            pl.when(pl.col("is_empty"))
            .then(pl.col("_carried"))
            .otherwise(pl.col("quote_volume") / pl.col("volume"))
            .alias("vwap"),
            pl.col("trade_count").fill_null(0),
            *[pl.col(c).fill_null(0.0) for c in ("buy_volume", "sell_volume")],
            pl.col("is_empty"),
            pl.lit("trades", dtype=pl.String).alias("origin"),
        )
        .collect()
    )
    return conform(out, CANDLES, name="candles_1m")


CANDLE_KEYS = ("exchange", "symbol", "ts")


def _violation_checks() -> dict[str, pl.Expr]:
    low, high = pl.col("low"), pl.col("high")
    return {
        "duplicated minute": pl.struct(*CANDLE_KEYS).is_duplicated(),
        "low > high": low > high,
        "open outside [low, high]": (pl.col("open") < low) | (pl.col("open") > high),
        "close outside [low, high]": (pl.col("close") < low) | (pl.col("close") > high),
        "price <= 0": pl.any_horizontal(pl.col(c) <= 0 for c in PRICE_COLUMNS),
    }


def candle_violations(candles: pl.DataFrame) -> pl.DataFrame:
    """The bars breaking the OHLC contract, with a `violations` list column naming what each breaks.

    Checked: duplicated (exchange, symbol, minute), low > high, open or close outside [low, high], a
    price <= 0. Null prices (leading empty minutes silver could not price) are not violations.
    """
    checks = _violation_checks()
    rest = [e.fill_null(False) for name, e in checks.items() if name != "duplicated minute"]
    clean = (pl.struct(*CANDLE_KEYS).n_unique() == pl.len()) & ~pl.any_horizontal(rest).any()
    if candles.is_empty() or candles.select(clean).item():  # the usual case, in one cheap pass
        return candles.head(0).with_columns(pl.lit([], dtype=pl.List(pl.String)).alias("violations"))
    flags = [e.fill_null(False).alias(f"_v{i}") for i, e in enumerate(checks.values())]
    flagged = candles.with_columns(flags).filter(pl.any_horizontal(f"_v{i}" for i in range(len(flags))))
    names = [pl.when(pl.col(f"_v{i}")).then(pl.lit(n)) for i, n in enumerate(checks)]
    return flagged.with_columns(pl.concat_list(names).list.drop_nulls().alias("violations")).drop(
        f"_v{i}" for i in range(len(flags))
    )


def describe_violations(violations: pl.DataFrame, max_examples: int = 1) -> str:
    """'2 bars: duplicated minute (2), low > high (1); e.g. {...}' for a `candle_violations` frame."""
    counts = violations.select(pl.col("violations").explode().value_counts(sort=True)).unnest("violations")
    what = ", ".join(f"{name} ({n})" for name, n in counts.rows())
    cols = [c for c in ("ts", *PRICE_COLUMNS, "is_empty", "origin", "violations") if c in violations.columns]
    examples = [
        {k: (str(v) if k == "ts" else v) for k, v in row.items()}
        for row in violations.sort("ts").head(max_examples).select(cols).to_dicts()
    ]
    return f"{violations.height} bars break the candle contract: {what}; e.g. {examples}"


def bar_width_us(every: str) -> int:
    """'5m' / '1h' / '1d' (a whole number of minutes, hours or days) -> bar width in microseconds."""
    m = _EVERY_RE.match(every)
    if not m:
        raise ValueError(f"bar width {every!r} is not like '5m', '1h' or '1d'")
    return int(m.group(1)) * _UNIT_US[m.group(2)]


def rollup(candles_1m: pl.DataFrame, every: str) -> pl.DataFrame:
    """1-minute CANDLES -> CANDLES of width `every` ('5m', '1h'), UTC epoch-aligned, open-time labelled."""
    width = bar_width_us(every)
    if width % MINUTE_US:
        raise ValueError(f"bar width {every!r} is not a whole number of minutes")
    bars = conform(candles_1m, CANDLES, name="candles_1m")
    if bars.is_empty():
        return empty(CANDLES)
    traded = ~pl.col("is_empty")
    keys = ["exchange", "symbol", "_bucket"]
    out = (
        bars.lazy()
        .sort("exchange", "symbol", "ts")
        .group_by(
            "exchange",
            "symbol",
            (pl.col("ts").cast(pl.Int64) // width * width).alias("_bucket"),
            maintain_order=True,
        )
        .agg(
            pl.col("open").filter(traded).first(),
            pl.col("high").filter(traded).max(),
            pl.col("low").filter(traded).min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
            pl.col("quote_volume").sum(),
            pl.col("trade_count").sum(),
            pl.col("buy_volume").sum(),
            pl.col("sell_volume").sum(),
            pl.col("is_empty").all(),
            pl.col("origin").unique().sort().str.join("+"),
        )
        .select(
            *keys[:2],
            pl.col("_bucket").cast(UTC_TS).alias("ts"),
            *[pl.col(c).fill_null(pl.col("close")) for c in ("open", "high", "low")],
            "close",
            "volume",
            "quote_volume",
            pl.when(pl.col("is_empty"))
            .then(pl.col("close"))
            .otherwise(pl.col("quote_volume") / pl.col("volume"))
            .alias("vwap"),
            "trade_count",
            "buy_volume",
            "sell_volume",
            "is_empty",
            "origin",
        )
        .collect()
    )
    return conform(out, CANDLES, name=f"candles_{every}")
