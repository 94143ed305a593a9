"""The lake's storage interface: durable, atomic files under one root, addressed by relative keys.

A key is a POSIX path relative to the lake root (`silver/candles_1m/instrument=K/date=D/part.parquet`).
Two kinds of files: *replaced* files (a partition's `part.parquet`, a single table's `<name>.parquet`,
a raw manifest), whose readers always see one whole committed version, and *immutable* files (raw
batches), written once under a new name. A replaced Parquet file's version may be a base plus
appended *delta* files (an open day's ticks, `append`): the delta list is committed as atomically as
the base (a reader sees a whole append or none of it), and the next `write` replaces base and deltas.
A version with deltas is a snapshot: the files it names are never rewritten, and a `write` over it
names a new base, so a reader holding a `Current` (or a DuckDB view built from its `uris`) reads that
version exactly, however many writes follow, until `sweep` removes its superseded files.
`LocalStore` (a folder: temp file + rename, an fcntl lock per partition; deltas listed by a JSON
document naming the base they extend by its own file name) and `S3Store` (an object store: every
version a new object, committed by a conditional PUT of a small pointer that also lists the deltas)
implement it;
`LakeResource` maps tables and partitions to keys on top of it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

import polars as pl

from crypto_platform.resources.lake.model import ANY, Expect, SweepReport, WriteInfo


@dataclass(frozen=True)
class Current:
    """The committed version of a replaced file: where to read it (its base `uri` and the `deltas`
    appended to it, in order), the token a conditional commit expects (ANY on a store whose commits
    are serialised by `exclusive`), its stored metadata (None: read it from the Parquet footer) and
    its rows when the store recorded them."""

    key: str
    uri: str
    token: str = ANY
    metadata: dict[str, str] | None = None
    deltas: tuple[str, ...] = ()
    rows: int | None = None

    @property
    def uris(self) -> list[str]:
        """Every file of this version: the base, then its deltas."""
        return [self.uri, *self.deltas]


@dataclass(frozen=True)
class Entry:
    """One stored file (a listing): key, size in bytes, last modified (epoch seconds)."""

    key: str
    size: int
    mtime: float


class LakeStore(ABC):
    """Atomic files under one root (see the module docstring)."""

    storage_options: dict[str, str] | None = None  # what polars needs to read `uri`s (None: local)

    @abstractmethod
    def where(self, key: str) -> str:
        """The path or URL naming a key (messages, metadata)."""

    @abstractmethod
    def file_label(self, key: str) -> PurePath:
        """A key as a path object (a local Path; on an object store `bucket/prefix/key`)."""

    # -- replaced files ----------------------------------------------------------------------------
    @abstractmethod
    def current(self, key: str) -> Current | None:
        """The committed version of a replaced file, or None if it was never written."""

    def currents(self, keys: list[str]) -> list[Current]:
        """The committed versions of several replaced files (those that exist), in key order."""
        return [c for k in keys if (c := self.current(k)) is not None]

    @abstractmethod
    def committed_keys(self, prefix: str, pattern: str) -> list[str]:
        """Sorted keys under `prefix` (a folder key) of replaced files that have a committed version,
        matching `pattern` (a glob relative to the prefix, e.g. 'instrument=*/date=*/part.parquet')."""

    @abstractmethod
    def write(
        self, key: str, df: pl.DataFrame, metadata: dict[str, str] | None = None, expect: Expect = ANY
    ) -> WriteInfo:
        """Commit `df` as the new version of a replaced file, atomically for readers. `expect` is the
        token of the version it must replace (None: none may exist); else CommitConflict."""

    @abstractmethod
    def append(
        self, key: str, df: pl.DataFrame, metadata: dict[str, str] | None = None, expect: Expect = ANY
    ) -> WriteInfo:
        """Commit `df` as a delta appended to the current version of a replaced file (which must exist),
        atomically for readers, with `metadata` as the version's metadata; `expect` as in `write`. The
        WriteInfo counts the rows of the whole version and the bytes of the delta."""

    @abstractmethod
    def read_with_footer(
        self, key: str, name: str, order: tuple[pl.Expr, ...] = ()
    ) -> tuple[pl.DataFrame | None, str | None]:
        """A replaced file and one key of its metadata, from the same version: the base's rows, then
        each delta's, sorted by `order` when there are deltas (a base is stored in that order)."""

    # -- immutable files ---------------------------------------------------------------------------
    @abstractmethod
    def uri(self, key: str) -> str:
        """Where polars reads an immutable file."""

    @abstractmethod
    def write_new(self, key: str, df: pl.DataFrame) -> WriteInfo:
        """Write an immutable file (whole or not at all)."""

    @abstractmethod
    def list_folder(self, prefix: str) -> list[Entry]:
        """The files directly in a folder key (none if it does not exist)."""

    # -- small JSON documents (manifests), replaced whole --------------------------------------------
    @abstractmethod
    def read_json(self, key: str) -> tuple[Any, str | None]:
        """(document, token) of a replaced JSON file; (None, None) when there is none."""

    @abstractmethod
    def write_json(self, key: str, data: Any, expect: Expect = ANY) -> None:
        """Replace a JSON file atomically; `expect` as in `write` (else CommitConflict)."""

    # -- concurrency and housekeeping --------------------------------------------------------------
    @abstractmethod
    def exclusive(self, scope: str) -> AbstractContextManager[None]:
        """Serialise read-check-write sequences of one scope where the store needs it (a local lock);
        on a store with conditional commits a no-op (a lost race is a CommitConflict)."""

    @abstractmethod
    def sweep(self, older_than_s: float, now_s: float, raw_prefix: str) -> SweepReport:
        """Remove what no reader can reach any more and was left more than `older_than_s` ago."""

    def read(self, key: str, order: tuple[pl.Expr, ...] = ()) -> pl.DataFrame | None:
        """The committed version of a replaced file (as `read_with_footer`), or None."""
        return self.read_with_footer(key, "", order)[0]
