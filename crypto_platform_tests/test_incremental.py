"""An open day extended tick by tick equals its derivation from scratch: pure merges on tiny frames."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
from polars.testing import assert_frame_equal

from crypto_platform.lineage import DERIVATION, Lineage
from crypto_platform.schemas import RAW_TRADES
from crypto_platform.transforms.candles import candles_1m
from crypto_platform.transforms.incremental import (
    candles_restart,
    insert_in_order,
    leading_close_changed,
    merge_bronze,
    splice_candles,
)
from crypto_platform.transforms.trades import CONFLICTING_DUPLICATE, to_bronze

DAY = datetime(2024, 3, 4, tzinfo=UTC)
END = DAY + timedelta(days=1)
EX, SYM = "sim", "BTC/USDT"


def raw(rows: list[tuple]) -> pl.DataFrame:
    """Raw trades from (trade_id, seconds after midnight, price, amount, side[, cost]) tuples."""
    out = []
    for r in rows:
        tid, sec, price, amount, side = r[:5]
        out.append(
            {
                "exchange": EX,
                "symbol": SYM,
                "trade_id": tid,
                "timestamp_ms": int((DAY.timestamp() + sec) * 1000),
                "price": price,
                "amount": amount,
                "cost": r[5] if len(r) > 5 else None,
                "side": side,
                "payload": f'{{"id": "{tid}"}}',
                "source": "test",
                "received_at": DAY,
            }
        )
    return pl.DataFrame(out, schema=RAW_TRADES)


# three ticks: each batch re-reads the end of the previous one (the overlap) and brings a late trade
BATCH_1 = [("100", 5, 10.0, 1.0, "buy"), ("101", 30, 11.0, 2.0, "sell"), ("102", 70, 12.0, 1.0, "buy"),
           ("bad", 75, -1.0, 1.0, "buy")]  # fmt: skip
BATCH_2 = [("102", 70, 12.0, 1.0, "buy", 99.0),  # re-sent (other cost: the first raw row wins)
           ("99", 31, 9.0, 1.0, "sell"),  # late, inside the first (already derived) minute
           ("103", 200, 13.0, 1.0, "buy"), ("104", 200, 13.5, 1.0, "sell"),
           ("105", 260, 14.0, 0.0, "buy")]  # fmt: skip
BATCH_3 = [("104", 200, 13.5, 1.0, "sell"), ("106", 400, 15.0, 1.0, "buy"), ("107", 401, 15.0, 1.0, "oops")]


def test_bronze_merged_batch_by_batch_equals_bronze_of_all_batches() -> None:
    batches = [raw(BATCH_1), raw(BATCH_2), raw(BATCH_3)]
    first = to_bronze(batches[0], DAY, END)
    bronze, rejects = first.bronze, first.rejects
    repeats = []
    for batch in batches[1:]:
        merged = merge_bronze(bronze, rejects, to_bronze(batch, DAY, END), exchange=EX, symbol=SYM)
        assert merged is not None
        bronze, rejects = merged.bronze, merged.rejects
        repeats.append((merged.added, merged.repeats_dropped, merged.changed_from))
    full = to_bronze(pl.concat(batches), DAY, END)
    assert_frame_equal(bronze, full.bronze)
    assert_frame_equal(rejects, full.rejects)
    assert bronze["trade_id"].to_list() == ["100", "101", "99", "102", "103", "104", "106"]
    assert bronze.filter(pl.col("trade_id") == "102")["cost"].item() == 12.0  # the first raw row's
    # tick 2 added 99 (late, 00:00:31), 103, 104 and dropped the re-sent 102; tick 3 added 106
    assert repeats == [(3, 1, DAY + timedelta(seconds=31)), (1, 1, DAY + timedelta(seconds=400))]
    assert full.duplicates_dropped == 2


def test_a_resent_trade_with_other_values_or_a_known_conflict_needs_a_derivation_from_scratch() -> None:
    first = to_bronze(raw(BATCH_1), DAY, END)
    changed = to_bronze(raw([("101", 30, 11.5, 2.0, "sell")]), DAY, END)  # same id, other price
    assert merge_bronze(first.bronze, first.rejects, changed, exchange=EX, symbol=SYM) is None
    conflicting = to_bronze(raw([("101", 30, 11.0, 2.0, "sell"), ("101", 31, 11.0, 2.0, "sell")]), DAY, END)
    assert conflicting.rejects["reason"].to_list() == [CONFLICTING_DUPLICATE] * 2
    assert merge_bronze(first.bronze, first.rejects, conflicting, exchange=EX, symbol=SYM) is None
    # a stored conflict: a later repeat of that id joins the conflict, so bronze cannot just append it
    stored = to_bronze(
        raw([*BATCH_1, ("108", 500, 1.0, 1.0, "buy"), ("108", 501, 1.0, 1.0, "buy")]), DAY, END
    )
    again = to_bronze(raw([("108", 500, 1.0, 1.0, "buy")]), DAY, END)
    assert merge_bronze(stored.bronze, stored.rejects, again, exchange=EX, symbol=SYM) is None
    other = to_bronze(raw(BATCH_3).with_columns(pl.lit("ETH/USDT").alias("symbol")), DAY, END)
    assert merge_bronze(first.bronze, first.rejects, other, exchange=EX, symbol=SYM) is None


def test_insert_in_order_resorts_only_the_tail_and_keeps_the_natural_id_order() -> None:
    stored = to_bronze(raw([("9", 1, 1.0, 1.0, "buy"), ("10", 60, 1.0, 1.0, "buy")]), DAY, END).bronze
    late = to_bronze(raw([("11", 1, 1.0, 1.0, "buy"), ("8", 60, 1.0, 1.0, "buy")]), DAY, END).bronze
    assert insert_in_order(stored, late)["trade_id"].to_list() == ["9", "11", "8", "10"]
    assert insert_in_order(stored, late.head(0)) is stored


def test_candles_recomputed_from_the_first_touched_minute_equal_candles_from_scratch() -> None:
    b1 = to_bronze(raw(BATCH_1), DAY, END).bronze
    stored = candles_1m(b1, DAY, DAY + timedelta(minutes=3), prev_close=8.0, exchange=EX, symbol=SYM)
    b2 = to_bronze(pl.concat([raw(BATCH_1), raw(BATCH_2)]), DAY, END).bronze
    to = DAY + timedelta(minutes=6, seconds=30)  # a coverage end inside a minute
    full = candles_1m(b2, DAY, to, prev_close=8.0, exchange=EX, symbol=SYM)
    stored_2 = candles_1m(b2, DAY, DAY + timedelta(minutes=3), prev_close=8.0, exchange=EX, symbol=SYM)
    # tick 2 brought a late trade in minute 0: all is recomputed; a tick on top of b2: from minute 3 on
    for before, restart, kept in (
        (stored, DAY + timedelta(seconds=31), 0),
        (stored_2, DAY + timedelta(minutes=3), 3),
    ):
        spliced, n = splice_candles(before, b2, DAY, to, restart, prev_close=8.0, exchange=EX, symbol=SYM)
        assert n == kept
        assert_frame_equal(spliced, full)
    # a minute after the stored ones, behind empty minutes: their carried close comes from the kept bars
    b3 = b1.filter(pl.col("trade_id") == "100")
    stored = candles_1m(b3, DAY, DAY + timedelta(minutes=2), prev_close=None, exchange=EX, symbol=SYM)
    full = candles_1m(b3, DAY, to, prev_close=None, exchange=EX, symbol=SYM)
    spliced, n = splice_candles(stored, b3, DAY, to, DAY + timedelta(minutes=2), prev_close=None, exchange=EX,
                                symbol=SYM)  # fmt: skip
    assert n == 2 and full["close"].to_list()[2:] == [10.0] * 5
    assert_frame_equal(spliced, full)


def test_candles_restart_only_on_top_of_the_bronze_they_were_built_from() -> None:
    t = DAY + timedelta(minutes=10, seconds=20)
    late = DAY + timedelta(minutes=3, seconds=5)

    def bronze(
        version: int, ident: str, base: str | None, changed: datetime | None, to: datetime = t
    ) -> Lineage:
        return Lineage(version, DAY, to, id=ident, base=base, changed_from=changed, derivation=DERIVATION)

    candles = Lineage(4, DAY, t, id="c4", inputs=(("bronze", "b4"),), derivation=DERIVATION)
    bronze_5 = bronze(5, "b5", "b4", late, t + timedelta(minutes=1))
    assert candles_restart(candles, bronze_5, DAY, t + timedelta(minutes=1)) == DAY + timedelta(minutes=3)
    assert candles_restart(candles, bronze(5, "b5", "b4", t), DAY, t) == DAY + timedelta(minutes=10)
    assert candles_restart(candles, bronze(4, "b4", "b3", late), DAY, t) == DAY + timedelta(minutes=10)
    assert candles_restart(candles, bronze(6, "b6", "b5", t), DAY, t) is None  # a tick it did not see
    assert candles_restart(candles, bronze(5, "b5", None, None), DAY, t) is None  # compacted / re-fetched
    old_code = Lineage(4, DAY, t, id="c4", inputs=(("bronze", "b4"),))
    assert candles_restart(old_code, bronze_5, DAY, t) is None
    assert candles_restart(candles, bronze_5, DAY + timedelta(minutes=1), t) is None  # another start
    assert candles_restart(None, bronze_5, DAY, t) is None


def test_leading_empty_minutes_follow_a_changed_previous_close() -> None:
    b = to_bronze(raw([("1", 130, 10.0, 1.0, "buy")]), DAY, END).bronze
    stored = candles_1m(b, DAY, DAY + timedelta(minutes=3), prev_close=8.0, exchange=EX, symbol=SYM)
    assert not leading_close_changed(stored, 8.0)
    assert leading_close_changed(stored, 8.5)
    assert leading_close_changed(stored, None)
    traded = candles_1m(b, DAY + timedelta(minutes=2), DAY + timedelta(minutes=3), exchange=EX, symbol=SYM)
    assert not leading_close_changed(traded, 9.0)


def test_lineage_round_trips_and_reads_the_old_footer() -> None:
    inputs = (("bronze", "z"),)
    full = Lineage(7, DAY, END, batches=3, digest="ab", id="x", base="y", changed_from=DAY, inputs=inputs)
    assert Lineage.from_json(full.to_json()) == full
    old = Lineage.from_json('{"input_version": 2, "covered": ["2024-03-04T00:00:00+00:00", null]}')
    assert old == Lineage(2, DAY, None) and not old.current
