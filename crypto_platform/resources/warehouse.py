"""The DuckDB warehouse: the SQL face of the lake, as views over the Parquet tables.

The DuckDB file holds only views (no data), so pipelines never write through DuckDB's single-writer
lock: runs write Parquet, and the views (globs over partition files) see each new partition at once.
A view therefore only needs (re)creating when it is missing or its definition changed, so a refresh
checks first and writes only then:

1. a stamp next to the file (`<file>.views.json`: each view's definition digest, as last read from
   the file, and the file's identity) answers "all current" without opening DuckDB at all, even
   while another process holds the file read-write (an interactive `duckdb data/warehouse.duckdb`);
2. else a read-only connection reads the digests stored in the views' comments (read-only
   connections share the file with other readers);
3. only missing or changed views are (re)created, through a read-write connection. If another
   process holds the file, the refresh is deferred, not failed: the lake write already succeeded and
   the next refresh creates the view. `ViewRefresh` says which happened, for the run's metadata.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
from pydantic import Field

from crypto_platform.resources.lake import LakeResource
from crypto_platform.settings import PROJECT_DIR
from crypto_platform.tables import Table

# Written in a format the `duckdb` CLI (duckdb-cli 1.5) can open too.
STORAGE_COMPATIBILITY = "v1.5.0"
WAREHOUSE_ENV = "CRYPTO_WAREHOUSE_PATH"
# A view's comment holds the digest of the statement that created it (how a refresh sees a change).
_COMMENT_PREFIX = "crypto_platform:"


@dataclass(frozen=True)
class ViewRefresh:
    """What one refresh did: views (re)created, already current, or deferred (file held elsewhere)."""

    created: tuple[str, ...] = ()
    current: tuple[str, ...] = ()
    deferred: tuple[str, ...] = ()
    reason: str = ""

    @property
    def metadata(self) -> dict[str, str]:
        """Materialization metadata: the views' state, plus a warning when the refresh was deferred."""
        parts = [
            f"{', '.join(names)}: {what}"
            for names, what in (
                (self.created, "created"),
                (self.current, "up to date"),
                (self.deferred, "deferred"),
            )
            if names
        ]
        meta = {"warehouse_views": "; ".join(parts) or "no view (no table has data yet)"}
        if self.deferred:
            meta["warehouse_warning"] = self.reason
        return meta


class WarehouseLockedError(RuntimeError):
    """Another process holds the DuckDB file, so views cannot be written now."""


class WarehouseResource(dg.ConfigurableResource):
    """DuckDB file with one view per lake table, e.g. `silver.candles_1m`."""

    path: str = Field(
        default="data/warehouse.duckdb",
        description="DuckDB file; relative paths are resolved against the project directory.",
    )
    lock_timeout_s: float = Field(
        default=3.0,
        description="How long a refresh that must write views waits for the DuckDB file lock (the "
        "platform's own refreshes hold it for milliseconds); then the refresh is deferred.",
    )

    @property
    def file(self) -> Path:
        p = Path(self.path).expanduser()
        return p if p.is_absolute() else PROJECT_DIR / p

    @property
    def stamp_file(self) -> Path:
        return self.file.with_name(self.file.name + ".views.json")

    def refresh_views(self, lake: LakeResource, views: list[Table]) -> ViewRefresh:
        """Create the views (`<layer>.<name>`) of these lake tables that have data and are missing or
        defined differently.

        Never fails because another process holds the file: the refresh is deferred (logged as a
        warning and reported in the returned `ViewRefresh`), and the next refresh catches up.
        """
        wanted: dict[str, str] = {}
        for v in views:
            if v.view is None or lake.scan_table(v) is None:
                continue
            glob = lake.table_glob(v).replace("'", "''")
            wanted[v.view] = (
                f"create or replace view {v.view} as select * from read_parquet("
                f"'{glob}', hive_partitioning = {str(v.partitioned).lower()}, union_by_name = true)"
            )
        if not wanted:
            return ViewRefresh()
        digests = {name: _digest(sql) for name, sql in wanted.items()}
        if self._stamp_current(digests):
            return ViewRefresh(current=tuple(wanted))
        try:
            stored = self._stored_digests()
        except WarehouseLockedError:
            stored = {}  # cannot look: try to write them all (this waits for the lock, then defers)
        todo = [n for n in wanted if stored.get(n) != digests[n]]
        current = tuple(n for n in wanted if n not in todo)
        if not todo:
            self._write_stamp(stored)
            return ViewRefresh(current=current)
        try:
            with self._connect() as con:
                for schema in sorted({n.split(".")[0] for n in todo}):
                    con.execute(f"create schema if not exists {schema}")
                for name in todo:
                    con.execute(wanted[name])
                    con.execute(f"comment on view {name} is '{_COMMENT_PREFIX}{digests[name]}'")
                stored = _read_digests(con)
        except WarehouseLockedError as exc:
            reason = (
                f"warehouse view(s) {', '.join(todo)} not refreshed: {exc}. The lake data is written; "
                "the view is created by the next refresh once the file is free (close the other "
                "session, or open it with `duckdb -readonly`)."
            )
            dg.get_dagster_logger().warning(reason)
            return ViewRefresh(current=current, deferred=tuple(todo), reason=reason)
        self._write_stamp(stored)
        return ViewRefresh(created=tuple(todo), current=current)

    def query(self, sql: str) -> list[tuple]:
        """Run a read-only query over the views and return its rows."""
        con = duckdb.connect(str(self.file), read_only=True)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()

    # -- checks ------------------------------------------------------------------------------------
    def _identity(self) -> list[int] | None:
        """What changes whenever the file's content does: the file's and its WAL's inode/size/mtime."""
        out: list[int] = []
        for p in (self.file, self.file.with_name(self.file.name + ".wal")):
            try:
                s = p.stat()
            except FileNotFoundError:
                if p == self.file:
                    return None
                out += [0, 0, 0]
                continue
            out += [s.st_ino, s.st_size, s.st_mtime_ns]
        return out

    def _stamp_current(self, digests: dict[str, str]) -> bool:
        """Whether the stamp vouches for every wanted view, for the file as it is now."""
        try:
            stamp = json.loads(self.stamp_file.read_text())
        except (OSError, ValueError):
            return False
        identity = self._identity()
        views = stamp.get("views") if isinstance(stamp, dict) else None
        if identity is None or stamp.get("file") != identity or not isinstance(views, dict):
            return False
        return all(views.get(n) == d for n, d in digests.items())

    def _write_stamp(self, stored: dict[str, str]) -> None:
        """Record the digests read from the file with the file's identity (atomic replace)."""
        identity = self._identity()
        if identity is None:
            return
        tmp = self.stamp_file.with_name(f"{self.stamp_file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"file": identity, "views": stored}, sort_keys=True))
        os.replace(tmp, self.stamp_file)

    def _stored_digests(self) -> dict[str, str]:
        """{view: digest} as stored in the file, through a read-only connection ({} if no file)."""
        if not self.file.exists():
            return {}
        try:
            con = duckdb.connect(str(self.file), read_only=True)
        except duckdb.IOException as exc:
            if _is_lock_error(exc):
                raise WarehouseLockedError(_first_line(exc)) from exc
            raise
        try:
            return _read_digests(con)
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
                if not _is_lock_error(exc):
                    raise
                if time.monotonic() > deadline:
                    raise WarehouseLockedError(_first_line(exc)) from exc
                time.sleep(0.25)


def _digest(sql: str) -> str:
    return hashlib.sha256(sql.encode()).hexdigest()[:16]


def _read_digests(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    rows = con.execute(
        "select schema_name || '.' || view_name, comment from duckdb_views() where not internal"
    ).fetchall()
    return {
        name: comment[len(_COMMENT_PREFIX) :]
        for name, comment in rows
        if isinstance(comment, str) and comment.startswith(_COMMENT_PREFIX)
    }


def _is_lock_error(exc: Exception) -> bool:
    return "could not set lock" in str(exc).lower()


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0]
