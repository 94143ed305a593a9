"""An open day extended tick by tick equals its derivation from scratch: pure merges on tiny frames."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from crypto_platform import tables
from crypto_platform.lineage import DERIVATION, Lineage
from crypto_platform.resources.lake import LakeResource
from crypto_platform.schemas import RAW_TRADES
from crypto_platform.transforms.candles import candles_1m
from crypto_platform.transforms.features import segmented_features
from crypto_platform.transforms.incremental import (
    InputStamp,
    candles_restart,
    features_restart,
    features_tail,
    insert_in_order,
    leading_close_changed,
    merge_bronze,
    splice_candles,
)
from crypto_platform.transforms.trades import CONFLICTING_DUPLICATE, to_bronze
from crypto_platform_tests.fixtures import synthetic_candles

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


def test_features_of_a_tail_equal_the_features_of_the_whole_frame() -> None:
    candles = synthetic_candles(700, ("BTC/USDT", "ETH/USDT"), empty_share=0.2)
    t0 = candles["ts"].min()
    gap = pl.col("ts").is_between(t0 + timedelta(minutes=300), t0 + timedelta(minutes=309))
    candles = candles.filter(~(gap & (pl.col("symbol") == "ETH/USDT")))  # windows restart after it
    full = segmented_features(candles)
    for minutes in (1, 150, 305, 320, 699):
        since = t0 + timedelta(minutes=minutes)
        assert_frame_equal(features_tail(candles, since), full.filter(pl.col("ts") >= since))
    # a peer that stopped before the tail still counts: the market (BTC) return is a cross feature
    btc = candles.filter(pl.col("symbol") == "BTC/USDT")
    peer = candles.filter(pl.col("symbol") == "ETH/USDT").head(100)
    both, since = pl.concat([btc, peer]), t0 + timedelta(minutes=400)
    tail = features_tail(both, since)
    assert tail["mkt_ret_1"].null_count() < tail.height  # a one-instrument frame would have none
    assert_frame_equal(tail, segmented_features(both).filter(pl.col("ts") >= since))


def test_features_restart_from_the_first_change_of_any_candle_input() -> None:
    t1, t2 = DAY + timedelta(hours=3), DAY + timedelta(hours=2)
    own = Lineage(5, id="a1", base="a0", changed_from=t1, derivation=DERIVATION)
    peer = Lineage(7, id="b1", base="b0", changed_from=t2, derivation=DERIVATION)
    stored = Lineage(0, id="f", inputs=(("own", "a0"), ("peer", "b0"), ("old", "x")), derivation=DERIVATION)

    def inputs(*stamps: InputStamp) -> list[InputStamp]:
        return [InputStamp("own", "a1", own), InputStamp("peer", "b1", peer), *stamps]

    assert features_restart(stored, inputs(InputStamp("old", "x", None))) == t2
    assert features_restart(stored, inputs(InputStamp("old", "y", None))) is True  # an import changed
    assert features_restart(stored, inputs()) is True  # another set of inputs
    unchanged = Lineage(0, id="f", inputs=(("own", "a1"), ("peer", "b1")), derivation=DERIVATION)
    assert features_restart(unchanged, inputs()) is False
    twice = Lineage(0, id="f", inputs=(("own", "a-1"), ("peer", "b1")), derivation=DERIVATION)
    assert features_restart(twice, inputs()) is True  # own candles moved on twice since
    assert features_restart(None, inputs()) is True


def test_lineage_round_trips_and_reads_the_old_footer() -> None:
    inputs = (("bronze", "z"),)
    full = Lineage(7, DAY, END, batches=3, digest="ab", id="x", base="y", changed_from=DAY, inputs=inputs)
    assert Lineage.from_json(full.to_json()) == full
    old = Lineage.from_json('{"input_version": 2, "covered": ["2024-03-04T00:00:00+00:00", null]}')
    assert old == Lineage(2, DAY, None) and not old.current


# ------------------------------------------------------------------ a day of live ticks, through Dagster

TICK_DAY = date(2024, 3, 4)
BTC, ETH = "sim.BTC-USDT", "sim.ETH-USDT"  # the synthetic instruments of the test universe: peers
DERIVED = [
    tables.BRONZE_TRADES,
    tables.TRADE_REJECTS,
    tables.CANDLES_1M,
    *(tables.CANDLES[w] for w in ("5m", "1h")),
    tables.FEATURES,
]


def _tick(lake_root: Path, instance: dg.DagsterInstance, now: datetime, day: date, *, raw: bool = True):
    """One live run over both instruments' partition of `day`: raw (optional) -> features."""
    from crypto_platform.assets import ingest, silver
    from crypto_platform.assets.gold.features import gold_features
    from crypto_platform.partitions import multi_key
    from crypto_platform.resources.sources import TradeSourcesResource
    from crypto_platform.resources.warehouse import WarehouseResource

    first, last = multi_key(day, BTC), multi_key(day, ETH)
    result = dg.materialize(
        [
            ingest.raw_trades,
            ingest.bronze_trades,
            silver.silver_candles_1m,
            silver.silver_candles_5m,
            silver.silver_candles_1h,
            gold_features,
        ],
        selection=[*([tables.RAW_TRADES.key] if raw else []), *(t.key for t in DERIVED)],
        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
        resources={
            "lake": LakeResource(root=str(lake_root)),
            "warehouse": WarehouseResource(path=str(lake_root.parent / "warehouse.duckdb")),
            "trade_sources": TradeSourcesResource(now=now.isoformat()),
        },
        instance=instance,
    )
    assert result.success
    return {
        ev.asset_key: {k: v.value for k, v in ev.materialization.metadata.items()}
        for ev in result.get_asset_materialization_events()
    }


def _inject(lake: LakeResource, inst_key: str, now: datetime) -> None:
    """A batch the exchange published late: a trade inside a minute already derived, and a trade
    re-sent identically (one that a previous batch committed)."""
    from crypto_platform.assets.ingest import commit_batch
    from crypto_platform.sources.base import TradeBatch

    part = _part(inst_key, TICK_DAY)
    stored = lake.read_partition(tables.BRONZE_TRADES, part)
    assert stored is not None
    resent = stored.filter(pl.col("ts") < datetime.combine(TICK_DAY, time(0, 10), UTC)).tail(1)
    inst = part.instrument
    minute = datetime.combine(TICK_DAY, time(0, 4, 30), UTC)
    ms = int(resent["ts"].dt.epoch("ms")[0])
    late_ms = int(minute.timestamp() * 1000)
    trades = pl.DataFrame(
        {
            "exchange": [inst.exchange] * 3,
            "symbol": [inst.symbol] * 3,
            "trade_id": ["late-1", resent["trade_id"][0], "bad-1"],
            "timestamp_ms": [late_ms, ms, late_ms],
            "price": [1.0005 * resent["price"][0], resent["price"][0], resent["price"][0]],
            "amount": [0.25, resent["amount"][0], 0.0],  # the third is rejected (amount <= 0)
            "cost": [None, 1.0, None],  # the re-sent row's other cost: the first raw row's is kept
            "side": ["buy", str(resent["side"][0]), "sell"],
            "payload": ["{}"] * 3,
            "source": ["test"] * 3,
            "received_at": [now] * 3,
        },
        schema=RAW_TRADES,
    )
    commit_batch(lake, part, TradeBatch(trades, minute, minute + timedelta(seconds=1)), now)


@pytest.mark.slow
def test_a_day_of_ticks_equals_the_day_derived_from_scratch(tmp_path: Path) -> None:
    ticked, scratch = tmp_path / "ticked" / "lake", tmp_path / "scratch" / "lake"
    before = TICK_DAY - timedelta(days=1)  # its candles: the features' lookback, the first minutes' close
    at = [time(0, 9, 5), time(0, 31, 40), time(6, 0, 20), time(22, 57, 30), time(23, 0, 15)]
    with dg.DagsterInstance.ephemeral() as instance:
        lake = LakeResource(root=str(ticked))
        _tick(ticked, instance, datetime.combine(TICK_DAY, time(0, 3, 10), UTC), before)
        seen = []
        for i, t in enumerate(at):
            now = datetime.combine(TICK_DAY, t, UTC)
            if i == 1:  # late, re-sent and bad trades, committed between two ticks
                _inject(lake, BTC, now)
                _inject(lake, ETH, now)
            seen.append(_tick(ticked, instance, now, TICK_DAY))

        def from_scratch(now: datetime) -> None:
            """The same raw batches, derived once from scratch in another lake."""
            shutil.rmtree(scratch.parent, ignore_errors=True)
            shutil.copytree(ticked / "raw", scratch / "raw")
            for day in (before, TICK_DAY):
                _tick(scratch, instance, now, day, raw=False)
            for inst_key in (BTC, ETH):
                _assert_same_partitions(ticked, scratch, inst_key, TICK_DAY)

        from_scratch(datetime.combine(TICK_DAY, at[-1], UTC))
        # the ticks worked incrementally (the first one derived from scratch)
        bronze = [m[tables.BRONZE_TRADES.key] for m in seen]
        assert "from scratch" in bronze[0]["per_partition"] and "incremental" in bronze[-1]["per_partition"]
        assert bronze[-1]["rows_carried"] > bronze[-1]["raw_rows_processed"] > 0
        features = seen[-1][tables.FEATURES.key]
        assert features["rows_carried"] > 0 and features["rows_recomputed"] > 0
        assert seen[-1][tables.CANDLES_1M.key]["bars_carried"] > 0
        btc = lake.read_partition(tables.BRONZE_TRADES, _part(BTC, TICK_DAY))
        assert btc is not None and btc.filter(pl.col("trade_id") == "late-1").height == 1
        assert btc["trade_id"].is_unique().all()
        # after midnight the day is fetched to its end and compacted: still equal to from scratch
        tail = datetime.combine(TICK_DAY + timedelta(days=1), time(0, 1, 5), UTC)
        last = _tick(ticked, instance, tail, TICK_DAY)
        assert "compacted" in last[tables.BRONZE_TRADES.key]["per_partition"]
        from_scratch(tail)


def _part(inst_key: str, day: date):
    from crypto_platform.partitions import multi_key, parse_key

    return parse_key(multi_key(day, inst_key))


def _assert_same_partitions(ticked: Path, scratch: Path, inst_key: str, day: date) -> None:
    part = _part(inst_key, day)
    for table in DERIVED:
        got = LakeResource(root=str(ticked)).read_partition(table, part)
        want = LakeResource(root=str(scratch)).read_partition(table, part)
        assert got is not None and want is not None, (table, part)
        assert want.height > 0, (table, part)
        if not got.equals(want):
            import sys

            diff = (
                got.with_row_index()
                .join(want.with_row_index(), on="index")
                .filter(pl.any_horizontal([pl.col(c).ne_missing(pl.col(f"{c}_right")) for c in got.columns]))
            )
            print(table, diff, file=sys.stderr)
        assert_frame_equal(got, want, check_exact=True)
