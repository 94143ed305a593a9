"""Faults at the lake's commit points (issue 11, items 1, 6 and the repair path of 7): concurrent runs of
one partition, a fetch killed before its manifest commit, temp files of killed writes, a corrupt batch.

Every test drives the real assets (Dagster `materialize`) on the synthetic market and checks the lake
against an independent DuckDB query over the committed raw batch files.
"""

from __future__ import annotations

import json
import os
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from crypto_platform import tables
from crypto_platform.assets import ingest, silver
from crypto_platform.assets.ingest import derive_bronze
from crypto_platform.partitions import DayPartition
from crypto_platform.resources.lake import LakeResource
from crypto_platform.resources.sources import TradeSourcesResource
from crypto_platform.resources.warehouse import WarehouseResource
from crypto_platform.settings import load_universe

DAY = date(2024, 3, 4)
PART = DayPartition(load_universe().instrument("sim.BTC-USDT"), DAY)
RAW_ONLY = [ingest.raw_trades]
INGEST = [*dg.load_assets_from_modules([ingest, silver])]


def resources(root: Path, now: datetime) -> dict:
    return {
        "lake": LakeResource(root=str(root / "lake")),
        "warehouse": WarehouseResource(path=str(root / "warehouse.duckdb")),
        "trade_sources": TradeSourcesResource(now=now.isoformat()),
    }


def at(hour: int) -> datetime:
    return PART.start + timedelta(hours=hour)


def materialize(
    root: Path, assets: list, now: datetime, config: dict | None = None
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        assets,
        partition_key=PART.key,
        resources=resources(root, now),
        run_config=config,
        raise_on_error=False,
    )


def committed_raw(lake: LakeResource) -> tuple[int, float]:
    """(distinct trades, sum of amounts) of the committed raw batches, by DuckDB over the files the
    manifest lists (read as JSON here, not through the platform)."""
    folder = lake.partition_path(tables.RAW_TRADES, PART)
    names = [b["name"] for b in json.loads((folder / "_manifest.json").read_text())["batches"]]
    files = ", ".join(f"'{folder / n}.parquet'" for n in names)
    [row] = duckdb.sql(
        f"select count(*), sum(amount) from (select distinct trade_id, amount from read_parquet([{files}]))"
    ).fetchall()
    return row


def bronze_figures(lake: LakeResource) -> tuple[int, float]:
    df = lake.read_partition(tables.BRONZE_TRADES, PART)
    return df.height, df["amount"].sum()


@pytest.mark.slow
def test_a_slow_bronze_run_never_replaces_the_bronze_of_a_newer_raw(tmp_path: Path) -> None:
    lake = LakeResource(root=str(tmp_path / "lake"))
    assert materialize(tmp_path, RAW_ONLY, at(12)).success
    older = committed_raw(lake)
    calls = []

    def newer_run_meanwhile(attempt: int) -> None:
        calls.append(attempt)
        if attempt == 0:  # between reading raw v1 and committing, a newer run fetches and derives v2
            assert materialize(tmp_path, INGEST, at(18)).success

    _, _, manifest = derive_bronze(lake, PART, before_commit=newer_run_meanwhile)
    assert calls == [0, 1]  # the stale attempt was refused and re-derived from the newer raw
    newer = committed_raw(lake)
    assert newer[0] > older[0] and manifest.version == 2
    assert bronze_figures(lake)[0] == newer[0] and bronze_figures(lake)[1] == pytest.approx(newer[1])
    assert lake.read_lineage(tables.BRONZE_TRADES, PART).input_version == 2
    # silver built after it covers the newer coverage and every bronze trade
    assert materialize(tmp_path, [silver.silver_candles_1m], at(18)).success
    candles = lake.read_partition(tables.CANDLES_1M, PART)
    assert candles["trade_count"].sum() == newer[0]
    assert candles["ts"].max() == at(18) - timedelta(minutes=1)


@pytest.mark.slow
def test_a_manifest_never_committed_is_refused_then_repaired_and_swept(tmp_path: Path) -> None:
    lake = LakeResource(root=str(tmp_path / "lake"))
    source = TradeSourcesResource(now=at(6).isoformat())
    batch = source.source_for(PART.instrument).fetch(PART.instrument, PART.start, at(6))
    lake.write_batch(batch.trades, tables.RAW_TRADES, PART, "batch-killed-before-commit")  # no manifest
    bronze = [*dg.load_assets_from_modules([ingest])]
    failed = dg.materialize(
        bronze,
        selection=[tables.BRONZE_TRADES.key, tables.TRADE_REJECTS.key],
        partition_key=PART.key,
        resources=resources(tmp_path, at(6)),
        raise_on_error=False,
    )
    assert not failed.success
    message = str(failed.get_step_failure_events()[0].event_specific_data.error.message)
    assert PART.key in message and "no committed manifest" in message
    assert not lake.has_partition(tables.BRONZE_TRADES, PART)

    assert materialize(tmp_path, INGEST, at(6)).success  # the repair: raw fetches the day again
    assert bronze_figures(lake)[0] == committed_raw(lake)[0] == batch.trades.height
    orphan = lake.partition_path(tables.RAW_TRADES, PART) / "batch-killed-before-commit.parquet"
    young = lake.sweep(older_than_s=3600, now_s=time.time())
    assert young.orphan_batches == () and orphan.exists()  # too young: could be a write in progress
    swept = lake.sweep(older_than_s=3600, now_s=time.time() + 7200)
    assert swept.orphan_batches == (str(orphan),) and not orphan.exists()
    assert committed_raw(lake)[0] == batch.trades.height  # committed data untouched


def test_temp_files_of_killed_writes_are_swept_when_old(tmp_path: Path) -> None:
    lake = LakeResource(root=str(tmp_path / "lake"))
    folder = lake.partition_path(tables.BRONZE_TRADES, PART)
    folder.mkdir(parents=True)
    old, new = folder / ".part.parquet.aaaa.tmp", folder / ".part.parquet.bbbb.tmp"
    old.write_bytes(b"x" * 10)
    new.write_bytes(b"y" * 5)
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    report = lake.sweep(older_than_s=3600, now_s=time.time())
    assert report.temp_files == (str(old),) and report.bytes == 10
    assert new.exists() and not old.exists()


@pytest.mark.slow
def test_a_corrupt_raw_batch_is_repaired_by_a_refetch(tmp_path: Path) -> None:
    lake = LakeResource(root=str(tmp_path / "lake"))
    assert materialize(tmp_path, INGEST, at(6)).success
    first_six_hours = committed_raw(lake)
    [name] = lake.read_manifest(tables.RAW_TRADES, PART).names
    batch_file = lake.partition_path(tables.RAW_TRADES, PART) / f"{name}.parquet"
    batch_file.write_bytes(batch_file.read_bytes()[:200])  # truncated on disk
    # the next tick fails: raw re-reads its overlap from that batch (bronze would read only new batches)
    assert not materialize(tmp_path, INGEST, at(7)).success

    repaired = materialize(tmp_path, INGEST, at(7), {"ops": {"raw__trades": {"config": {"refetch": True}}}})
    assert repaired.success
    manifest = lake.read_manifest(tables.RAW_TRADES, PART)
    assert name not in manifest.names and manifest.version == 2 and len(manifest.names) == 1
    expected = committed_raw(lake)
    assert expected[0] > first_six_hours[0]  # the corrupt batch's hours fetched again, and one more
    assert bronze_figures(lake) == pytest.approx(expected)
    assert lake.read_partition(tables.CANDLES_1M, PART)["trade_count"].sum() == expected[0]


def test_the_sweep_job_reports_what_it_removed(tmp_path: Path) -> None:
    from crypto_platform.definitions import defs

    lake = LakeResource(root=str(tmp_path / "lake"))
    folder = lake.partition_path(tables.RAW_TRADES, PART)
    folder.mkdir(parents=True)
    orphan = folder / "batch-orphan.parquet"
    orphan.write_bytes(b"z" * 7)
    os.utime(orphan, (time.time() - 7 * 3600, time.time() - 7 * 3600))
    job = defs.get_job_def("lake_sweep_job")
    result = job.execute_in_process(resources={"lake": lake})
    assert result.success and not orphan.exists()
    [output] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    meta = {k: v.value for k, v in output.event_specific_data.metadata.items()}
    assert (meta["orphan_batches_removed"], meta["temp_files_removed"], meta["bytes_removed"]) == (1, 0, 7)
