"""Fault injection, replay rows (issue 11, item 2): every row of a recorded file ends in raw and then in
bronze or bronze/trade_rejects with a reason, whatever its timestamp looks like.

The file mixes every supported representation row by row (ISO 8601 with and without 'T' and zone,
fractions, offsets, epoch s/ms/µs/ns) with rows that are not times (empty, 'not a time', the ambiguous
'01/01/2024 12:01:15', 30 February) and rows timed outside the partition grid. The expected outcome is
computed independently by DuckDB over the same file: its own parse of each value (TIMESTAMPTZ cast in
UTC, epoch numbers by the documented magnitude rule), and its own placement of the unusable rows with
the previous usable one (a window function). The real ReplaySource and to_bronze run; nothing is mocked.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

from crypto_platform.settings import Instrument
from crypto_platform.sources.base import SourceError
from crypto_platform.sources.factory import build_source
from crypto_platform.sources.replay import ReplaySource
from crypto_platform.transforms import trades as T
from crypto_platform_tests.fixtures import D1, ROWS, recorded, write_recording

INST = Instrument("binance", "BTC/USDT", "replay")
D2 = D1 + timedelta(days=1)
D3 = D2 + timedelta(days=1)
# No row is placed by its own time before the Bitcoin genesis block (a ReplaySource built outside the
# factory, which bounds it by the universe's start date instead).
EARLIEST = datetime(2009, 1, 3, tzinfo=UTC)


def duck_expected(path: Path, fmt: str) -> pl.DataFrame:
    """Per row, by DuckDB alone: id, amount, epoch ms (null if not a time), and the placement ms."""
    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    read = (
        f"read_csv('{path}', all_varchar = true, header = true)"
        if fmt == "csv"
        else f"read_json('{path}', columns = {{id: 'VARCHAR', timestamp: 'VARCHAR', amount: 'DOUBLE'}})"
    )
    lo, hi = int(EARLIEST.timestamp() * 1000), int((datetime.now(UTC) + timedelta(days=1)).timestamp() * 1000)
    sql = f"""
        with src as (select row_number() over () as rn, id, trim(timestamp) as s, amount::double as amount
                     from {read}),
        parsed as (
            select *, case
                when regexp_full_match(s, '[0-9]+') then case
                    when s::hugeint >= 1e17 then s::hugeint // 1000000
                    when s::hugeint >= 1e14 then s::hugeint // 1000
                    when s::hugeint >= 1e11 then s::hugeint
                    else s::hugeint * 1000 end
                when regexp_full_match(s, '[0-9]+\\.[0-9]+') then floor(s::double * 1000)
                else epoch_ms(try_cast(s as timestamptz)) end::bigint as ms
            from src),
        placed as (
            select *, case when ms >= {lo} and ms < {hi} then ms end as usable from parsed)
        select id, amount, ms,
               coalesce(last_value(usable ignore nulls) over (order by rn), usable) as at
        from placed order by rn
    """
    return pl.from_arrow(con.sql(sql).arrow())


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_every_row_lands_in_raw_then_bronze_or_rejects(tmp_path: Path, fmt: str) -> None:
    path = write_recording(tmp_path, fmt)
    expected = duck_expected(path, fmt)
    assert expected.height == len(ROWS) == 20
    assert expected["ms"].null_count() == 5  # DuckDB cannot read these 5 as times either
    src = ReplaySource(str(path))

    raw_rows = 0
    for lo, hi in [(D1, D2), (D2, D3)]:
        lo_ms, hi_ms = int(lo.timestamp() * 1000), int(hi.timestamp() * 1000)
        raw = src.fetch(INST, lo, hi).trades
        raw_rows += raw.height
        mine = expected.filter(pl.col("at").is_between(lo_ms, hi_ms, closed="left"))
        # raw: exactly the rows placed in this day, their timestamps as DuckDB reads them
        got = dict(zip(raw["trade_id"], raw["timestamp_ms"], strict=True))
        assert got == dict(zip(mine["id"], mine["ms"], strict=True))

        result = T.to_bronze(raw, lo, hi)
        assert result.bronze.height + result.rejects.height + result.duplicates_dropped == raw.height
        valid = mine.filter(pl.col("ms").is_between(lo_ms, hi_ms, closed="left"))
        bronze_ms = result.bronze.select("trade_id", pl.col("ts").dt.epoch("ms"))
        assert dict(bronze_ms.iter_rows()) == dict(zip(valid["id"], valid["ms"], strict=True))
        assert result.bronze["amount"].sum() == pytest.approx(valid["amount"].sum(), rel=1e-12)
        # every other row is rejected with the reason its timestamp deserves
        outside = T.window_reason(lo, hi)
        reason = {
            i: T.TIMESTAMP_NULL if ms is None else outside for i, ms in mine.select("id", "ms").iter_rows()
        }
        assert dict(zip(result.rejects["trade_id"], result.rejects["reason"], strict=True)) == {
            i: r for i, r in reason.items() if i not in set(valid["id"])
        }
        # a rejected row keeps its timestamp as recorded in the payload (an empty CSV cell reads as null)
        for row in result.rejects.iter_rows(named=True):
            text = ROWS[int(row["trade_id"]) - 5000][0]
            assert json.loads(row["payload"])["timestamp"] == (
                recorded(text, fmt) if text or fmt == "json" else None
            )

    # nothing dropped: the two days' raw rows are the file's rows (DuckDB's count), each once
    assert raw_rows == expected.height == scalar(f"select count(*) from '{path}'")


def scalar(sql: str) -> object:
    """The single value a DuckDB query returns."""
    return duckdb.sql(sql).fetchall()[0][0]


def test_ambiguous_or_unusable_times_only_are_refused_by_name(tmp_path: Path) -> None:
    """A file in which no row has a usable time is an error naming the file and the form, never
    an empty day (its rows could not be placed in any partition)."""
    path = tmp_path / "us_dates.csv"
    path.write_text("id,time,price,qty,side\n1,01/02/2024 12:01:15,1,1,buy\n2,01/02/2024 12:01:16,1,1,sell\n")
    assert scalar(f"select count(*) from read_csv('{path}')") == 2
    with pytest.raises(SourceError) as err:
        ReplaySource(str(path)).fetch(INST, D1, D2)
    msg = str(err.value)
    assert str(path) in msg and "'01/02/2024 12:01:15'" in msg and "ambiguous day/month" in msg


def test_rows_before_the_partition_grid_are_rejected_not_dropped(tmp_path: Path) -> None:
    """The factory's source places no row before the universe's start date (2019-10-01 in the test
    universe): a row timed before it is kept with its neighbours and rejected, not lost in a partition
    that can never run."""
    path = tmp_path / "early.csv"
    path.write_text(
        "id,time,price,qty,side\n"
        "1,2019-10-01T00:00:01Z,8000,0.5,buy\n"
        "2,2019-09-30T23:59:59Z,8001,0.25,sell\n"  # before the grid: partition 2019-09-30 does not exist
        "3,2019-10-01T00:00:03Z,8002,0.125,buy\n"
    )
    inst = Instrument("binance", "BTC/USDT", "replay", {"path": str(path)})
    day = datetime(2019, 10, 1, tzinfo=UTC)
    raw = build_source(inst).fetch(inst, day, day + timedelta(days=1)).trades
    assert raw.height == scalar(f"select count(*) from read_csv('{path}')") == 3
    result = T.to_bronze(raw, day, day + timedelta(days=1))
    assert result.bronze["trade_id"].to_list() == ["1", "3"]
    assert result.rejects.select("trade_id", "reason").rows() == [
        ("2", T.window_reason(day, day + timedelta(days=1)))
    ]
    total = result.bronze["amount"].sum() + result.rejects["amount"].sum()
    assert total == scalar(f"select sum(qty) from read_csv('{path}')") == 0.875
