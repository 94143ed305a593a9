"""The Parquet lake: every lake read and write goes through this one resource.

Layout: `<root>/<layer>/<table>/instrument=<key>/date=<YYYY-MM-DD>/<file>.parquet` (hive style, so
DuckDB and polars can prune by instrument and day). The root is a local folder or an `s3://` URL; the
store behind it (`local.LocalStore`, `s3.S3Store`) makes every write atomic for readers (a reader sees
the old version or the new one, never half or a mix of both) and re-writing a partition replaces it
(idempotent re-runs). Read-check-write sequences (raw appends, derived commits) are serialised by a
lock (local) or committed by a conditional write that a concurrent writer makes fail (S3), and then
re-read and retried: either way no committed batch is lost or duplicated. An open day's tick may
append its rows to a partition as a delta (`commit_derived(..., append=True)`) instead of rewriting it:
every read here sees base + deltas as one table (in the table's `order`), never part of a tick; the
next whole write (the day's compaction) replaces base and deltas by a new base, without rewriting any
file the old version named (a reader of the old file list reads the old snapshot: `store.py`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from crypto_platform.partitions import DayPartition
from crypto_platform.platform_settings import PlatformSettings, env_name
from crypto_platform.resources.lake.local import LocalStore
from crypto_platform.resources.lake.model import (
    LINEAGE_KEY,
    PART_FILE,
    READ_ERRORS,
    CommitConflict,
    Lineage,
    SweepReport,
    WriteInfo,
    expect_layout,
    read_error,
)
from crypto_platform.resources.lake.raw import RawBatches
from crypto_platform.resources.lake.store import Current, LakeStore
from crypto_platform.settings import PROJECT_DIR, Instrument
from crypto_platform.tables import RAW_TRADES as RAW_TRADES_TABLE
from crypto_platform.tables import Layout, Table

_DATE_DIR = re.compile(r"date=(\d{4}-\d{2}-\d{2})/")
_STORES: dict[tuple, LakeStore] = {}  # one store (one S3 client) per process and configuration


class LakeResource(RawBatches, dg.ConfigurableResource):
    """Parquet lake rooted at one place: a local folder (the default) or an S3 bucket and prefix."""

    root: str = Field(
        default="data/lake",
        description="Lake root: a folder (relative paths are resolved against the project directory) "
        "or s3://<bucket>/<prefix>.",
    )
    s3_endpoint_url: str = Field(
        default="", description="S3 endpoint of an s3:// root (empty: AWS, by the region of the AWS chain)."
    )
    s3_allow_http: bool = Field(
        default=False, description="Allow a plain http:// S3 endpoint (test servers)."
    )

    @property
    def store(self) -> LakeStore:
        """The store of this root (built once per process)."""
        key = (os.getpid(), self.root, self.s3_endpoint_url, self.s3_allow_http)
        if key not in _STORES:
            if self.root.startswith("s3://"):
                from crypto_platform.resources.lake.s3 import S3Store  # boto3: only for s3:// roots

                _STORES[key] = S3Store(self.root, self.s3_endpoint_url, self.s3_allow_http)
            else:
                _STORES[key] = LocalStore(self.root_path)
        return _STORES[key]

    @property
    def is_local(self) -> bool:
        return "://" not in self.root

    @property
    def root_path(self) -> Path:
        """The lake root as a local folder; a URL root is refused rather than taken as a folder name."""
        if not self.is_local:
            supported = (
                "s3:// roots are read through the lake resource only"
                if self.root.startswith("s3://")
                else "the lake root is a folder or s3://<bucket>/<prefix>"
            )
            raise ValueError(
                f"lake root {self.root!r} ({env_name('lake_root')} / the lake resource's 'root') is not a "
                f"local folder: {supported}; see docs/deploy.md"
            )
        root = Path(self.root).expanduser()
        return root if root.is_absolute() else PROJECT_DIR / root

    # -- where things are --------------------------------------------------------------------------
    @staticmethod
    def table_key(table: Table) -> str:
        return f"{table.layer}/{table.name}"

    def part_key(self, table: Table, part: DayPartition) -> str:
        return f"{self.table_key(table)}/instrument={part.instrument.key}/date={part.day}"

    def table_path(self, table: Table) -> Path:
        """Folder of one table, e.g. <root>/silver/candles_1m (local roots only)."""
        return self.root_path / self.table_key(table)

    def partition_path(self, table: Table, part: DayPartition) -> Path:
        """Folder of one (instrument, day) partition of a table (local roots only)."""
        return self.root_path / self.part_key(table, part)

    def table_glob(self, table: Table) -> str:
        """Glob matching every data file of a table (local roots only: for DuckDB views and scans)."""
        return str(self.table_path(table) / _pattern(table))

    def table_files(self, table: Table) -> list[str]:
        """Where the committed data file of every partition (or named file) of a table is, sorted."""
        keys = self.store.committed_keys(self.table_key(table), _pattern(table))
        return [uri for c in self.store.currents(keys) for uri in c.uris]

    def view_source(self, table: Table) -> str | None:
        """The DuckDB table function reading a table's committed data (None: no data yet): a glob over
        a local lake (new partitions appear by themselves); on S3, or when a partition's version is a
        list (an open day's base and deltas: a glob would read the plain file only), the explicit list
        of the current files, a snapshot that a later compaction never changes (rebuild it after each
        write)."""
        keys = self.store.committed_keys(self.table_key(table), _pattern(table))
        currents = self.store.currents(keys)
        if not currents:
            return None
        if self.is_local and all(c.uri == self.store.uri(c.key) and not c.deltas for c in currents):
            files = "'" + self.table_glob(table).replace("'", "''") + "'"
        else:
            uris = [u for c in currents for u in c.uris]
            files = "[" + ", ".join("'" + u.replace("'", "''") + "'" for u in uris) + "]"
        hive = str(table.partitioned).lower()
        return f"read_parquet({files}, hive_partitioning = {hive}, union_by_name = true)"

    def stored_days(self, table: Table, instrument: Instrument) -> list[date]:
        """Days of a partitioned table that hold a data file for the instrument, oldest first."""
        prefix = f"{self.table_key(table)}/instrument={instrument.key}"
        keys = self.store.committed_keys(prefix, f"date=*/{PART_FILE}")
        return sorted(date.fromisoformat(m.group(1)) for k in keys if (m := _DATE_DIR.search(k)))

    def newest_parts(self, table: Table, instrument: Instrument, days: int) -> list[DayPartition]:
        """The instrument's newest `days` stored partitions of a table (fewer if it has fewer)."""
        stored = self.stored_days(table, instrument)
        return [DayPartition(instrument, d) for d in stored[-days:]] if days > 0 else []

    def includes_newest(self, table: Table, parts: Iterable[DayPartition]) -> bool:
        """Whether any of these cells is its instrument's newest stored day of the table."""
        newest: dict[str, date | None] = {}
        for p in parts:
            if p.instrument.key not in newest:
                stored = self.stored_days(table, p.instrument)
                newest[p.instrument.key] = stored[-1] if stored else None
            last = newest[p.instrument.key]
            if last is None or p.day >= last:
                return True
        return False

    # -- whole-partition tables (bronze, silver, gold) -------------------------------------------
    def write_partition(self, df: pl.DataFrame, table: Table, part: DayPartition) -> WriteInfo:
        """Atomically replace one partition of a table with `df`."""
        expect_layout(table, Layout.DAILY)
        return self.store.write(f"{self.part_key(table, part)}/{PART_FILE}", df)

    def read_partition(self, table: Table, part: DayPartition) -> pl.DataFrame | None:
        """One partition of a table (base + deltas, in the table's order), or None if never written."""
        return self._read(f"{self.part_key(table, part)}/{PART_FILE}", table, part)

    def partition_max(self, table: Table, part: DayPartition, column: str) -> Any:
        """Largest value of one column of a partition (None if never written or empty); reads that column."""
        found = self.scan_partition(table, part)
        if found is None:
            return None
        try:
            return found[0].select(pl.col(column).max()).collect().item()
        except READ_ERRORS as exc:
            raise read_error(found[1].uri, table, part, exc) from exc

    def scan_partition(self, table: Table, part: DayPartition) -> tuple[pl.LazyFrame, Current] | None:
        """A lazy scan of one committed version of a partition (base, then deltas: not re-sorted) and
        that version; None if never written. Columns and row groups are read only as the query needs."""
        cur = self.store.current(f"{self.part_key(table, part)}/{PART_FILE}")
        if cur is None:
            return None
        return pl.scan_parquet(cur.uris, storage_options=self.store.storage_options), cur

    def partition_rows(self, table: Table, part: DayPartition) -> int:
        """Rows of a partition (0 if never written), from the stored counts or the Parquet footers."""
        found = self.scan_partition(table, part)
        if found is None:
            return 0
        if found[1].rows is not None:
            return found[1].rows
        return found[0].select(pl.len()).collect().item()

    def delta_count(self, table: Table, part: DayPartition) -> int:
        """How many deltas the partition's current version has on top of its base."""
        cur = self.store.current(f"{self.part_key(table, part)}/{PART_FILE}")
        return len(cur.deltas) if cur is not None else 0

    def has_partition(self, table: Table, part: DayPartition) -> bool:
        return self.store.current(f"{self.part_key(table, part)}/{PART_FILE}") is not None

    def scan_table(self, table: Table) -> pl.LazyFrame | None:
        """Lazy scan over all data files of a table (None when it has none yet)."""
        files = self.table_files(table)
        if not files:
            return None
        return pl.scan_parquet(files, hive_partitioning=False, storage_options=self.store.storage_options)

    def read_partitions(self, table: Table, parts: list[DayPartition]) -> pl.DataFrame | None:
        """Concatenation of the given partitions that exist (None if none does)."""
        frames = [df for p in parts if (df := self.read_partition(table, p)) is not None]
        return pl.concat(frames, how="vertical") if frames else None

    def read_with_lineage(
        self, table: Table, part: DayPartition
    ) -> tuple[pl.DataFrame | None, Lineage | None]:
        """A partition and its lineage, read from one version (a concurrent replace cannot mix them)."""
        key = f"{self.part_key(table, part)}/{PART_FILE}"
        try:
            df, text = self.store.read_with_footer(key, LINEAGE_KEY, table.order)
        except READ_ERRORS as exc:
            raise read_error(self.store.where(key), table, part, exc) from exc
        return df, (Lineage.from_json(text) if text else None)

    def read_lineage(self, table: Table, part: DayPartition) -> Lineage | None:
        """The lineage stored with a derived partition (None: never written, or written without one)."""
        return self._lineage(table, part)[0]

    def commit_derived(
        self,
        frames: dict[Table, pl.DataFrame],
        part: DayPartition,
        lineage: Lineage,
        *,
        inputs_current: Callable[[], bool],
        append: bool = False,
    ) -> list[WriteInfo] | None:
        """Replace partitions derived from one input version (or, `append`, add `frames` to them as a
        delta each), only while that version is still current and no result of a newer version is
        stored (optimistic concurrency: under the partition lock on a local root, by conditional
        commits on S3); a delta only while the stored version is the one it extends (`lineage.base`).
        An appended delta's WriteInfo counts the partition's rows and the delta's bytes.

        Returns None when the inputs moved on or a newer result won: the caller re-reads and retries.
        """
        with self.partition_lock(part):
            if not inputs_current():
                return None
            tokens = {}
            for table in frames:
                stored, tokens[table] = self._lineage(table, part)
                if stored is not None and stored.input_version > lineage.input_version:
                    return None
                if append and (stored is None or stored.id != lineage.base):
                    return None  # a delta only on top of the very version it extends
            meta = {LINEAGE_KEY: lineage.to_json()}
            commit = self.store.append if append else self.store.write
            try:
                return [
                    commit(f"{self.part_key(t, part)}/{PART_FILE}", df, meta, expect=tokens[t])
                    for t, df in frames.items()
                ]
            except CommitConflict:
                return None

    def partition_lock(self, part: DayPartition) -> AbstractContextManager[None]:
        """Exclusive lock of one (instrument, day) across processes on this host (local roots): read-
        check-write sequences of two runs never interleave. On S3 a no-op: commits are conditional."""
        return self.store.exclusive(f"{part.instrument.key}/{part.day}")

    # -- unpartitioned tables (training sets, model evaluations) ---------------------------------
    def write_table(self, df: pl.DataFrame, table: Table, name: str = "part") -> WriteInfo:
        """Atomically write one file of an unpartitioned table (`<table>/<name>.parquet`)."""
        expect_layout(table, Layout.SINGLE)
        return self.store.write(f"{self.table_key(table)}/{name}.parquet", df)

    def read_table(self, table: Table, name: str = "part") -> pl.DataFrame | None:
        """One file of an unpartitioned table, or None."""
        return self._read(f"{self.table_key(table)}/{name}.parquet", table, None)

    # -- housekeeping ----------------------------------------------------------------------------
    def sweep(self, older_than_s: float, now_s: float) -> SweepReport:
        """Remove temp files of killed writes, uncommitted raw batch files and (S3) superseded file
        versions left more than `older_than_s` seconds before `now_s` (younger ones may belong to a
        write in progress or a read of the version just replaced)."""
        return self.store.sweep(older_than_s, now_s, self.table_key(RAW_TRADES_TABLE))

    # -- internals -------------------------------------------------------------------------------
    def _read(self, key: str, table: Table, part: DayPartition | None) -> pl.DataFrame | None:
        try:
            return self.store.read(key, table.order)
        except READ_ERRORS as exc:
            raise read_error(self.store.where(key), table, part, exc) from exc

    def _lineage(self, table: Table, part: DayPartition) -> tuple[Lineage | None, str | None]:
        """(stored lineage, the commit token of the version it belongs to); (None, None) if none."""
        cur = self.store.current(f"{self.part_key(table, part)}/{PART_FILE}")
        if cur is None:
            return None, None
        try:
            meta = cur.metadata if cur.metadata is not None else pl.read_parquet_metadata(cur.uri)
        except READ_ERRORS as exc:
            raise read_error(cur.uri, table, part, exc) from exc
        text = meta.get(LINEAGE_KEY)
        return (Lineage.from_json(text) if text else None), cur.token


def lake_resource(settings: PlatformSettings) -> LakeResource:
    """The lake of these settings (root and S3 endpoint; S3 credentials come from the AWS chain)."""
    return LakeResource(
        root=settings.lake_root,
        s3_endpoint_url=settings.s3_endpoint_url,
        s3_allow_http=settings.s3_allow_http,
    )


def _pattern(table: Table) -> str:
    return f"instrument=*/date=*/{PART_FILE}" if table.partitioned else "*.parquet"
