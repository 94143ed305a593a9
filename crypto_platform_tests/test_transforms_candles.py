"""bronze -> 1-minute candles and roll-ups, checked against DuckDB SQL over the same recorded trades."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from crypto_platform.schemas import CANDLES
from crypto_platform.transforms.candles import candle_violations, candles_1m, describe_violations, rollup
from crypto_platform.transforms.trades import to_bronze
from crypto_platform_tests.fixtures import (
    BTC_2024,
    WS_SPOT_BTC,
    day_window,
    raw_from_binance_parquet,
    raw_from_ccxt_json,
    raw_from_ws_csv,
)

BTC = ("binance", "BTC/USDT")
XRP = ("binance", "XRP/ETH")
EXACT = ["ts_ms", "open", "high", "low", "close", "trade_count"]
SUMS = ["volume", "quote_volume", "vwap", "buy_volume", "sell_volume"]
MS = timedelta(milliseconds=1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def as_compared(candles: pl.DataFrame) -> pl.DataFrame:
    """Candles with the bar time as epoch ms (the form the SQL expectations use)."""
    return candles.with_columns(pl.col("ts").dt.epoch("ms").alias("ts_ms")).select(*EXACT, *SUMS, "is_empty")


def assert_bars_equal(got: pl.DataFrame, expected: pl.DataFrame) -> None:
    """Prices, counts and flags exactly equal; sums equal up to float summation order."""
    got, expected = got.select(expected.columns), expected.cast(got.select(expected.columns).schema)
    exact = [c for c in expected.columns if c not in SUMS]
    assert_frame_equal(got.select(exact), expected.select(exact), check_exact=True)
    sums = [c for c in expected.columns if c in SUMS]
    assert_frame_equal(got.select(sums), expected.select(sums), rel_tol=1e-12, abs_tol=1e-12)


@pytest.fixture(scope="module")
def btc_bronze() -> pl.DataFrame:
    return to_bronze(raw_from_binance_parquet(), *day_window(2024, 1, 1)).bronze


@pytest.fixture(scope="module")
def xrp_bronze() -> pl.DataFrame:
    return to_bronze(raw_from_ccxt_json(), *day_window(2019, 10, 11, days=3)).bronze


def test_replay_file_gives_31_candles_equal_to_duckdb(btc_bronze: pl.DataFrame) -> None:
    candles = candles_1m(
        btc_bronze, utc(2024, 1, 1, 12), utc(2024, 1, 1, 12, 30) + MS, exchange=BTC[0], symbol=BTC[1]
    )
    assert dict(candles.schema) == CANDLES
    assert candles.height == 31
    expected = duckdb.sql(
        f"""
        select epoch_ms(datetime) // 60000 * 60000 as ts_ms,
               arg_min(price, (datetime, trade_id)) as open, max(price) as high, min(price) as low,
               arg_max(price, (datetime, trade_id)) as close, count(*) as trade_count,
               sum(quantity) as volume, sum(price * quantity) as quote_volume,
               sum(price * quantity) / sum(quantity) as vwap,
               coalesce(sum(quantity) filter (where is_buyer_maker = 0), 0) as buy_volume,
               coalesce(sum(quantity) filter (where is_buyer_maker = 1), 0) as sell_volume,
               false as is_empty
        from read_parquet('{BTC_2024}') group by all order by ts_ms
        """
    ).pl()
    assert_bars_equal(as_compared(candles), expected)
    assert candles["origin"].unique().to_list() == ["trades"]
    assert candles.select("exchange", "symbol").unique().rows() == [BTC]


def test_coverage_defines_the_grid_and_leading_empty_minutes_carry_prev_close(
    btc_bronze: pl.DataFrame,
) -> None:
    start = utc(2024, 1, 1, 11, 55)
    without = candles_1m(btc_bronze, start, utc(2024, 1, 1, 12, 30) + MS, exchange=BTC[0], symbol=BTC[1])
    carried = candles_1m(
        btc_bronze, start, utc(2024, 1, 1, 12, 30) + MS, prev_close=41_000.0, exchange=BTC[0], symbol=BTC[1]
    )
    assert without.height == carried.height == 36
    lead_null, lead_carried = without.head(5), carried.head(5)
    assert lead_null["is_empty"].all() and lead_carried["is_empty"].all()
    for col in ("open", "high", "low", "close", "vwap"):
        assert lead_null[col].null_count() == 5
        assert lead_carried[col].to_list() == [41_000.0] * 5
    for col in ("volume", "quote_volume", "buy_volume", "sell_volume"):
        assert lead_carried[col].to_list() == [0.0] * 5
    assert lead_carried["trade_count"].to_list() == [0] * 5
    assert_frame_equal(without.tail(31), carried.tail(31))

    # an empty or inverted coverage has no minute; a coverage ending on a minute excludes that minute
    assert candles_1m(btc_bronze, start, start, exchange=BTC[0], symbol=BTC[1]).height == 0
    assert candles_1m(btc_bronze, start, start - MS, exchange=BTC[0], symbol=BTC[1]).height == 0
    assert dict(candles_1m(btc_bronze, start, start, exchange=BTC[0], symbol=BTC[1]).schema) == CANDLES
    to_1230 = candles_1m(
        btc_bronze, utc(2024, 1, 1, 12), utc(2024, 1, 1, 12, 30), exchange=BTC[0], symbol=BTC[1]
    )
    assert to_1230.height == 30

    # trades outside the coverage are not used, even inside a covered minute
    half = candles_1m(
        btc_bronze, utc(2024, 1, 1, 12, 0, 30), utc(2024, 1, 1, 12, 1), exchange=BTC[0], symbol=BTC[1]
    )
    expected = duckdb.sql(
        f"""
        select count(*), arg_min(price, (datetime, trade_id)), sum(quantity)
        from read_parquet('{BTC_2024}')
        where datetime >= '2024-01-01 12:00:30+00' and datetime < '2024-01-01 12:01:00+00'
        """
    ).fetchall()[0]
    assert half.height == 1
    assert half.select("trade_count", "open").row(0) == expected[:2]
    assert half["volume"][0] == pytest.approx(expected[2], rel=1e-12)


def test_illiquid_market_flags_empty_minutes_with_the_carried_close(xrp_bronze: pl.DataFrame) -> None:
    trades = raw_from_ccxt_json()  # noqa: F841  (queried by DuckDB below)
    first_ms, last_ms = duckdb.sql("select min(timestamp_ms), max(timestamp_ms) from trades").fetchall()[0]
    covered_from, covered_to = utc(2019, 10, 11), datetime.fromtimestamp(last_ms / 1000, UTC) + MS
    candles = candles_1m(xrp_bronze, covered_from, covered_to, exchange=XRP[0], symbol=XRP[1])

    first_minute = int(covered_from.timestamp()) // 60
    last_minute = last_ms // 60_000
    traded_minutes = duckdb.sql("select count(distinct timestamp_ms // 60000) from trades").fetchall()[0][0]
    grid_minutes = last_minute - first_minute + 1
    assert candles.height == grid_minutes
    n_empty = int(candles["is_empty"].sum())
    assert n_empty == grid_minutes - traded_minutes
    assert 0.30 < n_empty / grid_minutes < 0.32  # README: 31% of minutes have no trade

    expected = duckdb.sql(
        f"""
        with grid as (select range as minute from range({first_minute}, {last_minute + 1})),
        bars as (
            select timestamp_ms // 60000 as minute,
                   arg_min(price, (timestamp_ms, trade_id::bigint)) as open, max(price) as high,
                   min(price) as low, arg_max(price, (timestamp_ms, trade_id::bigint)) as close,
                   count(*) as trade_count, sum(amount) as volume, sum(price * amount) as quote_volume,
                   coalesce(sum(amount) filter (where side = 'buy'), 0) as buy_volume,
                   coalesce(sum(amount) filter (where side = 'sell'), 0) as sell_volume
            from trades group by minute
        ),
        joined as (
            select grid.minute, bars.*, bars.minute is null as is_empty,
                   last_value(bars.close ignore nulls) over (order by grid.minute) as carried
            from grid left join bars on grid.minute = bars.minute
        )
        select minute * 60000 as ts_ms, coalesce(open, carried) as open, coalesce(high, carried) as high,
               coalesce(low, carried) as low, coalesce(close, carried) as close,
               coalesce(trade_count, 0) as trade_count, coalesce(volume, 0) as volume,
               coalesce(quote_volume, 0) as quote_volume,
               case when is_empty then carried else quote_volume / volume end as vwap,
               coalesce(buy_volume, 0) as buy_volume, coalesce(sell_volume, 0) as sell_volume, is_empty
        from joined order by ts_ms
        """
    ).pl()
    assert_bars_equal(as_compared(candles), expected)
    assert first_ms >= int(covered_from.timestamp() * 1000)


def test_days_split_at_midnight_lose_and_duplicate_no_trade() -> None:
    raw = raw_from_ws_csv()
    day1, day2 = day_window(2024, 8, 8), day_window(2024, 8, 9)
    b1, b2 = to_bronze(raw, *day1).bronze, to_bronze(raw, *day2).bronze
    session_from = b1["ts"].min()
    session_to = b2["ts"].max() + MS
    c1 = candles_1m(b1, session_from, day1[1], exchange=BTC[0], symbol=BTC[1])
    c2 = candles_1m(b2, day2[0], session_to, prev_close=c1["close"][-1], exchange=BTC[0], symbol=BTC[1])
    split = pl.concat([c1, c2])

    whole = candles_1m(
        to_bronze(raw, day1[0], day2[1]).bronze, session_from, session_to, exchange=BTC[0], symbol=BTC[1]
    )
    assert_bars_equal(as_compared(split), as_compared(whole))
    assert_frame_equal(split.drop(SUMS), whole.drop(SUMS), check_exact=True)
    assert split["ts"].is_unique().all()
    lo, hi = int(session_from.timestamp() * 1000), int(session_to.timestamp() * 1000)
    n_trades = duckdb.sql(
        f"select count(*) from read_csv('{WS_SPOT_BTC}') where ts_ms >= {lo} and ts_ms < {hi}"
    ).fetchall()[0][0]
    assert split["trade_count"].sum() == n_trades == b1.height + b2.height
    assert split["ts"].min() == utc(2024, 8, 8, 23, 54) and split["ts"].max() == utc(2024, 8, 9, 0, 5)


def test_unordered_bronze_gives_the_same_candles(btc_bronze: pl.DataFrame) -> None:
    window = (utc(2024, 1, 1, 12), utc(2024, 1, 1, 12, 30) + MS)
    ordered = candles_1m(btc_bronze, *window, exchange=BTC[0], symbol=BTC[1])
    shuffled = candles_1m(
        btc_bronze.sample(fraction=1.0, shuffle=True, seed=3), *window, exchange=BTC[0], symbol=BTC[1]
    )
    assert_frame_equal(shuffled, ordered, check_exact=False, rel_tol=1e-12)
    assert_frame_equal(shuffled.select("open", "close"), ordered.select("open", "close"), check_exact=True)


def test_other_instruments_in_bronze_are_refused(btc_bronze: pl.DataFrame) -> None:
    with pytest.raises(ValueError, match="other instruments"):
        candles_1m(
            btc_bronze, utc(2024, 1, 1, 12), utc(2024, 1, 1, 13), exchange="binance", symbol="ETH/USDT"
        )


ROLLUP_SQL_OVER_1M = """
    select epoch_ms(time_bucket(interval '{width}', make_timestamp(epoch_us(ts)))) as ts_ms,
           coalesce(first(open order by ts) filter (where not is_empty), last(close order by ts)) as open,
           coalesce(max(high) filter (where not is_empty), last(close order by ts)) as high,
           coalesce(min(low) filter (where not is_empty), last(close order by ts)) as low,
           last(close order by ts) as close, sum(trade_count) as trade_count,
           sum(volume) as volume, sum(quote_volume) as quote_volume,
           case when bool_and(is_empty) then last(close order by ts) else sum(quote_volume) / sum(volume) end
               as vwap,
           sum(buy_volume) as buy_volume, sum(sell_volume) as sell_volume, bool_and(is_empty) as is_empty
    from one_minute group by all order by ts_ms
"""


@pytest.mark.parametrize("width", ["5m", "1h"])
def test_rollups_equal_duckdb_over_1m_candles_and_over_trades(width: str, xrp_bronze: pl.DataFrame) -> None:
    interval = {"5m": "5 minutes", "1h": "1 hour"}[width]
    for bronze, window, market in (
        (
            xrp_bronze,
            (utc(2019, 10, 11), utc(2019, 10, 13, 11, 19, 28, 845_000)),
            XRP,
        ),
        (
            to_bronze(raw_from_binance_parquet(), *day_window(2024, 1, 1)).bronze,
            (utc(2024, 1, 1, 11, 57), utc(2024, 1, 1, 12, 30) + MS),
            BTC,
        ),
    ):
        one_minute = candles_1m(bronze, *window, exchange=market[0], symbol=market[1])
        bars = rollup(one_minute, width)
        assert dict(bars.schema) == CANDLES
        assert bars["ts"].is_sorted()
        assert bars.select("exchange", "symbol").unique().rows() == [market]

        # over the 1-minute candles
        expected = duckdb.sql(ROLLUP_SQL_OVER_1M.format(width=interval)).pl()
        assert_bars_equal(as_compared(bars), expected)

        # over the trades directly: traded buckets identical, the other buckets empty
        trades = bronze.filter(pl.col("ts").is_between(*window, closed="left"))  # noqa: F841
        direct = duckdb.sql(
            f"""
            select epoch_ms(time_bucket(interval '{interval}', make_timestamp(epoch_us(ts)))) as ts_ms,
                   arg_min(price, (ts, trade_id::bigint)) as open, max(price) as high, min(price) as low,
                   arg_max(price, (ts, trade_id::bigint)) as close, count(*) as trade_count,
                   sum(amount) as volume, sum(price * amount) as quote_volume,
                   sum(price * amount) / sum(amount) as vwap,
                   coalesce(sum(amount) filter (where side = 'buy'), 0) as buy_volume,
                   coalesce(sum(amount) filter (where side = 'sell'), 0) as sell_volume, false as is_empty
            from trades group by all order by ts_ms
            """
        ).pl()
        assert_bars_equal(as_compared(bars.filter(~pl.col("is_empty"))), direct)
        width_ms = {"5m": 300_000, "1h": 3_600_000}[width]
        first = int(window[0].timestamp() * 1000) // width_ms
        last = (int(window[1].timestamp() * 1000) - 1) // width_ms
        assert bars.height == last - first + 1
        assert int(bars["is_empty"].sum()) == bars.height - direct.height


def test_partial_buckets_are_kept_and_labelled_by_open_time(btc_bronze: pl.DataFrame) -> None:
    one_minute = candles_1m(
        btc_bronze, utc(2024, 1, 1, 12, 7, 30), utc(2024, 1, 1, 12, 30) + MS, exchange=BTC[0], symbol=BTC[1]
    )
    bars = rollup(one_minute, "5m")
    assert bars["ts"].to_list() == [utc(2024, 1, 1, 12, m) for m in (5, 10, 15, 20, 25, 30)]
    assert bars["trade_count"].sum() == one_minute["trade_count"].sum()
    first = one_minute.filter(pl.col("ts") < utc(2024, 1, 1, 12, 10))
    assert bars.row(0, named=True)["open"] == first["open"][0]
    assert bars.row(0, named=True)["volume"] == pytest.approx(first["volume"].sum(), rel=1e-12)


def test_rollup_of_empty_minutes_carries_the_close_and_refuses_bad_widths(btc_bronze: pl.DataFrame) -> None:
    one_minute = candles_1m(
        btc_bronze,
        utc(2024, 1, 1, 11, 50),
        utc(2024, 1, 1, 12, 1),
        prev_close=40_000.0,
        exchange=BTC[0],
        symbol=BTC[1],
    )
    bars = rollup(one_minute, "5m")
    assert bars["is_empty"].to_list() == [True, True, False]
    for col in ("open", "high", "low", "close", "vwap"):
        assert bars[col].to_list()[:2] == [40_000.0, 40_000.0]
    assert bars["volume"].to_list()[:2] == [0.0, 0.0]
    assert rollup(one_minute.head(0), "1h").height == 0
    for bad in ("5s", "1w", "0m", "m"):
        with pytest.raises(ValueError, match="bar width"):
            rollup(one_minute, bad)


def test_candle_violations_name_each_broken_bar_and_pass_real_candles(btc_bronze: pl.DataFrame) -> None:
    good = candles_1m(
        btc_bronze, utc(2024, 1, 1, 12), utc(2024, 1, 1, 12, 31), exchange=BTC[0], symbol=BTC[1]
    )
    assert good.height == 31 and candle_violations(good).is_empty()
    # leading empty minutes without a previous close have null prices: not a violation
    unpriced = candles_1m(
        btc_bronze, utc(2024, 1, 1, 11, 50), utc(2024, 1, 1, 12, 5), exchange=BTC[0], symbol=BTC[1]
    )
    assert unpriced["close"].null_count() > 0 and candle_violations(unpriced).is_empty()

    idx = pl.int_range(pl.len())
    bad = good.with_columns(
        pl.when(idx == 1).then(pl.col("low") - 1.0).otherwise(pl.col("high")).alias("high"),  # low > high
        pl.when(idx == 2).then(pl.col("high") + 1.0).otherwise(pl.col("close")).alias("close"),
        pl.when(idx == 3).then(0.0).otherwise(pl.col("low")).alias("low"),  # open/close still >= 0
        pl.when(idx == 4).then(pl.col("low") - 1.0).otherwise(pl.col("open")).alias("open"),
    )
    bad = pl.concat([bad, bad.slice(5, 1)])  # minute 5 twice
    found = candle_violations(bad).sort("ts")
    by_minute = {row["ts"].minute: row["violations"] for row in found.select("ts", "violations").to_dicts()}
    assert by_minute == {
        1: ["low > high", "open outside [low, high]", "close outside [low, high]"],
        2: ["close outside [low, high]"],
        3: ["price <= 0"],
        4: ["open outside [low, high]"],
        5: ["duplicated minute"],
    }
    assert found.height == 6  # both rows of the doubled minute
    text = describe_violations(found)
    assert text.startswith("6 bars break the candle contract: ")
    assert "duplicated minute (2)" in text and "price <= 0 (1)" in text
    assert "'ts': '2024-01-01 12:01:00+00:00'" in text  # the first broken bar as the example
