"""The warehouse views under real concurrency: a DuckDB session held by another process never fails
a run (the view refresh is deferred and reported), and a missing view is (re)created.

Everything is real: DuckDB files in tmp, a second Python process holding a DuckDB connection, and the
silver roll-up assets run through Dagster's `materialize` on the FTX BTC-PERP 1-minute bars.
"""

import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from crypto_platform import tables
from crypto_platform.resources.lake import LakeResource
from crypto_platform.resources.warehouse import WarehouseResource
from crypto_platform_tests.fixtures import ASSETS, cell, key, resources, write_silver

pytestmark = pytest.mark.slow  # materializes over real data, a second process holds the warehouse

DAY1, DAY2 = "2022-01-10", "2022-01-11"
CANDLES_5M = dg.AssetKey(["silver", "candles_5m"])
CANDLES_1H = dg.AssetKey(["silver", "candles_1h"])


def run(tmp: Path, asset: dg.AssetKey, day: str) -> dg.ExecuteInProcessResult:
    """Materialize one silver roll-up partition (it refreshes its warehouse view)."""
    res = resources(tmp, warehouse=WarehouseResource(path=str(tmp / "warehouse.duckdb"), lock_timeout_s=1.0))
    return dg.materialize(
        ASSETS, selection=dg.AssetSelection.assets(asset), resources=res, partition_key=key(day)
    )


def metadata(result: dg.ExecuteInProcessResult, asset: dg.AssetKey) -> dict[str, str]:
    [mat] = [m for m in result.get_asset_materialization_events() if m.asset_key == asset]
    meta = mat.materialization.metadata
    return {k: meta[k].value for k in ("warehouse_views", "warehouse_warning") if k in meta}


def query(tmp: Path, sql: str) -> list[tuple]:
    return WarehouseResource(path=str(tmp / "warehouse.duckdb")).query(sql)


class Holder:
    """Another process with an open DuckDB connection on the warehouse file (like a `duckdb` CLI)."""

    def __init__(self, file: Path, read_only: bool) -> None:
        code = (
            "import duckdb, sys\n"
            f"con = duckdb.connect({str(file)!r}, read_only={read_only})\n"
            "con.execute('select 1').fetchall()\n"
            "print('holding', flush=True)\n"
            "sys.stdin.read()\n"  # hold until the test closes stdin
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "holding"

    def release(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert self.proc.wait(timeout=30) == 0


@pytest.mark.parametrize("read_only", [True, False], ids=["held-read-only", "held-read-write"])
def test_runs_succeed_while_another_process_holds_the_warehouse(tmp_path: Path, read_only: bool) -> None:
    lake = LakeResource(root=str(tmp_path / "lake"))
    write_silver(lake, [DAY1, DAY2])
    file = tmp_path / "warehouse.duckdb"
    assert metadata(run(tmp_path, CANDLES_5M, DAY1), CANDLES_5M) == {
        "warehouse_views": "silver.candles_5m: created"
    }

    holder = Holder(file, read_only)
    try:
        if read_only:  # without the stamp the refresh looks through a read-only connection
            WarehouseResource(path=str(file)).stamp_file.unlink()
        # an existing view: nothing to write, the run does not touch the lock
        ok = run(tmp_path, CANDLES_5M, DAY2)
        assert ok.success
        assert metadata(ok, CANDLES_5M) == {"warehouse_views": "silver.candles_5m: up to date"}
        # a missing view cannot be created now: the run still succeeds, says so, and the data is written
        deferred = run(tmp_path, CANDLES_1H, DAY2)
        assert deferred.success
        meta = metadata(deferred, CANDLES_1H)
        assert meta["warehouse_views"] == "silver.candles_1h: deferred"
        assert "Could not set lock" in meta["warehouse_warning"]
        assert "next refresh" in meta["warehouse_warning"]
        assert lake.read_partition(tables.CANDLES_1H, cell(DAY2)).height == 24
    finally:
        holder.release()

    # the next refresh catches up; the 5m view saw the new day's partition without being recreated
    later = run(tmp_path, CANDLES_1H, DAY2)
    assert metadata(later, CANDLES_1H) == {"warehouse_views": "silver.candles_1h: created"}
    assert query(tmp_path, "select count(*) from silver.candles_1h") == [(24,)]
    assert query(tmp_path, "select count(*) from silver.candles_5m") == [(2 * 288,)]


def test_a_missing_view_is_created_again(tmp_path: Path) -> None:
    lake = LakeResource(root=str(tmp_path / "lake"))
    write_silver(lake, [DAY1])
    file = tmp_path / "warehouse.duckdb"
    assert metadata(run(tmp_path, CANDLES_5M, DAY1), CANDLES_5M)["warehouse_views"] == (
        "silver.candles_5m: created"
    )
    assert metadata(run(tmp_path, CANDLES_5M, DAY1), CANDLES_5M)["warehouse_views"] == (
        "silver.candles_5m: up to date"
    )

    # a user drops the view in their own session: the next run sees it is gone and recreates it
    con = duckdb.connect(str(file))
    con.execute("drop view silver.candles_5m")
    con.close()
    assert metadata(run(tmp_path, CANDLES_5M, DAY1), CANDLES_5M)["warehouse_views"] == (
        "silver.candles_5m: created"
    )
    assert query(tmp_path, "select count(*) from silver.candles_5m") == [(288,)]

    # the whole file deleted (the stamp next to it stays behind): recreated too
    file.unlink()
    assert metadata(run(tmp_path, CANDLES_5M, DAY1), CANDLES_5M)["warehouse_views"] == (
        "silver.candles_5m: created"
    )
    assert query(tmp_path, "select count(*) from silver.candles_5m") == [(288,)]


def test_a_changed_view_definition_is_replaced(tmp_path: Path) -> None:
    lake = LakeResource(root=str(tmp_path / "lake"))
    write_silver(lake, [DAY1])
    file = tmp_path / "warehouse.duckdb"
    # a view as an older release wrote it (no definition digest), over the wrong table
    con = duckdb.connect(str(file))
    con.execute("create schema silver")
    con.execute("create view silver.candles_5m as select 1 as x")
    con.close()
    assert metadata(run(tmp_path, CANDLES_5M, DAY1), CANDLES_5M)["warehouse_views"] == (
        "silver.candles_5m: created"
    )
    assert query(tmp_path, "select count(*) from silver.candles_5m") == [(288,)]
