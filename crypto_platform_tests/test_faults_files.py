"""Fault injection, bad files (issue 11, items 2, 7 and 8): empty and header-only recordings, ragged CSV
lines, truncated Parquet in the lake, and a DuckDB warehouse file first created by the Python package.

Each case checks the outcome against an independent DuckDB read of the same file (row counts, the line
DuckDB itself finds ragged, the rows the `duckdb` CLI binary returns), with the real ReplaySource,
LakeResource, WarehouseResource, what `dagster asset materialize` runs and the duckdb CLI; nothing is
mocked. The end-to-end run is in this process (`fixtures.materialize_as_cli`: the CLI's own steps, the
code location's definitions and resources built from the settings read from a temp CRYPTO_INSTRUMENTS,
one run over the range, its checks included) rather than a `dagster` CLI process: the code location's
executor runs a CLI run in the CLI's process anyway, so only the process start-up (~8 CPU s) is left
out; the CLI command itself is exercised by test_offline (the demo) and test_checks_cli.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from crypto_platform.partitions import DayPartition
from crypto_platform.resources.lake import LakeResource
from crypto_platform.resources.warehouse import WarehouseResource
from crypto_platform.settings import INSTRUMENTS_ENV, Instrument, parse_universe
from crypto_platform.sources.base import SourceError
from crypto_platform.sources.replay import ReplaySource
from crypto_platform.tables import BRONZE_TRADES, RAW_TRADES
from crypto_platform_tests.fixtures import D1, ROWS, materialize_as_cli, platform_process, write_recording

INST = Instrument("binance", "BTC/USDT", "replay")
WINDOW = (datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC))
HEADER = "id,time,price,qty,side"
DUCKDB_CLI = Path(sys.executable).parent / "duckdb"  # the bundled duckdb-cli (1.5.x)


def good_lines(n: int, start: int = 0) -> list[str]:
    """n valid trade lines one second apart from 2024-01-01 12:00 (epoch ms)."""
    t0 = int(datetime(2024, 1, 1, 12, tzinfo=UTC).timestamp() * 1000)
    return [
        f"{i},{t0 + 1000 * i},{42000 + i},0.{i + 1:03d},{'buy' if i % 2 else 'sell'}" for i in range(start, n)
    ]


def scalar(sql: str) -> object:
    """The single value a DuckDB query returns."""
    return duckdb.sql(sql).fetchall()[0][0]


# ---------------------------------------------------------------------------------------------------
# empty and header-only recordings: refused alike, naming the file


def test_empty_and_header_only_files_are_refused_alike(tmp_path: Path) -> None:
    good = tmp_path / "a_good.csv"
    good.write_text("\n".join([HEADER, *good_lines(30)]) + "\n")
    header_only = tmp_path / "b_header.csv"
    header_only.write_text(HEADER + "\n")
    empty = tmp_path / "c_empty.csv"
    empty.write_bytes(b"")
    assert scalar(f"select count(*) from read_csv('{good}')") == 30
    assert scalar(f"select count(*) from read_csv('{header_only}')") == 0  # DuckDB: a header, no row

    assert ReplaySource(str(good)).fetch(INST, *WINDOW).trades.height == 30
    messages = []
    for bad in (header_only, empty):
        with pytest.raises(SourceError) as err:
            ReplaySource(str(bad)).fetch(INST, *WINDOW)
        messages.append(str(err.value).replace(str(bad), "<file>"))
        assert str(bad) in str(err.value) and "holds no rows" in str(err.value)
    assert messages[0] == messages[1]  # one behaviour, one message
    # in a glob, the good file's rows are not half-ingested: the run stops, naming the broken file
    with pytest.raises(SourceError, match=r"b_header\.csv: the file holds no rows"):
        ReplaySource(str(tmp_path / "*.csv")).fetch(INST, *WINDOW)


# ---------------------------------------------------------------------------------------------------
# ragged CSV lines: refused with the file and the line DuckDB finds ragged too


@pytest.mark.parametrize(
    ("name", "bad_line"),
    [
        ("extra_field.csv", '37,1704110436000,42036,0.037,buy,"oops"'),
        ("missing_field.csv", "37,1704110436000,42036,buy"),
        ("quoted_commas.csv", '37,1704110436000,"42,036",0.037,buy'),  # a quoted comma is one field
    ],
)
def test_ragged_line_is_refused_with_file_and_line(tmp_path: Path, name: str, bad_line: str) -> None:
    lines = [HEADER, *good_lines(36), bad_line, *good_lines(50, start=37)]
    if name == "quoted_commas.csv":  # line 38 is fine there; line 21 (quoted too) has a field too many
        lines.insert(20, '19,1704110418000,"42,018",0.019,buy,x')
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    con = duckdb.connect()
    con.execute(
        f"select * from read_csv('{path}', all_varchar = true, header = true, store_rejects = true)"
    ).fetchall()
    duck_lines = [r[0] for r in con.execute("select line from reject_errors order by line").fetchall()]
    with pytest.raises(SourceError) as err:
        ReplaySource(str(path)).fetch(INST, *WINDOW)
    msg = str(err.value)
    assert str(path) in msg and f"line {duck_lines[0]} has" in msg
    assert duck_lines == [21 if name == "quoted_commas.csv" else 38]


# ---------------------------------------------------------------------------------------------------
# truncated Parquet in the lake: the error names the file, the table and the partition


def test_truncated_parquet_is_named_with_table_and_partition(tmp_path: Path) -> None:
    lake = LakeResource(root=str(tmp_path / "lake"))
    part = DayPartition(INST, date(2024, 1, 1))
    other = DayPartition(INST, date(2024, 1, 2))
    df = pl.DataFrame({"trade_id": [str(i) for i in range(5000)], "amount": [0.001 * i for i in range(5000)]})
    lake.write_partition(df, BRONZE_TRADES, part)
    lake.write_partition(df.head(100), BRONZE_TRADES, other)
    for name in ("batch-1", "batch-2"):
        lake.write_batch(df, RAW_TRADES, part, name)

    file = lake.partition_path(BRONZE_TRADES, part) / "part.parquet"
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])  # a truncated copy
    with pytest.raises(duckdb.Error):  # DuckDB cannot read it either
        duckdb.sql(f"select count(*) from '{file}'").fetchall()
    for read in (
        lambda: lake.read_partition(BRONZE_TRADES, part),
        lambda: lake.partition_max(BRONZE_TRADES, part, "amount"),
    ):
        with pytest.raises(RuntimeError) as err:
            read()
        assert type(err.value).__name__ == "LakeReadError"
        assert (
            str(file) in str(err.value) and "bronze/trades" in str(err.value) and part.key in str(err.value)
        )
    # the intact partition still reads, exactly what DuckDB reads
    intact = lake.partition_path(BRONZE_TRADES, other) / "part.parquet"
    got = lake.read_partition(BRONZE_TRADES, other)
    assert got is not None and (got.height, got["amount"].sum()) == pytest.approx(
        duckdb.sql(f"select count(*), sum(amount) from '{intact}'").fetchall()[0]
    )

    batch = lake.partition_path(RAW_TRADES, part) / "batch-2.parquet"
    batch.write_bytes(batch.read_bytes()[:100])
    with pytest.raises(RuntimeError) as err:
        lake.scan_batches(RAW_TRADES, part, ["batch-1", "batch-2"])
    assert type(err.value).__name__ == "LakeReadError"
    assert str(batch) in str(err.value) and "raw/trades" in str(err.value) and part.key in str(err.value)
    assert "refetch: true" in str(err.value)  # the documented repair
    with pytest.raises(RuntimeError, match=r"batch-2\.parquet"):
        lake.read_batches(RAW_TRADES, part, ["batch-1", "batch-2"])


# ---------------------------------------------------------------------------------------------------
# DuckDB: the bundled CLI opens the warehouse whoever created the file first


def cli(file: Path, sql: str) -> list[str]:
    """Rows (CSV lines) the real `duckdb` CLI binary returns for a query on the file, read-only."""
    proc = subprocess.run(
        [str(DUCKDB_CLI), "-readonly", "-csv", "-noheader", str(file), "-c", sql],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_warehouse_created_by_python_duckdb_opens_in_the_cli(tmp_path: Path) -> None:
    lake = LakeResource(root=str(tmp_path / "lake"))
    df = pl.DataFrame({"trade_id": [str(i) for i in range(777)], "amount": [0.5] * 777})
    lake.write_partition(df, BRONZE_TRADES, DayPartition(INST, date(2024, 1, 1)))
    views = [BRONZE_TRADES]
    files = lake.table_glob(BRONZE_TRADES)
    want = [str(scalar(f"select count(*) from read_parquet('{files}')")), "388.5"]

    # created by the platform itself
    fresh = WarehouseResource(path=str(tmp_path / "fresh.duckdb"))
    assert fresh.refresh_views(lake, views).created == ("bronze.trades",)
    assert cli(fresh.file, "select count(*), sum(amount) from bronze.trades") == [",".join(want)]

    # first created by a Python duckdb session (the package's own, newer, storage format), with a
    # view of the user's: the platform's refresh leaves a file the CLI opens, the user's view kept
    file = tmp_path / "warehouse.duckdb"
    con = duckdb.connect(str(file))
    con.execute("create schema mine; create view mine.answer as select 42 as x")
    con.close()
    held = WarehouseResource(path=str(file))
    assert held.refresh_views(lake, views).created == ("bronze.trades",)
    assert cli(file, "select count(*), sum(amount) from bronze.trades") == [",".join(want)]
    assert cli(file, "select x from mine.answer") == ["42"]
    assert held.refresh_views(lake, views).current == ("bronze.trades",)  # and it stays so
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "fresh.duckdb",
        "fresh.duckdb.views.json",
        "lake",
        "warehouse.duckdb",
        "warehouse.duckdb.views.json",
    ]  # fmt: skip  (no temp file left behind)


# ---------------------------------------------------------------------------------------------------
# end to end: what `dagster asset materialize` runs, on a mixed-timestamp replay; the duckdb CLI counts
# every row


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_replay_rows_all_reach_bronze_or_rejects_through_the_platform(tmp_path: Path) -> None:
    recording = write_recording(tmp_path, "csv")
    doc = {
        "start_date": D1.date().isoformat(),
        "instruments": [
            {"exchange": "kraken", "symbol": "BTC/USDC", "source": "replay", "path": str(recording)}
        ],
    }
    instruments = tmp_path / "instruments.yaml"
    instruments.write_text(json.dumps(doc))
    parse_universe(doc, instruments)
    warehouse = tmp_path / "warehouse.duckdb"
    duckdb.connect(str(warehouse)).close()  # a user's Python session created the file first
    env = {
        INSTRUMENTS_ENV: str(instruments),
        "CRYPTO_LAKE_ROOT": str(tmp_path / "lake"),
        "CRYPTO_WAREHOUSE_PATH": str(warehouse),
    }
    keys = "2024-01-01|kraken.BTC-USDC...2024-01-02|kraken.BTC-USDC"  # a pair the test universe lists too
    with dg.DagsterInstance.ephemeral() as instance, platform_process(env):
        assert materialize_as_cli("group:raw or group:bronze", keys, None, instance).success

    lines = scalar(f"select count(*) from read_csv('{recording}', all_varchar = true)")
    amounts = scalar(
        f"select sum(amount) from read_csv('{recording}', all_varchar = true, types = {{amount: 'DOUBLE'}})"
    )
    assert lines == len(ROWS)
    sql = (
        "select (select count(*) from bronze.trades) + (select count(*) from bronze.trade_rejects), "
        "round((select sum(amount) from bronze.trades) + (select sum(amount) from bronze.trade_rejects), 9), "
        "(select count(*) from bronze.trade_rejects)"
    )
    total, amount, rejects = cli(warehouse, sql)[0].split(",")
    assert (int(total), float(amount)) == (lines, round(amounts, 9))
    assert int(rejects) == 7  # 5 not times + 2 outside the partition grid (test_faults_replay)
