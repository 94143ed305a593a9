"""An open day's bronze as a base plus one delta per tick: equal to the day derived from scratch after
late, re-sent and conflicting trades, before and after compaction, on a folder and on S3; readers see
whole ticks only; a tick writes only its new rows, however big the day already is."""

from __future__ import annotations

import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from crypto_platform import tables
from crypto_platform.assets.ingest import commit_batch, derive_bronze
from crypto_platform.assets.open_day import COMPACTED, FROM_SCRATCH, INCREMENTAL
from crypto_platform.lineage import new_id
from crypto_platform.partitions import DayPartition
from crypto_platform.resources.lake import LINEAGE_KEY, PART_FILE, LakeResource, Lineage
from crypto_platform.schemas import RAW_TRADES
from crypto_platform.settings import load_universe
from crypto_platform.sources.base import TradeBatch
from crypto_platform.transforms.trades import CONFLICTING_DUPLICATE, to_bronze
from crypto_platform_tests.fixtures import s3_lake

PART = DayPartition(load_universe().instrument("sim.BTC-USDT"), date(2024, 3, 4))
DAY = PART.start


def raw(rows: list[tuple]) -> pl.DataFrame:
    """Raw trades of PART's instrument from (trade_id, seconds after midnight, price, amount, side)."""
    n = len(rows)
    return pl.DataFrame(
        {
            "exchange": [PART.instrument.exchange] * n,
            "symbol": [PART.instrument.symbol] * n,
            "trade_id": [r[0] for r in rows],
            "timestamp_ms": [int((DAY.timestamp() + r[1]) * 1000) for r in rows],
            "price": [float(r[2]) for r in rows],
            "amount": [float(r[3]) for r in rows],
            "cost": [None] * n,
            "side": [r[4] for r in rows],
            "payload": ["{}"] * n,
            "source": ["test"] * n,
            "received_at": [DAY] * n,
        },
        schema=RAW_TRADES,
    )


def commit(lake: LakeResource, rows: list[tuple], start_s: float, end: datetime) -> pl.DataFrame:
    """Commit one raw batch covering [DAY + start_s, end), as a live fetch does; returns it."""
    df = raw(rows)
    commit_batch(lake, PART, TradeBatch(df, DAY + timedelta(seconds=start_s), end), end)
    return df


# Ticks: late trades inside derived minutes, identical re-sends (overlap re-reads), invalid rows, a trade
# re-sent with another price (rejected: conflicting duplicate), then that conflict again.
TICKS: list[tuple[list[tuple], float, float]] = [
    ([("100", 5, 10, 1, "buy"), ("101", 30, 11, 2, "sell"), ("102", 70, 12, 1, "buy"),
      ("bad", 75, -1, 1, "buy")], 0, 120),
    ([("102", 70, 12, 1, "buy"), ("99", 31, 9, 1, "sell"), ("103", 200, 13, 1, "buy"),
      ("104", 200, 13.5, 1, "sell"), ("105", 260, 14, 0, "buy")], 60, 300),
    ([("104", 200, 13.5, 1, "sell"), ("106", 400, 15, 1, "buy"), ("98", 20, 9.5, 1, "buy")], 180, 480),
    ([("106", 400, 15, 1, "buy"), ("107", 500, 16, 1, "buy")], 360, 600),
    ([("101", 30, 11.5, 2, "sell"), ("108", 650, 16, 1, "sell")], 540, 720),  # 101 with another price
    ([("101", 30, 11.7, 2, "sell"), ("109", 700, 16, 1, "buy")], 600, 780),  # the known conflict again
    ([("109", 700, 16, 1, "buy"), ("110", 800, 17, 1, "buy"), ("97", 10, 9, 1, "sell")], 660, 900),
    ([("111", 1000, 17, 2, "sell")], 840, 1080),
]  # fmt: skip
# (mode, appended as a delta, deltas stored) after each tick and after the day's tail (compaction):
# a conflict rewrites the partition whole (and so does its repeat), then ticks append again.
EXPECTED = [
    (FROM_SCRATCH, False, 0),
    *[(INCREMENTAL, True, k) for k in (1, 2, 3)],
    (FROM_SCRATCH, False, 0),
    (FROM_SCRATCH, False, 0),
    *[(INCREMENTAL, True, k) for k in (1, 2)],
    (COMPACTED, False, 0),
]


def assert_equals_from_scratch(lake: LakeResource, raws: list[pl.DataFrame]) -> None:
    """Bronze and rejects as the lake reads them equal `to_bronze` of every raw row, exactly."""
    want = to_bronze(pl.concat(raws), PART.start, PART.end)
    assert_frame_equal(lake.read_partition(tables.BRONZE_TRADES, PART), want.bronze, check_exact=True)
    assert_frame_equal(lake.read_partition(tables.TRADE_REJECTS, PART), want.rejects, check_exact=True)
    bronze, lineage = lake.read_with_lineage(tables.BRONZE_TRADES, PART)
    assert_frame_equal(bronze, want.bronze, check_exact=True)
    assert lineage == lake.read_lineage(tables.TRADE_REJECTS, PART)
    if lake.is_local:  # the DuckDB view over base + deltas reads the same trades
        assert_frame_equal(view_rows(lake), want.bronze.sort("ts", "trade_id"), check_exact=True)


def view_rows(lake: LakeResource) -> pl.DataFrame:
    """The bronze trades as the warehouse view's table function reads them, in (ts, id) order."""
    source = lake.view_source(tables.BRONZE_TRADES)
    got = duckdb.sql(f"select * exclude (instrument, date) from {source} order by ts, trade_id").pl()
    return got.with_columns(
        pl.col("ts").dt.convert_time_zone("UTC"), pl.col("side").cast(pl.Enum(["buy", "sell"]))
    )


def day_of_ticks(lake: LakeResource) -> list[tuple[str, bool, int]]:
    """Run TICKS then the day's tail (compaction), checking every state; (mode, appended, deltas)."""
    raws, seen = [], []
    for rows, start, end in TICKS:
        raws.append(commit(lake, rows, start, DAY + timedelta(seconds=end)))
        result, _, _ = derive_bronze(lake, PART)
        seen.append((result.mode, result.append, lake.delta_count(tables.BRONZE_TRADES, PART)))
        assert_equals_from_scratch(lake, raws)
    raws.append(commit(lake, [("112", 86_000, 18, 1, "buy")], 1000, PART.end))  # the day's tail
    result, _, _ = derive_bronze(lake, PART)
    seen.append((result.mode, result.append, lake.delta_count(tables.BRONZE_TRADES, PART)))
    assert_equals_from_scratch(lake, raws)
    rejects = lake.read_partition(tables.TRADE_REJECTS, PART)
    conflicts = rejects.filter(pl.col("reason") == CONFLICTING_DUPLICATE)["trade_id"].to_list()
    assert conflicts == ["101"] * 3  # 101 and its re-sends with other prices: rejected with the reason
    assert "101" not in lake.read_partition(tables.BRONZE_TRADES, PART)["trade_id"].to_list()
    return seen


def test_a_day_of_ticks_as_deltas_equals_the_day_from_scratch_on_a_folder(tmp_path: Path) -> None:
    lake = LakeResource(root=str(tmp_path / "lake"))
    assert day_of_ticks(lake) == EXPECTED


def test_the_warehouse_view_reads_base_and_committed_deltas_only(tmp_path: Path) -> None:
    lake = LakeResource(root=str(tmp_path / "lake"))
    raws = []
    for rows, start, end in TICKS[:3]:
        raws.append(commit(lake, rows, start, DAY + timedelta(seconds=end)))
        derive_bronze(lake, PART)
    folder = lake.partition_path(tables.BRONZE_TRADES, PART)
    (folder / "part.d000099-0000abcd.parquet").write_bytes((folder / PART_FILE).read_bytes())  # uncommitted
    want = to_bronze(pl.concat(raws), PART.start, PART.end).bronze
    source = lake.view_source(tables.BRONZE_TRADES)
    assert "part.d000099" not in source and "part.d000002" in source
    assert_frame_equal(view_rows(lake), want.sort("ts", "trade_id"), check_exact=True)


@pytest.mark.slow
def test_a_day_of_ticks_as_deltas_equals_the_day_from_scratch_on_s3(s3_endpoint: str) -> None:
    lake = s3_lake(s3_endpoint)
    assert day_of_ticks(lake) == EXPECTED


def whole_ticks_only(lake: LakeResource, deltas: int = 12) -> int:
    """Append `deltas` deltas then compact, while another thread reads: every read must be the base
    plus a whole prefix of the deltas (never part of one, never the compacted file plus deltas), and
    never older than the read before."""
    key = f"{lake.part_key(tables.TRADE_REJECTS, PART)}/{PART_FILE}"
    chunk = 500
    meta = [{LINEAGE_KEY: Lineage(v, id=new_id()).to_json()} for v in (1, 2)]  # each write its own

    def rows(k: int) -> pl.DataFrame:
        return pl.DataFrame({"i": range(k * chunk, (k + 1) * chunk)})

    lake.store.write(key, rows(0), meta[0])
    done, reads, bad = threading.Event(), [0], []

    def read() -> None:
        last = 0
        while not done.is_set():
            df = lake.store.read(key)
            whole = df.height % chunk == 0 and df["i"].equals(pl.Series("i", range(df.height)))
            if not whole or df.height < last:  # part of a delta, doubled rows, or an older state again
                bad.append(df.height)
            last = df.height
            reads[0] += 1

    def reader_went_on(seen: int) -> None:
        """Wait (5 s at most) until the reader finished a read after `seen`: the writer never outruns it,
        so reads overlap writes throughout, however the threads happen to be scheduled."""
        deadline = time.monotonic() + 5
        while reads[0] <= seen and time.monotonic() < deadline:
            time.sleep(0.001)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for k in range(1, deltas + 1):
            seen = reads[0]
            lake.store.append(key, rows(k))
            reader_went_on(seen)
        lake.store.write(key, pl.DataFrame({"i": range((deltas + 1) * chunk)}), meta[1])  # the compaction
        for k in range(deltas + 1, deltas + 4):
            seen = reads[0]
            lake.store.append(key, rows(k))
            reader_went_on(seen)
    finally:
        done.set()
        reader.join()
    assert not bad, f"reads saw partial or doubled states: {bad[:5]} rows"
    final = lake.store.read(key)
    assert final["i"].to_list() == list(range((deltas + 4) * chunk))
    assert len(lake.store.current(key).deltas) == 3
    return reads[0]


def test_readers_see_whole_ticks_only_on_a_folder(tmp_path: Path) -> None:
    assert whole_ticks_only(LakeResource(root=str(tmp_path / "lake")), deltas=40) > 5


@pytest.mark.slow
def test_readers_see_whole_ticks_only_on_s3(s3_endpoint: str) -> None:
    assert whole_ticks_only(s3_lake(s3_endpoint)) > 5


def test_void_deltas_are_swept_after_compaction_not_before(tmp_path: Path) -> None:
    lake = LakeResource(root=str(tmp_path / "lake"))
    for rows, start, end in TICKS[:3]:
        commit(lake, rows, start, DAY + timedelta(seconds=end))
        derive_bronze(lake, PART)
    folder = lake.partition_path(tables.BRONZE_TRADES, PART)
    now = datetime.now(UTC).timestamp() + 3600
    assert lake.sweep(60, now).superseded == ()  # current deltas are never void
    commit(lake, [("112", 86_000, 18, 1, "buy")], 400, PART.end)
    derive_bronze(lake, PART)  # compacted: the first base's own name and the two deltas are void
    assert lake.sweep(7200, now).superseded == ()  # too young: a reader may still be on them
    swept = lake.sweep(60, now).superseded
    names = sorted(f"{Path(p).parent.parent.parent.name}/{Path(p).name[:12]}" for p in swept)
    # per table: the listed base, its two deltas and the compacted base's name its list committed
    # (the plain file is that same base now)
    olds = ["part.b", "part.b", "part.d000001", "part.d000002"]
    assert [n.split("/")[1][: len(o)] for n, o in zip(names, olds * 2, strict=True)] == olds * 2
    assert [n.split("/")[0] for n in names] == ["trade_rejects"] * 4 + ["trades"] * 4
    assert sorted(p.name for p in folder.glob("*.parquet")) == [PART_FILE]


def synthetic(first_id: int, n: int, start_s: float, span_s: float) -> list[tuple]:
    """`n` valid trades with consecutive ids spread over [start_s, start_s + span_s)."""
    step = span_s / n
    return [(str(first_id + i), start_s + i * step, 100 + i % 7, 1 + i % 3, "buy" if i % 2 else "sell")
            for i in range(n)]  # fmt: skip


def tick_after(lake: LakeResource, stored: int) -> tuple[int, int, int, int]:
    """A day holding `stored` trades up to 20:00, then one tick of 400 new trades (+100 re-sent):
    (trades written, bronze bytes written, base bytes before, base bytes after)."""
    day = synthetic(1_000_000, stored, 0, 72_000)
    commit(lake, day, 0, DAY + timedelta(hours=20))
    derive_bronze(lake, PART)
    base = Path(lake.store.current(f"{lake.part_key(tables.BRONZE_TRADES, PART)}/{PART_FILE}").uri)
    before = base.stat().st_size
    commit(
        lake,
        day[-100:] + synthetic(2_000_000, 400, 72_000, 60),
        72_000 - 120,
        DAY + timedelta(hours=20, minutes=1),
    )
    result, (info, _), _ = derive_bronze(lake, PART)
    assert result.mode == INCREMENTAL and result.append and result.duplicates_dropped == 100
    assert info.rows == stored + 400  # the partition's rows after the tick
    return result.bronze.height, info.bytes, before, base.stat().st_size


def test_a_ticks_bronze_write_is_its_new_trades_not_the_day(tmp_path: Path) -> None:
    small = tick_after(LakeResource(root=str(tmp_path / "small")), 2_000)
    big = tick_after(LakeResource(root=str(tmp_path / "big")), 200_000)
    assert small[0] == big[0] == 400  # only the new trades are written
    assert small[2] == small[3] and big[2] == big[3]  # the stored base is not rewritten
    assert big[2] > 50 * small[1]  # the big day's base is far bigger than a tick's delta...
    assert big[1] < 1.5 * small[1]  # ...and the tick writes as little on the big day as on the small one


@pytest.mark.slow
def test_void_deltas_are_swept_after_compaction_on_s3(s3_endpoint: str) -> None:
    lake = s3_lake(s3_endpoint)
    raws = []
    for rows, start, end in TICKS[:3]:
        raws.append(commit(lake, rows, start, DAY + timedelta(seconds=end)))
        derive_bronze(lake, PART)
    now = datetime.now(UTC).timestamp() + 3600
    assert lake.sweep(60, now).superseded == ()  # the base and its current deltas are never superseded
    raws.append(commit(lake, [("112", 86_000, 18, 1, "buy")], 400, PART.end))
    derive_bronze(lake, PART)  # compacted: the first base and the two deltas of each table are void
    assert lake.sweep(7200, now).superseded == ()  # too young: a reader may still be on them
    assert len(lake.sweep(60, now).superseded) == 2 * (1 + 2)
    for table in (tables.BRONZE_TRADES, tables.TRADE_REJECTS):
        folder = [e.key.rsplit("/", 1)[1] for e in lake.store.list_folder(lake.part_key(table, PART))]
        assert len(folder) == 2 and "part.current.json" in folder  # the pointer and the compacted file
    assert_equals_from_scratch(lake, raws)


def test_the_bronze_check_validates_each_appended_tick_alone_and_every_rewrite_whole(tmp_path: Path) -> None:
    from crypto_platform.checks.bronze_cells import validate_bronze_cell
    from crypto_platform.quality.contract import check_bronze

    lake = LakeResource(root=str(tmp_path / "lake"))
    raws, modes, stored = [], [], 0
    for rows, start, end in [*TICKS, ([("112", 86_000, 18, 1, "buy")], 1000, None)]:
        raws.append(commit(lake, rows, start, PART.end if end is None else DAY + timedelta(seconds=end)))
        derive_bronze(lake, PART)
        got = validate_bronze_cell(lake, PART, check_bronze, incremental=True)
        full = check_bronze(to_bronze(pl.concat(raws), PART.start, PART.end).bronze, PART.start, PART.end)
        assert (
            got is not None
            and got.success
            and (got.row_count, got.outcomes) == (full.row_count, full.outcomes)
        )
        mode, validated = got.parameters["validation"], int(got.parameters["rows_validated"])
        assert validated == full.row_count - (stored if mode == "incremental" else 0)  # the tick's new trades
        modes.append(mode)
        stored = full.row_count
    # a tick appended as a delta is validated alone; a rewrite (conflict, compaction) whole
    assert modes == ["full" if appended is False else "incremental" for _, appended, _ in EXPECTED]
