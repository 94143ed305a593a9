"""The DuckDB warehouse: the SQL face of the lake, as views over the Parquet tables.

The DuckDB file holds only views (no data), so pipelines never write through DuckDB's single-writer
lock: runs write Parquet, and the views (globs over partition files) see each new partition at once.
Over an S3 lake a view lists the current object of every partition instead (a glob would read the
superseded versions too), so it changes, and is re-created, with every write (`LakeResource.view_source`);
its connection loads httpfs offline and a temporary S3 secret (`duckdb_s3`), never stored in the file.
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

The file is written in the storage format of STORAGE_COMPATIBILITY, which the bundled `duckdb` CLI
(duckdb-cli 1.5) reads. The option only applies when a connection creates the file: a file first
created by another DuckDB (a Python `duckdb.connect(path)` session: format v2.0, which the CLI
refuses with "version number 69") keeps its format forever. So the writing connection checks the
format and, when it is newer, rewrites the file (views and comments, it holds no data) in the
compatible one, atomically, under the file's lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
from pydantic import Field

from crypto_platform.resources.duckdb_s3 import connect_s3
from crypto_platform.resources.lake import LakeResource
from crypto_platform.resources.lake.s3 import S3Store
from crypto_platform.settings import PROJECT_DIR
from crypto_platform.tables import Table

# Written in a format the `duckdb` CLI (duckdb-cli 1.5) can open too.
STORAGE_COMPATIBILITY = "v1.5.0"
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
            if v.view is not None and (source := lake.view_source(v)) is not None:
                wanted[v.view] = f"create or replace view {v.view} as select * from {source}"
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
            with self._connect(lake) as con:
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

    def query(self, sql: str, lake: LakeResource | None = None) -> list[tuple]:
        """Run a read-only query over the views and return its rows (`lake`: an S3 lake the views read)."""
        con = duckdb.connect(str(self.file), read_only=True)
        try:
            _reach(con, lake)
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
        """{view: digest} as stored in the file, through a read-only connection ({} if no file, or if
        the file's format is newer than STORAGE_COMPATIBILITY: then every view is written, which
        rewrites the file)."""
        if not self.file.exists():
            return {}
        try:
            con = duckdb.connect(str(self.file), read_only=True)
        except duckdb.IOException as exc:
            if _is_lock_error(exc):
                raise WarehouseLockedError(_first_line(exc)) from exc
            raise
        try:
            return {} if _newer_than_compatible(storage_version(con)) else _read_digests(con)
        finally:
            con.close()

    def _connect(self, lake: LakeResource | None = None) -> duckdb.DuckDBPyConnection:
        """Read-write connection (waiting up to `lock_timeout_s` for the lock) to a file in the
        STORAGE_COMPATIBILITY format: a file in a newer format is rewritten first. A view over an S3
        lake is bound when created (DuckDB reads the files' schemas), so the connection reaches it."""
        self.file.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_s
        while True:
            try:
                con = duckdb.connect(
                    str(self.file), config={"storage_compatibility_version": STORAGE_COMPATIBILITY}
                )
            except duckdb.IOException as exc:
                if not _is_lock_error(exc):
                    raise
                if time.monotonic() > deadline:
                    raise WarehouseLockedError(_first_line(exc)) from exc
                time.sleep(0.25)
                continue
            if not _newer_than_compatible(storage_version(con)):
                return _reach(con, lake)
            self._rewrite_compatible(con)  # then connect again, to the rewritten file

    def _rewrite_compatible(self, con: duckdb.DuckDBPyConnection) -> None:
        """Copy the file's schemas and views into a new file in the compatible format and rename it
        over the file while `con` still holds the lock (readers see the old file or the new one)."""
        tmp = self.file.with_name(f".{self.file.name}.{uuid.uuid4().hex}.tmp")
        try:
            name = con.execute("select current_database()").fetchone()[0]  # type: ignore[index]
            path = str(tmp).replace("'", "''")
            con.execute(f"attach '{path}' as compatible (storage_version '{STORAGE_COMPATIBILITY}')")
            con.execute(f'copy from database "{name}" to compatible')
            con.execute("detach compatible")
            dg.get_dagster_logger().warning(
                f"warehouse {self.file}: its DuckDB storage format is newer than {STORAGE_COMPATIBILITY}, "
                f"which the duckdb CLI cannot open: rewritten in {STORAGE_COMPATIBILITY}"
            )
            os.replace(tmp, self.file)
        finally:
            con.close()
            tmp.unlink(missing_ok=True)


def _reach(con: duckdb.DuckDBPyConnection, lake: LakeResource | None) -> duckdb.DuckDBPyConnection:
    """`con`, able to read `lake` when it is on S3 (httpfs + a temporary secret; nothing to do locally)."""
    if lake is not None and isinstance(lake.store, S3Store):
        connect_s3(con, lake.store)
    return con


def storage_version(con: duckdb.DuckDBPyConnection) -> str:
    """The storage format of the connection's database file, e.g. 'v1.5.0+'."""
    row = con.execute(
        "select tags['storage_version'] from duckdb_databases() where database_name = current_database()"
    ).fetchone()
    return str(row[0]) if row and row[0] is not None else ""


def _newer_than_compatible(version: str) -> bool:
    """Whether a storage version ('v2.0.0+') is newer than STORAGE_COMPATIBILITY (unknown: no)."""
    found, limit = _version_tuple(version), _version_tuple(STORAGE_COMPATIBILITY)
    return found is not None and limit is not None and found > limit


def _version_tuple(version: str) -> tuple[int, ...] | None:
    match = re.match(r"v?(\d+)\.(\d+)\.(\d+)", version)
    return tuple(int(g) for g in match.groups()) if match else None


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
