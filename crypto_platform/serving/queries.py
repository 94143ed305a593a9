"""Read-only DuckDB queries over the gold tables' Parquet files: what the prediction API answers.

Pure functions of a DuckDB connection and lake paths (no HTTP, no cache). The connection is in-memory
and only reads the lake's files, so it never takes the warehouse file's lock (pipelines and their
view refreshes are never blocked by the service) and never writes anything. Files are chosen from the
lake's layout (`LakeResource.partition_path`), so "latest" reads one partition per instrument, not
the whole history.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from crypto_platform import tables
from crypto_platform.partitions import DayPartition
from crypto_platform.resources.lake import PART_FILE, LakeResource
from crypto_platform.settings import Instrument
from crypto_platform.tables import Table

PREDICTION_COLUMNS = (
    "instrument",
    "exchange",
    "symbol",
    "ts",
    "target_ts",
    "horizon",
    "close",
    "predicted_return",
    "implied_price",
    "model_name",
    "model_version",
    "qualified",
    "predicted_at",
)
MINUTE = timedelta(minutes=1)

FileStamp = tuple[str, int, int, int] | None  # (path, inode, size, mtime_ns); None: no file


def connect() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection for reading Parquet (UTC session, one thread per query)."""
    con = duckdb.connect(":memory:", config={"threads": 1})
    con.execute("set TimeZone = 'UTC'")
    return con


def file_stamp(path: Path) -> FileStamp:
    """What changes whenever the file is replaced (lake writes rename a new file over it), or None."""
    try:
        s = path.stat()
    except FileNotFoundError:
        return None
    return (str(path), s.st_ino, s.st_size, s.st_mtime_ns)


def _day_file(lake: LakeResource, table: Table, inst: Instrument, day: date) -> Path:
    return lake.partition_path(table, DayPartition(inst, day)) / PART_FILE


def stored_days(lake: LakeResource, table: Table, inst: Instrument) -> list[date]:
    """Days with a partition folder for the instrument, newest first (from one directory listing)."""
    folder = lake.partition_path(table, DayPartition(inst, date.min)).parent
    try:
        names = [e.name for e in os.scandir(folder)]
    except FileNotFoundError:
        return []
    days = []
    for name in names:
        try:
            days.append(date.fromisoformat(name.removeprefix("date=")))
        except ValueError:
            continue
    return sorted(days, reverse=True)


def stored_files(lake: LakeResource, table: Table, inst: Instrument) -> list[Path]:
    """The instrument's partition files, newest day first (a folder holding only a temp file is skipped)."""
    files = (_day_file(lake, table, inst, d) for d in stored_days(lake, table, inst))
    return [f for f in files if f.exists()]


def newest_file(lake: LakeResource, table: Table, inst: Instrument) -> Path | None:
    """The newest day's partition file of the instrument (existence checked newest first only)."""
    files = (_day_file(lake, table, inst, d) for d in stored_days(lake, table, inst))
    return next((f for f in files if f.exists()), None)


def files_between(
    lake: LakeResource, table: Table, inst: Instrument, start: datetime, end: datetime
) -> list[Path]:
    """Partition files (existing or not) of the UTC days that [start, end) touches, oldest first."""
    first, last = start.date(), (end - timedelta(microseconds=1)).date()
    return [_day_file(lake, table, inst, first + timedelta(days=d)) for d in range((last - first).days + 1)]


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
    cur = con.execute(sql, list(params))
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


_SELECT = f"select {', '.join(PREDICTION_COLUMNS)} from read_parquet(?, hive_partitioning = true)"


def latest_predictions(
    con: duckdb.DuckDBPyConnection, lake: LakeResource, instruments: Sequence[Instrument]
) -> dict[str, dict[str, Any]]:
    """The newest gold/predictions row of each instrument that has one (its newest non-empty partition)."""
    found: dict[str, dict[str, Any]] = {}
    queues = {i.key: stored_files(lake, tables.PREDICTIONS, i) for i in instruments}
    while todo := {k: q.pop(0) for k, q in queues.items() if q and k not in found}:
        files = list(todo.values())
        sql = f"{_SELECT} qualify row_number() over (partition by instrument order by ts desc) = 1"
        for row in _rows(con, sql, [[str(f) for f in files]]):
            found[row["instrument"]] = row
        # an instrument whose newest partition is empty (a day without priced minutes) looks one day back
        queues = {k: q for k, q in queues.items() if k not in found}
    return found


def predictions_between(
    con: duckdb.DuckDBPyConnection, files: Sequence[Path], start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """Prediction rows with start <= ts < end from the given partition files (missing ones skipped)."""
    present = [str(f) for f in files if f.exists()]
    if not present:
        return []
    sql = f"{_SELECT} where ts >= ? and ts < ? order by ts"
    return _rows(con, sql, [present, start, end])


def evaluation_files(lake: LakeResource) -> list[Path]:
    """The gold/model_evaluations files (one per registered model version), in version order."""
    try:
        folder = lake.table_path(tables.MODEL_EVALUATIONS)
        return sorted(Path(e.path) for e in os.scandir(folder) if e.name.endswith(".parquet"))
    except FileNotFoundError:
        return []


def champion_version(con: duckdb.DuckDBPyConnection, files: Sequence[Path]) -> int | None:
    """The newest version the promotion gate promoted (the only way a version becomes champion)."""
    if not files:
        return None
    sql = "select max(model_version) from read_parquet(?, union_by_name = true) where promoted"
    return con.execute(sql, [[str(f) for f in files]]).fetchone()[0]


def model_evaluation(
    con: duckdb.DuckDBPyConnection, files: Sequence[Path], version: int
) -> list[dict[str, Any]]:
    """Every evaluation row of one model version: the model, each baseline (zero, momentum, reversal,
    ridge), then the champion re-scored on the same window."""
    if not files:
        return []
    sql = (
        "select * from read_parquet(?, union_by_name = true) where model_version = ? "
        "order by case forecast when 'model' then 0 when 'zero' then 1 when 'momentum' then 2 "
        "when 'reversal' then 3 when 'ridge' then 4 when 'champion' then 6 else 5 end, forecast"
    )
    return _rows(con, sql, [[str(f) for f in files], version])
