"""The lake's append-only tables (raw): immutable batch files per partition, committed by an atomic,
versioned manifest (`append_batch`). A mixin of `LakeResource` (resource.py), which provides `store`,
`part_key` and `partition_lock`."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import PurePath

import polars as pl

from crypto_platform.partitions import DayPartition
from crypto_platform.raw_manifest import RawManifest
from crypto_platform.resources.lake.model import (
    MANIFEST_FILE,
    READ_ERRORS,
    CommitConflict,
    WriteInfo,
    expect_layout,
    read_error,
)
from crypto_platform.tables import Layout, Table

APPEND_TRIES = 50  # raw appends re-read the manifest after a lost race (S3) this often


class RawBatches:
    """Reads and commits of append-only (raw) partitions (uses the resource's `store`, `part_key` and
    `partition_lock`)."""

    def write_batch(self, df: pl.DataFrame, table: Table, part: DayPartition, name: str) -> WriteInfo:
        """Write one immutable batch file of an append-only partition (not yet committed)."""
        expect_layout(table, Layout.BATCHES)
        return self.store.write_new(f"{self.part_key(table, part)}/{name}.parquet", df)

    def read_batches(self, table: Table, part: DayPartition, names: list[str]) -> list[pl.DataFrame]:
        """Read the named batch files of an append-only partition (listed by its manifest)."""
        out = []
        for uri in self._batch_uris(table, part, names):
            try:
                out.append(pl.read_parquet(uri, storage_options=self.store.storage_options))
            except READ_ERRORS as exc:
                raise read_error(uri, table, part, exc) from exc
        return out

    def scan_batches(self, table: Table, part: DayPartition, names: list[str]) -> pl.LazyFrame | None:
        """Lazy scan of the named batch files (None if there are none): columns are read only as needed.
        Each file's footer is read now, so a truncated batch is named here rather than failing later."""
        uris = self._batch_uris(table, part, names)
        for uri in uris:
            try:
                pl.read_parquet_metadata(uri, storage_options=self.store.storage_options)
            except READ_ERRORS as exc:
                raise read_error(uri, table, part, exc) from exc
        return pl.scan_parquet(uris, storage_options=self.store.storage_options) if uris else None

    def uncommitted_batches(self, table: Table, part: DayPartition) -> list[PurePath]:
        """Batch files of a partition that its manifest does not list (a fetch killed before its commit,
        or batches replaced by a re-fetch): never read, removed by `sweep`."""
        key = self.part_key(table, part)
        committed = set(self.read_manifest(table, part).names)
        return [
            self.store.file_label(e.key)
            for e in self.store.list_folder(key)
            if e.key.endswith(".parquet") and PurePath(e.key).stem not in committed
        ]

    def read_manifest(self, table: Table, part: DayPartition) -> RawManifest:
        """The partition's committed batches (an empty manifest with `exists=False` if never written)."""
        return RawManifest.from_json(self.store.read_json(f"{self.part_key(table, part)}/{MANIFEST_FILE}")[0])

    def write_manifest(self, manifest: RawManifest, table: Table, part: DayPartition) -> None:
        """Atomically replace the partition's manifest (unconditionally: `append_batch` is the commit
        of a fetch)."""
        expect_layout(table, Layout.BATCHES)
        self.store.write_json(f"{self.part_key(table, part)}/{MANIFEST_FILE}", manifest.to_json())

    def append_batch(
        self,
        df: pl.DataFrame,
        table: Table,
        part: DayPartition,
        name: tuple[str, str],
        commit: Callable[[RawManifest, str, WriteInfo], RawManifest],
    ) -> tuple[RawManifest, WriteInfo]:
        """Write `df` as a new immutable batch and commit it: `commit(manifest, batch name, written)`
        gives the next manifest. `name` is (stem, suffix for a stem already committed). The manifest is
        read and committed under the partition lock (local) or re-read and `commit` re-applied after a
        lost conditional commit (S3): a batch is committed exactly once and no other batch is lost."""
        expect_layout(table, Layout.BATCHES)
        key = f"{self.part_key(table, part)}/{MANIFEST_FILE}"
        written: tuple[str, WriteInfo] | None = None
        with self.partition_lock(part):
            for _ in range(APPEND_TRIES):
                doc, token = self.store.read_json(key)
                manifest = RawManifest.from_json(doc)
                if written is None:
                    written = self._write_new_batch(df, table, part, manifest.unique_name(*name))
                committed = commit(manifest, *written)
                try:
                    self.store.write_json(key, committed.to_json(), expect=token)
                except CommitConflict:
                    continue
                return committed, written[1]
        raise CommitConflict(f"{table} {part.key}: the manifest changed during {APPEND_TRIES} commits")

    def _batch_uris(self, table: Table, part: DayPartition, names: list[str]) -> list[str]:
        return [self.store.uri(f"{self.part_key(table, part)}/{n}.parquet") for n in names]

    def _write_new_batch(
        self, df: pl.DataFrame, table: Table, part: DayPartition, name: str
    ) -> tuple[str, WriteInfo]:
        """Write a batch under `name`, or a unique variant when a concurrent writer took that name."""
        try:
            return name, self.write_batch(df, table, part, name)
        except CommitConflict:
            name = f"{name}-{uuid.uuid4().hex[:8]}"
            return name, self.write_batch(df, table, part, name)
