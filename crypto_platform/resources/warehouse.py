"""The DuckDB warehouse: the SQL face of the lake, as views over the Parquet tables.

The DuckDB file holds only views (no data), so pipelines never write through DuckDB's single-writer
lock: runs write Parquet, and the views (globs over partition files) see each new partition at once.
A refresh only (re)creates view definitions, and tolerates a user holding the file open.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
from pydantic import Field

from crypto_platform.resources.lake import LakeResource
from crypto_platform.settings import PROJECT_DIR

# Written in a format the `duckdb` CLI (duckdb-cli 1.5) can open too.
STORAGE_COMPATIBILITY = "v1.5.0"
WAREHOUSE_ENV = "CRYPTO_WAREHOUSE_PATH"


@dataclass(frozen=True)
class View:
    """A warehouse view `<layer>.<table>` over the lake table `<layer>/<table>`."""

    layer: str
    table: str
    partitioned: bool = True

    @property
    def qualified(self) -> str:
        return f"{self.layer}.{self.table}"


class WarehouseResource(dg.ConfigurableResource):
    """DuckDB file with one view per lake table, e.g. `silver.candles_1m`."""

    path: str = Field(
        default="data/warehouse.duckdb",
        description="DuckDB file; relative paths are resolved against the project directory.",
    )
    lock_timeout_s: float = Field(default=10.0, description="How long to wait for a DuckDB file lock.")

    @property
    def file(self) -> Path:
        p = Path(self.path).expanduser()
        return p if p.is_absolute() else PROJECT_DIR / p

    def refresh_views(self, lake: LakeResource, views: list[View]) -> list[str]:
        """(Re)create the views whose tables have data; returns the qualified names created."""
        statements: list[tuple[str, str]] = []
        for v in views:
            if lake.scan_table(v.layer, v.table, partitioned=v.partitioned) is None:
                continue
            glob = lake.table_glob(v.layer, v.table, partitioned=v.partitioned).replace("'", "''")
            statements.append(
                (
                    v.qualified,
                    f"create or replace view {v.qualified} as select * from read_parquet("
                    f"'{glob}', hive_partitioning = {str(v.partitioned).lower()}, union_by_name = true)",
                )
            )
        if not statements:
            return []
        with self._connect() as con:
            for schema in sorted({v.layer for v in views}):
                con.execute(f"create schema if not exists {schema}")
            for _, sql in statements:
                con.execute(sql)
        return [name for name, _ in statements]

    def query(self, sql: str) -> list[tuple]:
        """Run a read-only query over the views and return its rows."""
        con = duckdb.connect(str(self.file), read_only=True)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()

    def _connect(self) -> duckdb.DuckDBPyConnection:
        self.file.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_s
        while True:
            try:
                return duckdb.connect(
                    str(self.file), config={"storage_compatibility_version": STORAGE_COMPATIBILITY}
                )
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(0.25)
