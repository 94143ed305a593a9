"""The Parquet lake: every lake read and write goes through this one resource.

Layout: `<root>/<layer>/<table>/instrument=<key>/date=<YYYY-MM-DD>/<file>.parquet` (hive style, so
DuckDB and polars can prune by instrument and day). Writes are atomic: a file is written under a
temporary name in the same folder and then renamed over the target, so a reader sees the old file or
the new one, never half of one; re-writing a partition replaces it (idempotent re-runs).
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from crypto_platform.partitions import DayPartition
from crypto_platform.platform_settings import env_name
from crypto_platform.settings import PROJECT_DIR

PART_FILE = "part.parquet"
MANIFEST_FILE = "_manifest.json"
# How every lake file is written. zstd level 1 rather than the default 3: measured on a 6 M-trade
# bronze day, writes ~20% faster (0.58 s vs 0.72 s) for files ~5% larger (95 vs 90 MB); reads are as
# fast. Statistics stay on so DuckDB and polars can skip row groups.
PARQUET_OPTIONS: dict[str, Any] = {"compression": "zstd", "compression_level": 1, "statistics": True}


@dataclass(frozen=True)
class WriteInfo:
    """What one atomic write produced, for materialization metadata."""

    path: str
    rows: int
    bytes: int


class LakeResource(dg.ConfigurableResource):
    """Parquet lake rooted at one place (a local folder by default)."""

    root: str = Field(
        default="data/lake",
        description="Lake root folder; relative paths are resolved against the project directory.",
    )

    @property
    def root_path(self) -> Path:
        """The lake root as a local folder; a URL root is refused rather than taken as a folder name."""
        if "://" in self.root:
            raise ValueError(
                f"lake root {self.root!r} ({env_name('lake_root')} / the lake resource's 'root'): only local "
                "folders are supported so far; object-store roots (s3://...) are not implemented yet, "
                "see docs/deploy.md"
            )
        root = Path(self.root).expanduser()
        return root if root.is_absolute() else PROJECT_DIR / root

    def table_path(self, layer: str, table: str) -> Path:
        """Folder of one table, e.g. <root>/silver/candles_1m."""
        return self.root_path / layer / table

    def partition_path(self, layer: str, table: str, part: DayPartition) -> Path:
        """Folder of one (instrument, day) partition of a table."""
        return self.table_path(layer, table) / f"instrument={part.instrument.key}" / f"date={part.day}"

    def table_glob(self, layer: str, table: str, *, partitioned: bool = True) -> str:
        """Glob matching every data file of a table (for DuckDB views and scans)."""
        pattern = f"instrument=*/date=*/{PART_FILE}" if partitioned else "*.parquet"
        return str(self.table_path(layer, table) / pattern)

    # -- whole-partition tables (bronze, silver, gold) -------------------------------------------
    def write_partition(self, df: pl.DataFrame, layer: str, table: str, part: DayPartition) -> WriteInfo:
        """Atomically replace one partition of a table with `df`."""
        return self._write_parquet(df, self.partition_path(layer, table, part) / PART_FILE)

    def read_partition(self, layer: str, table: str, part: DayPartition) -> pl.DataFrame | None:
        """One partition of a table, or None if it was never written."""
        path = self.partition_path(layer, table, part) / PART_FILE
        return pl.read_parquet(path) if path.exists() else None

    def partition_max(self, layer: str, table: str, part: DayPartition, column: str) -> Any:
        """Largest value of one column of a partition (None if never written or empty); reads that column."""
        path = self.partition_path(layer, table, part) / PART_FILE
        return pl.scan_parquet(path).select(pl.col(column).max()).collect().item() if path.exists() else None

    def has_partition(self, layer: str, table: str, part: DayPartition) -> bool:
        return (self.partition_path(layer, table, part) / PART_FILE).exists()

    def scan_table(self, layer: str, table: str, *, partitioned: bool = True) -> pl.LazyFrame | None:
        """Lazy scan over all data files of a table (None when it has none yet)."""
        pattern = f"instrument=*/date=*/{PART_FILE}" if partitioned else "*.parquet"
        files = sorted(self.table_path(layer, table).glob(pattern))
        if not files:
            return None
        return pl.scan_parquet(files, hive_partitioning=False)

    def read_partitions(self, layer: str, table: str, parts: list[DayPartition]) -> pl.DataFrame | None:
        """Concatenation of the given partitions that exist (None if none does)."""
        frames = [df for p in parts if (df := self.read_partition(layer, table, p)) is not None]
        return pl.concat(frames, how="vertical") if frames else None

    # -- unpartitioned tables (training sets, model evaluations) ---------------------------------
    def write_table(self, df: pl.DataFrame, layer: str, table: str, name: str = "part") -> WriteInfo:
        """Atomically write one file of an unpartitioned table (`<table>/<name>.parquet`)."""
        return self._write_parquet(df, self.table_path(layer, table) / f"{name}.parquet")

    def read_table(self, layer: str, table: str, name: str = "part") -> pl.DataFrame | None:
        """One file of an unpartitioned table, or None."""
        path = self.table_path(layer, table) / f"{name}.parquet"
        return pl.read_parquet(path) if path.exists() else None

    # -- append-only tables (raw) ----------------------------------------------------------------
    def write_batch(
        self, df: pl.DataFrame, layer: str, table: str, part: DayPartition, name: str
    ) -> WriteInfo:
        """Atomically write one immutable batch file of an append-only partition."""
        return self._write_parquet(df, self.partition_path(layer, table, part) / f"{name}.parquet")

    def read_batches(
        self, layer: str, table: str, part: DayPartition, names: list[str]
    ) -> list[pl.DataFrame]:
        """Read the named batch files of an append-only partition (listed by its manifest)."""
        folder = self.partition_path(layer, table, part)
        return [pl.read_parquet(folder / f"{n}.parquet") for n in names]

    def scan_batches(
        self, layer: str, table: str, part: DayPartition, names: list[str]
    ) -> pl.LazyFrame | None:
        """Lazy scan of the named batch files (None if there are none): columns are read only as needed."""
        folder = self.partition_path(layer, table, part)
        return pl.scan_parquet([folder / f"{n}.parquet" for n in names]) if names else None

    def read_manifest(self, layer: str, table: str, part: DayPartition) -> dict[str, Any] | None:
        """The partition's manifest (the list of committed batches), or None."""
        path = self.partition_path(layer, table, part) / MANIFEST_FILE
        return json.loads(path.read_text()) if path.exists() else None

    def write_manifest(self, manifest: dict[str, Any], layer: str, table: str, part: DayPartition) -> None:
        """Atomically replace the partition's manifest: the commit point of an append."""
        path = self.partition_path(layer, table, part) / MANIFEST_FILE
        data = json.dumps(manifest, indent=1, sort_keys=True).encode()
        with self._temp_for(path) as tmp:
            tmp.write_bytes(data)
            os.replace(tmp, path)

    # -- internals -------------------------------------------------------------------------------
    def _write_parquet(self, df: pl.DataFrame, path: Path) -> WriteInfo:
        with self._temp_for(path) as tmp:
            df.write_parquet(tmp, **PARQUET_OPTIONS)
            os.replace(tmp, path)
        return WriteInfo(path=str(path), rows=df.height, bytes=path.stat().st_size)

    @staticmethod
    def _temp_for(path: Path) -> _TempFile:
        path.parent.mkdir(parents=True, exist_ok=True)
        return _TempFile(path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp")


class _TempFile:
    """A temporary sibling file that is removed if the write fails before its rename."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)
