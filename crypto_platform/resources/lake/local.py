"""The lake in a local folder: every write goes to a temporary file in the same folder and is renamed
over the target, so a reader sees the old file or the new one, never half of one; read-check-write
sequences of one partition are serialised by an fcntl lock (one host)."""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePath
from typing import Any

import polars as pl

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


class LocalStore(LakeStore):
    """Files under a local folder (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def where(self, key: str) -> str:
        return str(self.root / key)

    def file_label(self, key: str) -> PurePath:
        return self.root / key

    def current(self, key: str) -> Current | None:
        path = self.root / key
        return Current(key, str(path)) if path.exists() else None

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
        return WriteInfo(path=str(path), rows=df.height, bytes=path.stat().st_size)

    def read(self, key: str) -> pl.DataFrame | None:
        path = self.root / key
        return pl.read_parquet(path) if path.exists() else None

    def read_with_footer(self, key: str, name: str) -> tuple[pl.DataFrame | None, str | None]:
        """Both from one open file (a concurrent rename cannot mix them)."""
        try:
            fh = (self.root / key).open("rb")
        except FileNotFoundError:
            return None, None
        with fh:
            text = pl.read_parquet_metadata(fh).get(name)
            fh.seek(0)
            return pl.read_parquet(fh), text

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
        return SweepReport(tuple(temps), tuple(orphans), size)


def uncommitted(folder: Path) -> list[Path]:
    """Batch files of one raw partition folder that its manifest does not list."""
    if not folder.is_dir():
        return []
    manifest = folder / MANIFEST_FILE
    committed = set(
        RawManifest.from_json(json.loads(manifest.read_text()) if manifest.exists() else None).names
    )
    return sorted(p for p in folder.glob("*.parquet") if p.stem not in committed)


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
