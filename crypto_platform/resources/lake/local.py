"""The lake in a local folder: every write goes to a temporary file in the same folder and is renamed
to its name, so a reader sees the old file or the new one, never half of one; read-check-write
sequences of one partition are serialised by an fcntl lock (one host).

Snapshots of an open day (`append`), as table formats keep them: while a partition has deltas, its
version is `<stem>.deltas.json` (replaced by rename: the commit), listing a base under a name of its
own, `<stem>.b<ms>-<id>.parquet`, and the immutable delta files `<stem>.d<seq>-<id>.parquet`. No file a
list names is ever rewritten: the first delta names the plain `<stem>.parquet` by a new hard link (a
copy where links are refused), and a `write` over a listed version (the day's compaction) writes its
base under a new name and commits a list naming it alone, so a reader (a DuckDB view, another process)
holding the old list reads exactly the old snapshot and one holding the new list the new one, never
both. The plain file then takes the new base too and the list goes: a settled day is one
`<stem>.parquet`, as every partition without deltas is (and what an older lake holds: its lists named
the plain base by a digest of its footer, read as before and migrated by the next append or write).
Files no list names any more are touched when superseded and removed by `sweep` only after the grace
period."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path, PurePath
from typing import Any

import polars as pl

from crypto_platform.file_lock import host_lock
from crypto_platform.raw_manifest import RawManifest
from crypto_platform.resources.lake.model import (
    ANY,
    MANIFEST_FILE,
    PARQUET_OPTIONS,
    Expect,
    SweepReport,
    WriteInfo,
)
from crypto_platform.resources.lake.store import Current, Entry, LakeStore

LOCKS_DIR = ".locks"
DELTAS_SUFFIX = ".deltas.json"
# A file of a listed version (base `b<ms>` or delta `d<seq>`), never rewritten: what `sweep` may remove.
_SNAPSHOT_FILE = re.compile(r"^(?P<stem>.+)\.(b\d{13}|d\d{6})-[0-9a-f]{8}\.parquet$")
_SNAPSHOT_GLOB = "*-????????.parquet"  # one walk of the lake finds both kinds (then `_SNAPSHOT_FILE`)


class LocalStore(LakeStore):
    """Files under a local folder (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def where(self, key: str) -> str:
        return str(self.root / key)

    def file_label(self, key: str) -> PurePath:
        return self.root / key

    def current(self, key: str) -> Current | None:
        doc = self._deltas_doc(key)  # the list before the plain file: see the module docstring
        if doc is not None and "file" in doc:
            return self._listed(key, doc)
        path = self.root / key
        try:
            meta = pl.read_parquet_metadata(path) if doc is not None else {}
        except FileNotFoundError:
            return None
        if doc is None and not path.exists():
            return None
        return self._legacy(key, doc, meta)

    def _listed(self, key: str, doc: dict) -> Current:
        """The version a list names: its own base file and its deltas."""
        deltas = tuple(str(self.root / _sibling(key, d["file"])) for d in doc["deltas"])
        base = str(self.root / _sibling(key, doc["file"]))
        return Current(key, base, metadata=doc["metadata"], deltas=deltas, rows=doc["rows"])

    def _legacy(self, key: str, doc: dict | None, footer: dict[str, str]) -> Current:
        """The plain file's version, with the deltas of an older lake's list when it names this base."""
        if doc is None or doc.get("base") != _base_id(footer):
            return Current(key, str(self.root / key))
        deltas = tuple(str(self.root / _sibling(key, d["file"])) for d in doc["deltas"])
        return Current(key, str(self.root / key), metadata=doc["metadata"], deltas=deltas, rows=doc["rows"])

    def _deltas_doc(self, key: str) -> dict | None:
        try:
            return json.loads((self.root / _deltas_key(key)).read_text())
        except FileNotFoundError:
            return None

    def committed_keys(self, prefix: str, pattern: str) -> list[str]:
        folder = self.root / prefix
        if not folder.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in folder.glob(pattern) if p.is_file())

    def write(
        self, key: str, df: pl.DataFrame, metadata: dict[str, str] | None = None, expect: Expect = ANY
    ) -> WriteInfo:
        """Temp file + rename; over a listed version, a new base committed by its list first (see the
        module docstring). `expect` is not checked: commits are serialised by `exclusive`."""
        path = self.root / key
        old = self.current(key) if (self.root / _deltas_key(key)).exists() else None
        with _temp_for(path) as tmp:
            df.write_parquet(tmp, **PARQUET_OPTIONS, metadata=metadata)
            if old is not None:
                name = _new_base_name(key)
                _link_or_copy(tmp, self.root / _sibling(key, name))  # a crash here leaves an orphan
                _touch(u for u in old.uris if u != str(path))  # superseded from now: the grace starts
                doc = {"file": name, "deltas": [], "rows": df.height, "metadata": metadata or {}}
                self.write_json(_deltas_key(key), doc)  # the commit
            os.replace(tmp, path)
        (self.root / _deltas_key(key)).unlink(missing_ok=True)  # plain again: same data as the list's
        return WriteInfo(path=str(path), rows=df.height, bytes=path.stat().st_size)

    def append(
        self, key: str, df: pl.DataFrame, metadata: dict[str, str] | None = None, expect: Expect = ANY
    ) -> WriteInfo:
        """The delta file, then its list replaced by rename (the commit); serialised by `exclusive`. The
        first delta names the plain base by a new link of its own (a later write replaces the plain
        file, never that name)."""
        cur = self.current(key)
        if cur is None:
            raise FileNotFoundError(f"{self.where(key)}: no base to append a delta to")
        base = PurePath(cur.uri).name
        if cur.uri == str(self.root / key):
            base = _new_base_name(key)
            _link_or_copy(self.root / key, self.root / _sibling(key, base))
            _touch([str(self.root / _sibling(key, base))])  # young: a sweep leaves it to this commit
        deltas = [{"file": PurePath(u).name} for u in cur.deltas]
        rows = cur.rows
        if rows is None:
            rows = pl.scan_parquet(cur.uri).select(pl.len()).collect().item()
        stem = PurePath(key).name.removesuffix(".parquet")
        name = f"{stem}.d{len(deltas) + 1:06d}-{uuid.uuid4().hex[:8]}.parquet"
        path = self.root / _sibling(key, name)
        with _temp_for(path) as tmp:
            df.write_parquet(tmp, **PARQUET_OPTIONS, metadata=metadata)
            os.replace(tmp, path)
        doc = {
            "file": base,
            "deltas": [*deltas, {"file": name}],
            "rows": rows + df.height,
            "metadata": metadata or {},
        }
        self.write_json(_deltas_key(key), doc)
        return WriteInfo(path=str(path), rows=doc["rows"], bytes=path.stat().st_size)

    def read_with_footer(
        self, key: str, name: str, order: tuple[pl.Expr, ...] = ()
    ) -> tuple[pl.DataFrame | None, str | None]:
        """A listed version's files (never rewritten), or the plain base and its footer from one open
        file (a concurrent rename cannot mix them) with the deltas of an older lake's list naming it."""
        doc = self._deltas_doc(key)
        if doc is not None and "file" in doc:
            cur = self._listed(key, doc)
            base, text = pl.read_parquet(cur.uri), (cur.metadata or {}).get(name)
        else:
            try:
                fh = (self.root / key).open("rb")
            except FileNotFoundError:
                return None, None
            with fh:
                footer = pl.read_parquet_metadata(fh)
                cur, text = self._legacy(key, doc, footer), footer.get(name)
                fh.seek(0)
                base = pl.read_parquet(fh)
        if not cur.deltas:
            return base, text
        df = pl.concat([base, *(pl.read_parquet(u) for u in cur.deltas)], how="vertical")
        return (df.sort(list(order), maintain_order=True) if order else df), (cur.metadata or {}).get(name)

    def uri(self, key: str) -> str:
        return str(self.root / key)

    def write_new(self, key: str, df: pl.DataFrame) -> WriteInfo:
        return self.write(key, df)

    def list_folder(self, prefix: str) -> list[Entry]:
        folder = self.root / prefix
        if not folder.is_dir():
            return []
        out = []
        for p in sorted(folder.iterdir()):
            if p.is_file():
                s = p.stat()
                out.append(Entry(p.relative_to(self.root).as_posix(), s.st_size, s.st_mtime))
        return out

    def read_json(self, key: str) -> tuple[Any, str | None]:
        path = self.root / key
        return (json.loads(path.read_text()), ANY) if path.exists() else (None, None)

    def write_json(self, key: str, data: Any, expect: Expect = ANY) -> None:
        path = self.root / key
        with _temp_for(path) as tmp:
            tmp.write_bytes(json.dumps(data, indent=1, sort_keys=True).encode())
            os.replace(tmp, path)

    @contextmanager
    def exclusive(self, scope: str) -> Iterator[None]:
        """Exclusive lock of one scope (an instrument's day) across processes on this host."""
        with host_lock(self.root / LOCKS_DIR / f"{scope}.lock"):
            yield

    def sweep(self, older_than_s: float, now_s: float, raw_prefix: str) -> SweepReport:
        """Temp files of killed writes, uncommitted raw batch files and snapshot files no list names
        (superseded, or of a write that died before its commit) last modified more than `older_than_s`
        before `now_s` (younger ones may belong to a write in progress or a reader of the old list)."""
        temps, orphans, void, size = [], [], [], 0

        def remove(p: Path, into: list[str]) -> None:
            nonlocal size
            s = p.stat()
            if now_s - s.st_mtime > older_than_s:
                size += s.st_size if s.st_nlink == 1 else 0  # another link keeps its bytes
                p.unlink(missing_ok=True)
                into.append(str(p))

        for tmp in self.root.rglob(".*.tmp") if self.root.is_dir() else []:
            if tmp.is_file():
                remove(tmp, temps)
        raw = self.root / raw_prefix
        for folder in sorted(raw.glob("instrument=*/date=*")) if raw.is_dir() else []:
            for batch in uncommitted(folder):
                remove(batch, orphans)
        for file in self._unlisted():
            remove(file, void)
        return SweepReport(tuple(temps), tuple(orphans), size, tuple(void))

    def _unlisted(self) -> list[Path]:
        """Snapshot files (bases and deltas) the current version of their partition does not name."""
        if not self.root.is_dir():
            return []
        out = []
        for file in sorted(self.root.rglob(_SNAPSHOT_GLOB)):
            match = _SNAPSHOT_FILE.match(file.name)
            if match is None:
                continue
            key = (file.parent / f"{match['stem']}.parquet").relative_to(self.root).as_posix()
            cur = self.current(key)
            if cur is None or str(file) not in cur.uris:
                out.append(file)
        return out


def uncommitted(folder: Path) -> list[Path]:
    """Batch files of one raw partition folder that its manifest does not list."""
    if not folder.is_dir():
        return []
    manifest = folder / MANIFEST_FILE
    committed = set(
        RawManifest.from_json(json.loads(manifest.read_text()) if manifest.exists() else None).names
    )
    return sorted(p for p in folder.glob("*.parquet") if p.stem not in committed)


def _base_id(footer: dict[str, str]) -> str:
    """How an older lake's delta list named its plain base: a digest of the base's footer metadata."""
    return hashlib.sha256(json.dumps(sorted(footer.items())).encode()).hexdigest()[:24]


def _new_base_name(key: str) -> str:
    """A base file name no version has used: `<stem>.b<ms>-<id>.parquet`."""
    stem = PurePath(key).name.removesuffix(".parquet")
    return f"{stem}.b{int(time.time() * 1000):013d}-{uuid.uuid4().hex[:8]}.parquet"


def _link_or_copy(src: Path, dst: Path) -> None:
    """`dst` (a new name) as the same bytes as `src`: a hard link, or a copy renamed into place where
    the file system refuses links."""
    try:
        os.link(src, dst)
    except OSError:
        with _temp_for(dst) as tmp:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)


def _touch(uris: Iterable[str]) -> None:
    """Set the files' modification time to now: when they stopped being current (the sweep's clock)."""
    for uri in uris:
        with suppress(FileNotFoundError):
            os.utime(uri)


def _deltas_key(key: str) -> str:
    return key.removesuffix(".parquet") + DELTAS_SUFFIX


def _sibling(key: str, name: str) -> str:
    folder = key.rpartition("/")[0]
    return f"{folder}/{name}" if folder else name


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
