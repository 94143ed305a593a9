"""raw -> bronze on real recorded trades and crafted bad rows; expectations computed independently."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest

from crypto_platform.schemas import BRONZE_TRADES, RAW_TRADES, TRADE_REJECTS
from crypto_platform.transforms.trades import BronzeResult, numeric_ids, to_bronze
from crypto_platform_tests.fixtures import (
    BTC_2024,
    RECEIVED,
    WS_SPOT_BTC,
    day_window,
    raw_from_binance_parquet,
    raw_from_ccxt_json,
    raw_from_ws_csv,
)


def crafted(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """RAW_TRADES rows from dicts; unspecified fields take valid defaults (a valid BTC/USDT buy at 12:00)."""
    base = {
        "exchange": "binance",
        "symbol": "BTC/USDT",
        "timestamp_ms": 1_704_110_400_000,  # 2024-01-01 12:00:00
        "price": 42_000.0,
        "amount": 0.5,
        "cost": None,
        "side": "buy",
        "payload": "{}",
        "source": "test",
        "received_at": RECEIVED,
    }
    return pl.DataFrame([{**base, **r} for r in rows], schema=RAW_TRADES)


def assert_accounted(raw: pl.DataFrame, result: BronzeResult) -> None:
    """Every raw row is in bronze, in the rejects, or counted as a dropped identical repeat."""
    assert raw.height == result.bronze.height + result.rejects.height + result.duplicates_dropped
    assert dict(result.bronze.schema) == BRONZE_TRADES
    assert dict(result.rejects.schema) == TRADE_REJECTS
    keys = result.bronze.select("exchange", "symbol", "trade_id")
    assert keys.is_unique().all(), "bronze must hold one row per (exchange, symbol, trade_id)"


def test_replay_file_types_every_trade_exactly() -> None:
    raw = raw_from_binance_parquet()
    result = to_bronze(raw, *day_window(2024, 1, 1))
    assert_accounted(raw, result)
    assert (result.bronze.height, result.rejects.height, result.duplicates_dropped) == (16_702, 0, 0)

    expected = duckdb.sql(
        f"""
        select trade_id::varchar as trade_id, epoch_us(datetime) as ts_us, price, quantity as amount,
               price * quantity as cost, case when is_buyer_maker = 1 then 'sell' else 'buy' end as side
        from read_parquet('{BTC_2024}') order by datetime, trade_id
        """
    ).pl()
    got = result.bronze.select(
        "trade_id",
        pl.col("ts").dt.epoch("us").alias("ts_us"),
        "price",
        "amount",
        "cost",
        pl.col("side").cast(pl.String),
    )
    assert got.equals(expected)


def test_every_reject_reason_comes_from_a_crafted_bad_row() -> None:
    start, end = day_window(2024, 1, 1)
    window = "timestamp outside partition window [2024-01-01T00:00:00+00:00, 2024-01-02T00:00:00+00:00)"
    nan, inf = float("nan"), float("inf")
    cases: list[tuple[dict[str, Any], str | None]] = [
        ({"trade_id": "1"}, None),
        ({"trade_id": "2", "price": None}, "price is null"),
        ({"trade_id": "3", "price": nan}, "price is NaN"),
        ({"trade_id": "4", "price": 0.0}, "price <= 0"),
        ({"trade_id": "5", "price": -1.0}, "price <= 0"),
        ({"trade_id": "6", "price": inf}, "price is infinite"),
        ({"trade_id": "7", "amount": None}, "amount is null/NaN"),
        ({"trade_id": "8", "amount": nan}, "amount is null/NaN"),
        ({"trade_id": "9", "amount": 0.0}, "amount <= 0"),
        ({"trade_id": "10", "amount": -0.1}, "amount <= 0"),
        ({"trade_id": "11", "amount": -inf}, "amount is infinite"),
        ({"trade_id": "12", "timestamp_ms": None}, "timestamp is null"),
        ({"trade_id": "13", "timestamp_ms": 1_704_067_200_000 - 1}, window),  # 1 ms before the window
        ({"trade_id": "14", "timestamp_ms": 1_704_153_600_000}, window),  # the (exclusive) window end
        ({"trade_id": "15", "timestamp_ms": 1_704_067_200_000}, None),  # the (inclusive) window start
        ({"trade_id": "16", "side": "BUY"}, "unknown side 'BUY'"),
        ({"trade_id": "17", "side": None}, "unknown side null"),
        ({"trade_id": None}, "trade_id is null"),
        ({"trade_id": "18", "exchange": None}, "exchange is null"),
        ({"trade_id": "19", "symbol": None}, "symbol is null"),
        # the first failing rule wins
        ({"trade_id": "20", "price": None, "amount": -1.0, "side": "x"}, "price is null"),
        ({"trade_id": "21", "amount": 0.0, "timestamp_ms": None}, "amount <= 0"),
        # conflicting repeats of one trade id: all of them are rejected
        ({"trade_id": "22", "price": 42_000.0}, "duplicate trade_id with conflicting values"),
        ({"trade_id": "22", "price": 42_000.5}, "duplicate trade_id with conflicting values"),
        ({"trade_id": "23", "side": "buy"}, "duplicate trade_id with conflicting values"),
        ({"trade_id": "23", "side": "sell"}, "duplicate trade_id with conflicting values"),
        ({"trade_id": "24", "timestamp_ms": 1_704_110_400_001}, "duplicate trade_id with conflicting values"),
        ({"trade_id": "24"}, "duplicate trade_id with conflicting values"),
        ({"trade_id": "24"}, "duplicate trade_id with conflicting values"),
        # an identical repeat (differing only in what is not traded: payload, receipt time) is collapsed
        ({"trade_id": "25", "payload": '{"a": 25}'}, None),
        ({"trade_id": "25", "payload": '{"a":25}', "received_at": RECEIVED + timedelta(hours=1)}, "dropped"),
        # a repeat whose copy is invalid: the copy is rejected for its own reason, the valid row kept
        ({"trade_id": "26"}, None),
        ({"trade_id": "26", "price": nan}, "price is NaN"),
        # the same id on another market is another trade
        ({"trade_id": "1", "symbol": "ETH/USDT"}, None),
    ]
    raw = crafted([row for row, _ in cases])
    result = to_bronze(raw, start, end)
    assert_accounted(raw, result)

    expected_rejects = [(row.get("trade_id", "?"), why) for row, why in cases if why not in (None, "dropped")]
    assert result.rejects.select("trade_id", "reason").rows() == expected_rejects
    assert result.rejects.drop("reason").equals(
        raw.filter(pl.Series([why not in (None, "dropped") for _, why in cases]))
    ), "rejects keep the raw row exactly as received, in raw order"
    assert result.duplicates_dropped == 1
    lazy = to_bronze(raw.lazy(), start, end)
    assert lazy.bronze.equals(result.bronze) and lazy.rejects.equals(result.rejects)
    assert lazy.duplicates_dropped == 1
    kept = sorted(result.bronze.select("symbol", "trade_id").rows())
    assert kept == sorted(
        (row.get("symbol", "BTC/USDT"), row["trade_id"]) for row, why in cases if why is None
    )
    assert result.bronze.filter(pl.col("trade_id") == "25")["ts"].to_list() == [
        datetime(2024, 1, 1, 12, tzinfo=UTC)
    ]
    assert set(result.rejects["reason"]) >= {
        "price is null",
        "price is NaN",
        "price <= 0",
        "amount is null/NaN",
        "amount <= 0",
        "timestamp is null",
        window,
        "unknown side 'BUY'",
        "trade_id is null",
        "duplicate trade_id with conflicting values",
    }


def test_duplicated_batches_give_the_same_bronze() -> None:
    window = day_window(2024, 1, 1)
    bad = crafted(
        [
            {"trade_id": "x1", "price": float("nan")},
            {"trade_id": "3345206500", "price": 1.0},  # conflicts with the real trade 3345206500
        ]
    )
    raw = pl.concat([raw_from_binance_parquet(), bad])
    once = to_bronze(raw, *window)
    twice = to_bronze(pl.concat([raw, raw]), *window)
    thrice = to_bronze(pl.concat([raw, raw.sample(fraction=1.0, shuffle=True, seed=7), raw]), *window)
    assert_accounted(raw, once)
    assert_accounted(pl.concat([raw, raw]), twice)
    assert once.bronze.height == 16_701  # the conflicting real trade is out too
    assert once.rejects["reason"].to_list() == [
        "duplicate trade_id with conflicting values",
        "price is NaN",
        "duplicate trade_id with conflicting values",
    ]
    assert once.duplicates_dropped == 0
    assert twice.bronze.equals(once.bronze)
    assert thrice.bronze.equals(once.bronze)
    assert twice.duplicates_dropped == 16_701
    assert thrice.duplicates_dropped == 2 * 16_701
    assert twice.rejects.height == 2 * once.rejects.height


def test_cost_is_kept_when_given_and_derived_when_missing() -> None:
    raw = crafted(
        [
            {"trade_id": "1", "price": 2.0, "amount": 3.0, "cost": 6.5},
            {"trade_id": "2", "price": 2.0, "amount": 3.0, "cost": None},
            {"trade_id": "3", "price": 2.0, "amount": 3.0, "cost": float("nan")},
        ]
    )
    result = to_bronze(raw, *day_window(2024, 1, 1))
    assert result.bronze["cost"].to_list() == [6.5, 6.0, 6.0]


def test_order_is_time_then_natural_trade_id_whatever_the_input_order() -> None:
    ts = 1_704_110_400_000
    rows = [
        {"trade_id": "10", "timestamp_ms": ts},
        {"trade_id": "9", "timestamp_ms": ts},
        {"trade_id": "100", "timestamp_ms": ts - 1},
        {"trade_id": "09", "timestamp_ms": ts},  # not the same id as '9'
        {"trade_id": "b", "timestamp_ms": ts + 1},
        {"trade_id": "a", "timestamp_ms": ts + 1},
    ]
    result = to_bronze(crafted(rows), *day_window(2024, 1, 1))
    assert result.bronze["trade_id"].to_list() == ["100", "9", "09", "10", "a", "b"]

    raw = raw_from_binance_parquet()
    ordered = to_bronze(raw, *day_window(2024, 1, 1)).bronze
    shuffled = to_bronze(raw.sample(fraction=1.0, shuffle=True, seed=1), *day_window(2024, 1, 1)).bronze
    assert shuffled.equals(ordered)
    assert ordered.equals(ordered.sort("ts", pl.col("trade_id").cast(pl.Int64)))


def test_trades_crossing_midnight_split_into_two_days_without_loss_or_overlap() -> None:
    raw = raw_from_ws_csv()
    counts = dict(
        duckdb.sql(
            f"select ts_ms // 86400000 as day, count(*) from read_csv('{WS_SPOT_BTC}') group by day"
        ).fetchall()
    )
    day1, day2 = day_window(2024, 8, 8), day_window(2024, 8, 9)
    first, second = to_bronze(raw, *day1), to_bronze(raw, *day2)
    for result in (first, second):
        assert_accounted(raw, result)
        assert result.duplicates_dropped == 0
        assert result.rejects["reason"].str.starts_with("timestamp outside partition window").all()
    assert first.bronze.height == counts[19943] and second.bronze.height == counts[19944]
    assert first.bronze["ts"].max() < day1[1] <= second.bronze["ts"].min()
    both = pl.concat([first.bronze, second.bronze])
    assert both["trade_id"].is_unique().all()
    # the session's trade ids are contiguous across midnight: nothing lost at the day edge
    session = both.filter(pl.col("ts") >= datetime(2024, 8, 8, 23, tzinfo=UTC))["trade_id"].cast(pl.Int64)
    assert session.max() - session.min() + 1 == session.len() == counts[19943] + counts[19944]
    assert to_bronze(raw, day1[0], day2[1]).bronze.equals(both)


def test_ccxt_unified_trades_keep_their_cost_and_are_all_valid() -> None:
    raw = raw_from_ccxt_json()
    result = to_bronze(raw, *day_window(2019, 10, 11, days=3))
    assert_accounted(raw, result)
    assert result.bronze.height == 12_477 and result.rejects.height == 0
    assert math.isclose(result.bronze["cost"].sum(), raw["cost"].sum(), rel_tol=1e-12)


def test_empty_raw_gives_empty_tables_with_the_contract_schemas() -> None:
    result = to_bronze(pl.DataFrame(schema=RAW_TRADES), *day_window(2024, 1, 1))
    assert result.bronze.height == result.rejects.height == result.duplicates_dropped == 0
    assert dict(result.bronze.schema) == BRONZE_TRADES
    assert dict(result.rejects.schema) == TRADE_REJECTS


def test_naive_window_and_missing_columns_are_refused() -> None:
    raw = crafted([{"trade_id": "1"}])
    with pytest.raises(ValueError, match="naive"):
        to_bronze(raw, datetime(2024, 1, 1), datetime(2024, 1, 2))
    with pytest.raises(ValueError, match="missing columns"):
        to_bronze(raw.drop("side"), *day_window(2024, 1, 1))


def test_a_lazy_parquet_scan_reads_payloads_of_rejected_rows_only_and_gives_the_same_result(
    tmp_path: Path,
) -> None:
    raw = pl.concat(
        [raw_from_binance_parquet(), crafted([{"trade_id": "x", "side": "?", "payload": '{"bad": 1}'}])]
    )
    raw.write_parquet(tmp_path / "raw.parquet")
    window = day_window(2024, 1, 1)
    eager = to_bronze(raw, *window)
    lazy = to_bronze(pl.scan_parquet(tmp_path / "raw.parquet"), *window)
    assert lazy.bronze.equals(eager.bronze)
    assert lazy.rejects.equals(eager.rejects)
    assert lazy.rejects.select("payload", "reason").rows() == [('{"bad": 1}', "unknown side '?'")]
    with pytest.raises(ValueError, match="missing columns"):
        to_bronze(pl.scan_parquet(tmp_path / "raw.parquet").drop("payload"), *window)


@pytest.mark.parametrize(
    ("ids", "numeric"),
    [
        (["7", "8", "10"], [7, 8, 10]),
        (["0", "1"], [0, 1]),
        (["3345206428", "3345206429"], [3345206428, 3345206429]),
        (["05", "07"], None),  # leading zeros: not the same ids as '5' and '7'
        (["5", "05"], None),
        (["+5", "6"], None),
        (["-1", "2"], None),
        (["a1", "2"], None),
        (["99999999999999999999"], None),  # beyond int64
    ],
)
def test_only_canonical_decimal_ids_are_compared_as_numbers(
    ids: list[str], numeric: list[int] | None
) -> None:
    got = numeric_ids(pl.Series(ids))
    assert (got.to_list() if got is not None else None) == numeric


def test_adjacent_page_boundary_repeats_give_the_same_result_as_scattered_ones() -> None:
    window = day_window(2024, 1, 1)
    clean = raw_from_binance_parquet()
    every_500th = clean.gather_every(500)
    conflict = clean.filter(pl.col("trade_id") == "3345206700").with_columns(pl.col("amount") * 2)
    # repeats right after their original (what overlapping pages give), in time/id order
    adjacent = (
        pl.concat([clean, every_500th, conflict]).with_row_index("_i").sort("trade_id", "_i").drop("_i")
    )
    scattered = adjacent.sample(fraction=1.0, shuffle=True, seed=11)
    for raw in (adjacent, scattered):
        result = to_bronze(raw, *window)
        assert_accounted(raw, result)
        assert result.duplicates_dropped == every_500th.height
        assert (
            result.rejects.select("trade_id", "reason").rows()
            == [("3345206700", "duplicate trade_id with conflicting values")] * 2
        )
        assert result.bronze.equals(
            to_bronze(clean, *window).bronze.filter(pl.col("trade_id") != "3345206700")
        )
