"""The lake in a local folder: every write goes to a temporary file in the same folder and is renamed
over the target, so a reader sees the old file or the new one, never half of one; read-check-write
sequences of one partition are serialised by an fcntl lock (one host).

Deltas (`append`): immutable files `<stem>.d<seq>-<id>.parquet` beside the base, listed by
`<stem>.deltas.json` (replaced by rename: the commit of an append), which names the base it extends by
a digest of the base's footer metadata, which holds the lineage of the derived write (unique to it; a
copied lake keeps its deltas, and a rewrite of equal data and metadata stays byte-identical). A
`write` renames the new base over the old one, then removes the list: a reader that reads the list
and then opens the base sees a list of another base in between, and reads the new base alone, so it
never mixes the new base with the old deltas. Deltas of a replaced base stay until `sweep` (a reader
may still read them)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePath
from typing import Any

import polars as pl

from crypto_platform.raw_manifest import RawManifest
from crypto_platform.resources.lake.model import (
    ANY,
    LINEAGE_KEY,
    MANIFEST_FILE,
    PARQUET_OPTIONS,
    Expect,
    SweepReport,
    WriteInfo,
)
from crypto_platform.resources.lake.store import Current, Entry, LakeStore

LOCKS_DIR = ".locks"
DELTAS_SUFFIX = ".deltas.json"
_DELTA = re.compile(r"^(?P<stem>.+)\.d\d{6}-[0-9a-f]{8}\.parquet$")


class LocalStore(LakeStore):
    """Files under a local folder (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def where(self, key: str) -> str:
        return str(self.root / key)

    def file_label(self, key: str) -> PurePath:
        return self.root / key

    def current(self, key: str) -> Current | None:
        doc = self._deltas_doc(key)  # the list before the base: see the module docstring
        path = self.root / key
        try:
            meta = pl.read_parquet_metadata(path) if doc is not None else {}
        except FileNotFoundError:
            return None
        if doc is None and not path.exists():
            return None
        return self._current(key, doc, meta)

    def _current(self, key: str, doc: dict | None, footer: dict[str, str]) -> Current:
        """The version of a base with this footer, given the delta list read before it."""
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
        """Temp file + rename. `expect` is not checked: commits are serialised by `exclusive`."""
        path = self.root / key
        with _temp_for(path) as tmp:
            df.write_parquet(tmp, **PARQUET_OPTIONS, metadata=metadata)
            os.replace(tmp, path)
        (self.root / _deltas_key(key)).unlink(missing_ok=True)  # the old base's deltas: now void
        return WriteInfo(path=str(path), rows=df.height, bytes=path.stat().st_size)

    def append(
        self, key: str, df: pl.DataFrame, metadata: dict[str, str] | None = None, expect: Expect = ANY
    ) -> WriteInfo:
        """The delta file, then its list replaced by rename (the commit); serialised by `exclusive`."""
        cur = self.current(key)
        if cur is None:
            raise FileNotFoundError(f"{self.where(key)}: no base to append a delta to")
        base = self.root / key
        footer = pl.read_parquet_metadata(base)
        if LINEAGE_KEY not in footer:
            raise ValueError(f"{self.where(key)}: deltas go only on a base written with its lineage")
        token = _base_id(footer)
        deltas = [{"file": PurePath(u).name} for u in cur.deltas]
        rows = cur.rows if cur.rows is not None else pl.scan_parquet(base).select(pl.len()).collect().item()
        stem = PurePath(key).name.removesuffix(".parquet")
        name = f"{stem}.d{len(deltas) + 1:06d}-{uuid.uuid4().hex[:8]}.parquet"
        path = self.root / _sibling(key, name)
        with _temp_for(path) as tmp:
            df.write_parquet(tmp, **PARQUET_OPTIONS, metadata=metadata)
            os.replace(tmp, path)
        doc = {
            "base": token,
            "deltas": [*deltas, {"file": name}],
            "rows": rows + df.height,
            "metadata": metadata or {},
        }
        self.write_json(_deltas_key(key), doc)
        return WriteInfo(path=str(path), rows=doc["rows"], bytes=path.stat().st_size)

    def read_with_footer(
        self, key: str, name: str, order: tuple[pl.Expr, ...] = ()
    ) -> tuple[pl.DataFrame | None, str | None]:
        """The base and its footer from one open file (a concurrent rename cannot mix them), with the
        deltas its list names when the list was read first and names this very base."""
        doc = self._deltas_doc(key)
        try:
            fh = (self.root / key).open("rb")
        except FileNotFoundError:
            return None, None
        with fh:
            footer = pl.read_parquet_metadata(fh)
            cur, text = self._current(key, doc, footer), footer.get(name)
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
        path = self.root / LOCKS_DIR / f"{scope}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def sweep(self, older_than_s: float, now_s: float, raw_prefix: str) -> SweepReport:
        """Temp files of killed writes and uncommitted raw batch files last modified more than
        `older_than_s` before `now_s` (younger ones may belong to a write in progress)."""
        temps, orphans, size = [], [], 0

        def old(p: Path) -> bool:
            return now_s - p.stat().st_mtime > older_than_s

        for tmp in self.root.rglob(".*.tmp") if self.root.is_dir() else []:
            if tmp.is_file() and old(tmp):
                size += tmp.stat().st_size
                tmp.unlink(missing_ok=True)
                temps.append(str(tmp))
        raw = self.root / raw_prefix
        for folder in sorted(raw.glob("instrument=*/date=*")) if raw.is_dir() else []:
            for batch in uncommitted(folder):
                if old(batch):
                    size += batch.stat().st_size
                    batch.unlink(missing_ok=True)
                    orphans.append(str(batch))
        void = []
        for delta in self._void_deltas():
            if old(delta):
                size += delta.stat().st_size
                delta.unlink(missing_ok=True)
                void.append(str(delta))
        return SweepReport(tuple(temps), tuple(orphans), size, tuple(void))

    def _void_deltas(self) -> list[Path]:
        """Delta files no current delta list names (their base was replaced, or a commit died)."""
        out = []
        for delta in sorted(self.root.rglob("*.d??????-????????.parquet")) if self.root.is_dir() else []:
            match = _DELTA.match(delta.name)
            if match is None:
                continue
            key = (delta.parent / f"{match['stem']}.parquet").relative_to(self.root).as_posix()
            cur = self.current(key)
            if cur is None or str(delta) not in cur.deltas:
                out.append(delta)
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
    """What names one base for its delta list: a digest of its footer metadata (deltas are appended
    only to a derived partition, whose footer holds the lineage id of its write)."""
    return hashlib.sha256(json.dumps(sorted(footer.items())).encode()).hexdigest()[:24]


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
