"""Snapshot isolation of an open day across its compaction, on a folder and on S3: a warehouse view or
a DuckDB connection built from the committed file list before a compaction reads exactly that snapshot
after it (never the compacted base plus the old deltas), one built after reads the new one, the sweep
removes superseded files only after the grace period and never a current one, a compaction killed
before its commit leaves the old snapshot whole, and an older folder lake (a plain base, a list naming
it by digest) is read and migrated."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path, PurePath

import duckdb
import polars as pl

from crypto_platform import tables
from crypto_platform.assets.ingest import commit_batch, derive_bronze
from crypto_platform.assets.open_day import COMPACTED, INCREMENTAL
from crypto_platform.lineage import new_id
from crypto_platform.partitions import DayPartition
from crypto_platform.resources.lake import LINEAGE_KEY, PART_FILE, LakeResource, Lineage
from crypto_platform.resources.sources import TradeSourcesResource
from crypto_platform.resources.warehouse import WarehouseResource
from crypto_platform.settings import load_universe

T = tables.TRADE_REJECTS  # a delta-appended table (the open day's bronze layout)
PART = DayPartition(load_universe().instrument("sim.BTC-USDT"), date(2024, 3, 4))
CHUNK = 500
SQL = f"select count(*), count(distinct i), sum(i) from {T.view}"


def rows(start: int, stop: int) -> pl.DataFrame:
    return pl.DataFrame({"i": range(start, stop)}, schema={"i": pl.Int64})


def meta() -> dict[str, str]:
    return {LINEAGE_KEY: Lineage(1, id=new_id()).to_json()}  # each write its own lineage, as in a run


def key(lake: LakeResource) -> str:
    return f"{lake.part_key(T, PART)}/{PART_FILE}"


def figures(n: int) -> tuple[int, int, int]:
    """(rows, distinct rows, sum) of the rows 0..n-1: what a whole snapshot of n rows reads."""
    return n, n, n * (n - 1) // 2


def open_day(lake: LakeResource, deltas: int = 3) -> int:
    """A base of 2 chunks plus `deltas` one-chunk deltas; the snapshot's rows."""
    lake.store.write(key(lake), rows(0, 2 * CHUNK), meta())
    for k in range(deltas):
        lake.store.append(key(lake), rows((2 + k) * CHUNK, (3 + k) * CHUNK), meta())
    return (2 + deltas) * CHUNK


def compact(lake: LakeResource, n: int) -> None:
    """The day's compaction: the same rows rewritten as one base."""
    lake.store.write(key(lake), rows(0, n), meta())


def listing(lake: LakeResource) -> dict[str, int]:
    return {PurePath(e.key).name: e.size for e in lake.store.list_folder(lake.part_key(T, PART))}


def test_views_built_before_a_compaction_read_the_old_snapshot_after_it(
    any_lake: LakeResource, tmp_path: Path
) -> None:
    lake = any_lake
    n = open_day(lake)
    old_view = WarehouseResource(path=str(tmp_path / "old.duckdb"))
    assert old_view.refresh_views(lake, [T]).created == (T.view,)
    con = duckdb.connect()  # a session that resolved the file list before the compaction
    if not lake.is_local:
        from crypto_platform.resources.duckdb_s3 import connect_s3

        connect_s3(con, lake.store)  # type: ignore[arg-type]
    con.execute(f"create view snap as select * from {lake.view_source(T)}")
    assert old_view.query(SQL, lake=lake) == [figures(n)]

    compact(lake, n)  # committed: the new base holds the deltas' rows
    lake.store.append(key(lake), rows(n, n + CHUNK), meta())  # and the day goes on
    assert old_view.query(SQL, lake=lake) == [figures(n)]  # exactly the old snapshot, no row twice
    assert con.execute("select count(*), count(distinct i), sum(i) from snap").fetchall() == [figures(n)]

    new_view = WarehouseResource(path=str(tmp_path / "new.duckdb"))
    assert new_view.refresh_views(lake, [T]).created == (T.view,)
    assert new_view.query(SQL, lake=lake) == [figures(n + CHUNK)]
    assert lake.read_partition(T, PART)["i"].to_list() == list(range(n + CHUNK))  # = from scratch
    assert lake.partition_rows(T, PART) == n + CHUNK


def test_the_sweep_waits_for_the_grace_period_and_keeps_every_current_file(any_lake: LakeResource) -> None:
    lake = any_lake
    n = open_day(lake)
    before = set(listing(lake))
    compact(lake, n)
    lake.store.append(key(lake), rows(n, n + CHUNK), meta())
    cur = lake.store.current(key(lake))
    assert lake.sweep(older_than_s=3600, now_s=time.time()).superseded == ()  # readers may be on them
    swept = lake.sweep(older_than_s=60, now_s=time.time() + 3600)
    names = {PurePath(p).name for p in swept.superseded}
    control = {"part.parquet", "part.current.json", "part.deltas.json"}  # plain file, pointer, list
    current = {PurePath(u).name for u in cur.uris}
    assert before - control <= names  # every file of the old snapshot...
    assert set(listing(lake)) == current | (control & set(listing(lake)))  # ...and no current one
    assert lake.read_partition(T, PART)["i"].to_list() == list(range(n + CHUNK))
    assert lake.sweep(older_than_s=60, now_s=time.time() + 3600).superseded == ()  # nothing left to sweep


_KILL = """
import os, sys, json
import polars as pl
from crypto_platform.resources.lake import LakeResource
from crypto_platform.resources.lake.local import LocalStore
from crypto_platform.resources.lake.s3 import S3Store
args = json.loads(sys.argv[1])
die = lambda *a, **k: os._exit(9)  # the process dies at the commit: the new base is written, not named
LocalStore.write_json = die
S3Store._commit_pointer = die
lake = LakeResource(**args["lake"])
lake.store.write(args["key"], pl.DataFrame({"i": range(args["n"])}), {})
"""


def test_a_compaction_killed_before_its_commit_leaves_the_old_snapshot(any_lake: LakeResource) -> None:
    lake = any_lake
    n = open_day(lake)
    before = listing(lake)
    settings = {
        "root": lake.root,
        "s3_endpoint_url": lake.s3_endpoint_url,
        "s3_allow_http": lake.s3_allow_http,
    }
    args = json.dumps({"lake": settings, "key": key(lake), "n": n})
    done = subprocess.run([sys.executable, "-c", _KILL, args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 9, done.stderr
    orphans = set(listing(lake)) - set(before)
    assert orphans and all(not o.startswith("part.parquet") for o in orphans)  # the new base, unnamed
    assert {k: v for k, v in listing(lake).items() if k in before} == before  # nothing rewritten
    assert lake.delta_count(T, PART) == 3
    assert lake.read_partition(T, PART)["i"].to_list() == list(range(n))
    assert lake.sweep(older_than_s=3600, now_s=time.time()).superseded == ()  # young: could be a write
    swept = lake.sweep(older_than_s=60, now_s=time.time() + 3600)
    assert {PurePath(p).name for p in (*swept.superseded, *swept.temp_files)} == orphans
    assert listing(lake) == before
    compact(lake, n)  # the next compaction commits
    assert lake.delta_count(T, PART) == 0 and lake.read_partition(T, PART)["i"].to_list() == list(range(n))


def test_an_older_folder_lake_is_read_and_migrated(tmp_path: Path) -> None:
    """A lake written before snapshots: a plain base and a list naming it by its footer's digest."""
    lake = LakeResource(root=str(tmp_path / "lake"))
    lake.store.write(key(lake), rows(0, CHUNK), meta())
    folder = lake.partition_path(T, PART)
    rows(CHUNK, 2 * CHUNK).write_parquet(folder / "part.d000001-0000abcd.parquet")
    footer = pl.read_parquet_metadata(folder / PART_FILE)
    digest = hashlib.sha256(json.dumps(sorted(footer.items())).encode()).hexdigest()[:24]
    legacy = {"base": digest, "deltas": [{"file": "part.d000001-0000abcd.parquet"}], "rows": 2 * CHUNK}
    (folder / "part.deltas.json").write_text(json.dumps({**legacy, "metadata": footer}))
    assert lake.read_partition(T, PART)["i"].to_list() == list(range(2 * CHUNK))
    view = WarehouseResource(path=str(tmp_path / "w.duckdb"))
    view.refresh_views(lake, [T])
    assert view.query(SQL) == [figures(2 * CHUNK)]

    lake.store.append(key(lake), rows(2 * CHUNK, 3 * CHUNK), meta())  # migrated: the base by its own name
    cur = lake.store.current(key(lake))
    assert PurePath(cur.uri).name.startswith("part.b") and len(cur.deltas) == 2
    assert lake.read_partition(T, PART)["i"].to_list() == list(range(3 * CHUNK))
    compact(lake, 3 * CHUNK)
    assert not (folder / "part.deltas.json").exists()  # settled: one plain file again
    assert lake.store.current(key(lake)).uris == [str(folder / PART_FILE)]
    assert pl.read_parquet(folder / PART_FILE)["i"].to_list() == list(range(3 * CHUNK))
    assert os.stat(folder / PART_FILE).st_size == listing(lake)[PART_FILE]


def test_a_session_resolving_lists_while_ticks_and_compactions_commit_sees_whole_snapshots(
    tmp_path: Path,
) -> None:
    """Another reader resolves the file list, waits, then queries DuckDB, while a writer appends and
    compacts: every answer is one whole snapshot (n rows, each once), never older than the one before."""
    lake = LakeResource(root=str(tmp_path / "lake"))
    n = open_day(lake, deltas=1)
    done, answers, bad = threading.Event(), [], []

    def read() -> None:
        con, last = duckdb.connect(), 0
        while not done.is_set():
            source = lake.view_source(T)
            time.sleep(0.01)  # the window between resolving the list and reading it
            [(count, distinct, total)] = con.execute(
                f"select count(*), count(distinct i), sum(i) from {source}"
            ).fetchall()
            if (count, distinct, total) != figures(count) or count % CHUNK or count < last:
                bad.append((count, distinct))
            last = count
            answers.append(count)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(8):
            for _ in range(2):
                lake.store.append(key(lake), rows(n, n + CHUNK), meta())
                n += CHUNK
                read_since(answers, len(answers))
            compact(lake, n)
            read_since(answers, len(answers))
    finally:
        done.set()
        reader.join()
    assert not bad, f"partial or doubled snapshots: {bad[:5]}"
    assert len(set(answers)) > 3, answers  # the reader saw the day grow
    assert answers[-1] == n
    assert lake.read_partition(T, PART)["i"].to_list() == list(range(n))


def read_since(answers: list[int], seen: int, timeout_s: float = 10.0) -> None:
    """Wait until the reader answered once more (so reads interleave with every commit, under load)."""
    deadline = time.monotonic() + timeout_s
    while len(answers) <= seen and time.monotonic() < deadline:
        time.sleep(0.001)


def test_the_warehouse_view_of_an_open_days_bronze_keeps_its_snapshot_across_the_settling_compaction(
    tmp_path: Path,
) -> None:
    """The real path: synthetic trades, live ticks appended as deltas, the warehouse's bronze view
    built, then the day settles and is compacted: the view reads the ticks' trades once each until it
    is refreshed, then the whole day, as DuckDB counts the committed raw trades."""
    lake = LakeResource(root=str(tmp_path / "lake"))
    source = TradeSourcesResource(now=(PART.end + timedelta(hours=1)).isoformat()).source_for(PART.instrument)
    minute = timedelta(minutes=1)
    for k in range(3):
        start, end = PART.start + k * 2 * minute, PART.start + (k + 1) * 2 * minute
        commit_batch(lake, PART, source.fetch(PART.instrument, start, end), end)
        result, _, _ = derive_bronze(lake, PART)
    assert result.mode == INCREMENTAL and lake.delta_count(tables.BRONZE_TRADES, PART) == 2
    warehouse = WarehouseResource(path=str(tmp_path / "warehouse.duckdb"))
    warehouse.refresh_views(lake, [tables.BRONZE_TRADES])
    sql = "select count(*), count(distinct trade_id), round(sum(amount), 6) from bronze.trades"
    [ticks] = warehouse.query(sql)

    tail = source.fetch(PART.instrument, PART.start + 6 * minute, PART.start + 8 * minute)
    commit_batch(lake, PART, replace(tail, covered_to=PART.end), PART.end)  # the day's tail: settled
    result, _, _ = derive_bronze(lake, PART)
    assert result.mode == COMPACTED and lake.delta_count(tables.BRONZE_TRADES, PART) == 0
    assert warehouse.query(sql) == [ticks]  # the view built before: exactly its snapshot
    raw = lake.partition_path(tables.RAW_TRADES, PART)
    batches = [f"{raw}/{n}.parquet" for n in lake.read_manifest(tables.RAW_TRADES, PART).names]
    [want] = duckdb.sql(
        f"select count(distinct trade_id), count(distinct trade_id), round(sum(amount), 6) "
        f"from (select distinct trade_id, amount from read_parquet({batches}))"
    ).fetchall()
    assert ticks[0] == ticks[1] < want[0]
    warehouse.refresh_views(lake, [tables.BRONZE_TRADES])
    assert warehouse.query(sql) == [want]  # refreshed: the whole day, each trade once
