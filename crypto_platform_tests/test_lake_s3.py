"""The lake on a real S3-compatible server (moto on loopback): readers never see a mixed version while a
partition is replaced, racing raw appends and derived commits lose nothing, superseded versions are
swept only once no reader can still be on them, and raw -> bronze -> candles runs on S3 as it does on
a local folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import boto3
import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pytest

from crypto_platform import tables
from crypto_platform.assets import ingest, silver
from crypto_platform.cli import duckdb_init
from crypto_platform.partitions import DayPartition
from crypto_platform.platform_settings import PlatformSettings
from crypto_platform.raw_manifest import RawBatch, RawManifest
from crypto_platform.resources.lake import CommitConflict, LakeResource, Lineage, WriteInfo
from crypto_platform.resources.sources import TradeSourcesResource
from crypto_platform.resources.warehouse import WarehouseResource
from crypto_platform.settings import load_universe
from crypto_platform_tests.fixtures import s3_lake

pytestmark = pytest.mark.slow
PART = DayPartition(load_universe().instrument("sim.BTC-USDT"), date(2024, 3, 4))
T = tables.CANDLES_1M


def frame(seed: int, rows: int = 50_000) -> pl.DataFrame:
    """A frame big enough for several row groups and range requests, distinct per seed."""
    rng = np.random.default_rng(seed)
    return pl.DataFrame({"i": np.arange(rows) + seed * rows, "v": rng.normal(size=rows)})


def objects(lake: LakeResource, table: tables.Table = T) -> list[str]:
    return [e.key.rsplit("/", 1)[1] for e in lake.store.list_folder(lake.part_key(table, PART))]


def test_100_reads_during_replacement_each_see_exactly_the_old_or_the_new_version(s3_endpoint: str) -> None:
    lake = s3_lake(s3_endpoint)
    old, new = frame(1), frame(2)
    lake.write_partition(old, T, PART)
    done, writes, seen, bad = threading.Event(), [0], [], []
    lock = threading.Lock()

    def writer() -> None:
        while not done.is_set():
            lake.write_partition(new if writes[0] % 2 == 0 else old, T, PART)
            writes[0] += 1

    def reader() -> None:
        while True:
            with lock:
                if len(seen) + len(bad) >= 100:
                    return
            try:
                df = lake.read_partition(T, PART)
            except Exception as exc:  # a failed read is a bad read, reported below
                with lock:
                    bad.append(repr(exc))
                continue
            which = "old" if df.equals(old) else "new" if df.equals(new) else None
            with lock:
                (seen if which else bad).append(which or df.height)

    w = threading.Thread(target=writer, daemon=True)
    readers = [threading.Thread(target=reader, daemon=True) for _ in range(4)]
    w.start()
    try:
        for r in readers:
            r.start()
        for r in readers:
            r.join(timeout=120)
    finally:
        done.set()
        w.join(timeout=30)
    assert bad == [] and len(seen) >= 100
    assert {"old", "new"} <= set(seen), "the reads did not overlap any replacement"
    assert writes[0] >= 10


def test_racing_raw_appends_both_commit_exactly_once(s3_endpoint: str) -> None:
    """Two writers read the same manifest version and commit at once (a barrier forces the race): one
    conditional PUT fails and that writer re-reads and commits on top; both batches are listed once."""
    lake = s3_lake(s3_endpoint)
    barrier, calls = threading.Barrier(2), []

    def commit(manifest: RawManifest, name: str, info: WriteInfo) -> RawManifest:
        calls.append(manifest.version)
        if len(calls) <= 2:
            barrier.wait(timeout=30)  # both hold version 0 before either commits
        return manifest.with_batch(RawBatch(name, PART.start, PART.end, rows=info.rows))

    frames = [
        pl.DataFrame({"trade_id": [f"a{i}" for i in range(5)]}),
        pl.DataFrame({"trade_id": ["b0", "b1"]}),
    ]
    threads = [
        threading.Thread(
            target=lake.append_batch, args=(df, tables.RAW_TRADES, PART, ("batch-same-span", "x"), commit)
        )
        for df in frames
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    manifest = lake.read_manifest(tables.RAW_TRADES, PART)
    assert sorted(calls) == [0, 0, 1]  # the loser re-applied its commit to version 1
    assert manifest.version == 2 and len(set(manifest.names)) == 2 and "batch-same-span" in manifest.names
    ids = lake.scan_batches(tables.RAW_TRADES, PART, manifest.names).collect()["trade_id"].to_list()
    assert sorted(ids) == sorted(["a0", "a1", "a2", "a3", "a4", "b0", "b1"])
    assert sorted(b.rows for b in manifest.batches) == [2, 5]


def test_a_commit_against_a_stale_version_fails_and_leaves_nothing(s3_endpoint: str) -> None:
    lake = s3_lake(s3_endpoint)
    key = f"{lake.part_key(T, PART)}/part.parquet"
    lake.write_partition(frame(1, 10), T, PART)
    seen = lake.store.current(key)
    lake.write_partition(frame(2, 10), T, PART)  # another writer replaces it meanwhile
    before = objects(lake)
    with pytest.raises(CommitConflict):
        lake.store.write(key, frame(3, 10), expect=seen.token)
    with pytest.raises(CommitConflict):
        lake.store.write(key, frame(3, 10), expect=None)  # "create" while one exists
    assert lake.read_partition(T, PART).equals(frame(2, 10)) and objects(lake) == before


def test_racing_derived_commits_keep_the_newest_input_version(s3_endpoint: str) -> None:
    """Two runs commit bronze-like results of input versions 1 and 2 at once: one conditional PUT loses
    (None: the caller retries); after the retry the stored result is the one of version 2, whoever won."""
    lake = s3_lake(s3_endpoint)
    barrier, results = threading.Barrier(2), {}

    def commit(version: int, first: bool) -> list | None:
        def current() -> bool:
            if first:
                barrier.wait(timeout=30)
            return True

        return lake.commit_derived({T: frame(version, 10)}, PART, Lineage(version), inputs_current=current)

    threads = [threading.Thread(target=lambda v=v: results.__setitem__(v, commit(v, True))) for v in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r is None for r in results.values()) == [False, True]  # exactly one lost the race
    loser = next(v for v, r in results.items() if r is None)
    retried = commit(loser, False)
    assert (retried is None) == (loser == 1)  # a version-1 retry is refused: version 2 is stored
    df, lineage = lake.read_with_lineage(T, PART)
    assert lineage.input_version == 2 and df.equals(frame(2, 10))


def test_superseded_versions_are_swept_only_after_they_stopped_being_current(s3_endpoint: str) -> None:
    lake = s3_lake(s3_endpoint)
    infos = []
    for seed in (1, 2, 3):
        infos.append(lake.write_partition(frame(seed, 10), T, PART))
        time.sleep(2.1)
    names = [i.path.rsplit("/", 1)[1] for i in infos]
    lake.write_batch(pl.DataFrame({"trade_id": ["x"]}), tables.RAW_TRADES, PART, "batch-orphan")
    report = lake.sweep(older_than_s=1.5, now_s=time.time() - 2.1)  # when v3 had just been committed
    # v1 was replaced by v2 ~2 s before that: swept. v2, written as long ago, was current until then:
    # a reader may still be on it, so it stays although its own age passes the bound.
    assert report.superseded == (lake.store.where(f"{lake.part_key(T, PART)}/{names[0]}"),)
    assert sorted(objects(lake)) == sorted(["part.current.json", names[1], names[2]])
    later = lake.sweep(older_than_s=1.5, now_s=time.time() + 3600)
    assert later.superseded == (lake.store.where(f"{lake.part_key(T, PART)}/{names[1]}"),)
    assert [p.rsplit("/", 1)[1] for p in later.orphan_batches] == ["batch-orphan.parquet"]
    assert later.bytes > 0 and lake.read_partition(T, PART).equals(frame(3, 10))
    assert sorted(objects(lake)) == sorted(["part.current.json", names[2]])


def run_ingest(
    lake: LakeResource, tmp: Path, hours: int = 3, raw_only: bool = False
) -> dg.ExecuteInProcessResult:
    raw = [tables.RAW_TRADES.key]
    return dg.materialize(
        [*dg.load_assets_from_modules([ingest, silver])],
        selection=raw if raw_only else [*raw, tables.BRONZE_TRADES.key, tables.TRADE_REJECTS.key, T.key],
        partition_key=PART.key,
        resources={
            "lake": lake,
            "warehouse": WarehouseResource(path=str(tmp / "warehouse.duckdb")),
            "trade_sources": TradeSourcesResource(now=(PART.start + timedelta(hours=hours)).isoformat()),
        },
    )


def committed_trades(lake: LakeResource, endpoint: str, tmp: Path) -> int:
    """Distinct trades of the committed raw batches: DuckDB over the objects the manifest (read as plain
    JSON with boto3, not through the platform) lists, downloaded."""
    s3 = boto3.client("s3", endpoint_url=endpoint)
    bucket, prefix = lake.root[5:].split("/", 1)
    folder = f"{prefix}/{lake.part_key(tables.RAW_TRADES, PART)}"
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=f"{folder}/_manifest.json")["Body"].read())
    files = []
    for b in manifest["batches"]:
        files.append(tmp / f"{b['name']}.parquet")
        s3.download_file(bucket, f"{folder}/{b['name']}.parquet", str(files[-1]))
    listed = ", ".join(f"'{f}'" for f in files)
    return duckdb.sql(f"select count(distinct trade_id) from read_parquet([{listed}])").fetchone()[0]


def test_a_slow_bronze_run_on_s3_re_derives_when_a_newer_raw_committed(
    s3_endpoint: str, tmp_path: Path
) -> None:
    """derive_bronze's optimistic retry with conditional commits: a run that read raw version 1 and is
    overtaken by a newer run (raw version 2 and its bronze) refuses to commit and re-derives."""
    lake = s3_lake(s3_endpoint)
    assert run_ingest(lake, tmp_path, hours=12, raw_only=True).success
    calls = []

    def newer_run_meanwhile(attempt: int) -> None:
        calls.append(attempt)
        if attempt == 0:
            assert run_ingest(lake, tmp_path, hours=18).success

    _, _, manifest = ingest.derive_bronze(lake, PART, before_commit=newer_run_meanwhile)
    assert calls == [0, 1] and manifest.version == 2
    assert lake.read_lineage(tables.BRONZE_TRADES, PART).input_version == 2
    assert lake.read_partition(tables.BRONZE_TRADES, PART).height == committed_trades(
        lake, s3_endpoint, tmp_path
    )


def test_raw_bronze_candles_materialize_on_s3_as_on_a_local_folder(s3_endpoint: str, tmp_path: Path) -> None:
    lake = s3_lake(s3_endpoint)
    local = LakeResource(root=str(tmp_path / "local"))
    assert run_ingest(lake, tmp_path / "s3").success and run_ingest(local, tmp_path / "local").success
    candles = lake.read_partition(T, PART)
    assert candles.equals(local.read_partition(T, PART))
    assert lake.read_partition(tables.BRONZE_TRADES, PART).equals(
        local.read_partition(tables.BRONZE_TRADES, PART)
    )
    trades = committed_trades(lake, s3_endpoint, tmp_path)  # independent of the platform's reads
    assert trades > 0 and candles["trade_count"].sum() == trades
    assert candles["ts"].max() == PART.start + timedelta(hours=3) - timedelta(minutes=1)
    # the views the run created read the same candles from S3
    views = WarehouseResource(path=str(tmp_path / "s3" / "warehouse.duckdb"))
    sql = "select count(*), sum(trade_count), sum(volume) from silver.candles_1m"
    [(rows, count, volume)] = views.query(sql, lake=lake)
    assert (rows, count) == (candles.height, trades) and volume == pytest.approx(candles["volume"].sum())


def test_warehouse_views_over_s3_read_exactly_the_committed_versions(
    s3_endpoint: str, tmp_path: Path
) -> None:
    """The views list the current object of every partition: after a replace they read the new version
    only (no superseded object), from Python and from the bundled duckdb CLI (httpfs loaded offline)."""
    lake = s3_lake(s3_endpoint)
    warehouse = WarehouseResource(path=str(tmp_path / "warehouse.duckdb"))
    other = DayPartition(PART.instrument, PART.day + timedelta(days=1))
    lake.write_partition(frame(1, 1000), T, PART)
    lake.write_partition(frame(2, 1000), T, other)
    assert warehouse.refresh_views(lake, [T]).created == ("silver.candles_1m",)
    lake.write_partition(frame(3, 1000), T, PART)  # replaced: the view must follow, without the old one
    assert warehouse.refresh_views(lake, [T]).created == ("silver.candles_1m",)
    assert warehouse.refresh_views(lake, [T]).current == ("silver.candles_1m",)  # unchanged: not rewritten
    expected = pl.concat([frame(3, 1000), frame(2, 1000)])
    sql = "select count(*), count(distinct i), sum(i), round(sum(v), 6) from silver.candles_1m"
    want = [(2000, 2000, int(expected["i"].sum()), round(float(expected["v"].sum()), 6))]
    assert warehouse.query(sql, lake=lake) == want
    days = warehouse.query("select date, count(*) from silver.candles_1m group by 1 order by 1", lake=lake)
    assert days == [(PART.day, 1000), (other.day, 1000)]  # hive columns from the object paths
    # a user's own duckdb CLI (the locked duckdb-cli, same version) with the init SQL of
    # `crypto-platform duckdb-init` for these settings: httpfs from the package, a secret from AWS_*
    env = {
        "CRYPTO_LAKE_ROOT": lake.root,
        "CRYPTO_S3_ENDPOINT_URL": s3_endpoint,
        "CRYPTO_S3_ALLOW_HTTP": "true",
    }
    init = tmp_path / "init.sql"
    init.write_text(duckdb_init(PlatformSettings.from_env(env)))
    cli = Path(sys.executable).with_name("duckdb")
    out = subprocess.run(
        [str(cli), "-init", str(init), "-readonly", "-csv", "-noheader", str(warehouse.file)],
        input=sql + ";\n",
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1].split(",") == [str(x) for x in want[0]]
