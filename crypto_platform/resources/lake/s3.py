"""The lake on S3 (or any S3-compatible server): no object is ever rewritten in place.

An object read by several range requests while it is overwritten can mix two versions (measured with
polars), so every version of a replaced file is a new immutable object `<stem>.v<ms>-<id>.parquet`,
and the commit is a small pointer `<stem>.current.json` naming it, written with a conditional PUT
(`If-None-Match: *` to create, `If-Match: <etag>` to replace): a reader reads the pointer (one GET,
atomic) and then an object nobody changes. Two writers racing for one pointer: one PUT fails with 412
and that writer gets a CommitConflict (re-read and retry), never a lost or mixed commit. Raw manifests
are small JSON documents committed the same way; raw batches are immutable objects. A delta
(`append`) is one more immutable version object, committed by the same conditional PUT of the pointer
with the delta added to its list: a reader sees the whole append or none of it.

Superseded versions are removed by `sweep` only after they stopped being current longer ago than the
bound (the pointer records when the previous version was replaced), so a reader that resolved a
pointer just before a replace still finds its object. Credentials come from boto3's standard chain
(environment, profile, instance role) and are handed to polars; none are configured here.
"""

from __future__ import annotations

import fnmatch
import io
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from pathlib import PurePath, PurePosixPath
from typing import Any

import boto3
import polars as pl
from botocore.config import Config
from botocore.exceptions import ClientError

from crypto_platform.platform_settings import env_name
from crypto_platform.raw_manifest import RawManifest
from crypto_platform.resources.lake.model import (
    ANY,
    MANIFEST_FILE,
    PARQUET_OPTIONS,
    CommitConflict,
    Expect,
    SweepReport,
    WriteInfo,
)
from crypto_platform.resources.lake.store import Current, Entry, LakeStore

POINTER_SUFFIX = ".current.json"
_VERSION = re.compile(r"^(?P<stem>.+)\.v\d{13}-[0-9a-f]{8}\.parquet$")
_CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "412", "409"}
_ANY_TRIES = 20  # an unconditional replace re-reads the pointer after a lost race this often


def split_url(url: str) -> tuple[str, str]:
    """('bucket', 'prefix/') of an s3:// URL (prefix '' or ending in '/')."""
    if not url.startswith("s3://") or not url[5:].split("/")[0]:
        raise ValueError(f"lake root {url!r} ({env_name('lake_root')}): expected s3://<bucket>[/<prefix>]")
    bucket, _, prefix = url[5:].partition("/")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


class S3Store(LakeStore):
    """Objects under `s3://bucket/prefix` (see the module docstring)."""

    def __init__(self, url: str, endpoint_url: str = "", allow_http: bool = False) -> None:
        self.bucket, self.prefix = split_url(url)
        if endpoint_url.startswith("http://") and not allow_http:
            raise ValueError(
                f"{env_name('s3_endpoint_url')}={endpoint_url!r} is plain http: set "
                f"{env_name('s3_allow_http')}=true to allow it (local test servers), or use https"
            )
        self.endpoint_url = endpoint_url
        self.allow_http = allow_http
        self._session = boto3.session.Session()
        self.region = self._session.region_name or "us-east-1"
        config = Config(
            s3={"addressing_style": "path"} if endpoint_url else {},
            retries={"max_attempts": 5, "mode": "standard"},
            max_pool_connections=32,
        )
        self.client = self._session.client(
            "s3", endpoint_url=endpoint_url or None, region_name=self.region, config=config
        )

    @property
    def storage_options(self) -> dict[str, str]:  # type: ignore[override]
        """polars' options for this store, with boto3's current credentials (refreshed when they expire)."""
        opts = {"aws_region": self.region}
        if self.endpoint_url:
            opts["aws_endpoint_url"] = self.endpoint_url
        if self.allow_http:
            opts["aws_allow_http"] = "true"
        creds = self._session.get_credentials()
        if creds is not None:
            frozen = creds.get_frozen_credentials()
            opts["aws_access_key_id"], opts["aws_secret_access_key"] = frozen.access_key, frozen.secret_key
            if frozen.token:
                opts["aws_session_token"] = frozen.token
        return opts

    def where(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    def file_label(self, key: str) -> PurePath:
        return PurePosixPath(self.bucket, self.prefix, key)

    # -- replaced files ----------------------------------------------------------------------------
    def current(self, key: str) -> Current | None:
        found = self._get(_pointer(key))
        if found is None:
            return None
        doc, etag, _ = found
        deltas = tuple(self.where(_sibling(key, d["file"])) for d in doc.get("deltas") or [])
        uri = self.where(_sibling(key, doc["file"]))
        return Current(key, uri, etag, doc.get("metadata") or {}, deltas, doc.get("rows"))

    def currents(self, keys: list[str]) -> list[Current]:
        with ThreadPoolExecutor(max_workers=16) as pool:
            return [c for c in pool.map(self.current, keys) if c is not None]

    def committed_keys(self, prefix: str, pattern: str) -> list[str]:
        base = prefix.rstrip("/") + "/"
        keys = []
        for entry in self._list(base):
            if entry.key.endswith(POINTER_SUFFIX):
                key = entry.key[: -len(POINTER_SUFFIX)] + ".parquet"
                if fnmatch.fnmatchcase(key[len(base) :], pattern):
                    keys.append(key)
        return sorted(keys)

    def write(
        self, key: str, df: pl.DataFrame, metadata: dict[str, str] | None = None, expect: Expect = ANY
    ) -> WriteInfo:
        """A new version object, then the pointer's conditional PUT (see the module docstring)."""
        name, size = self._put_version(key, df, metadata)

        def replace(old: dict | None, since: float) -> dict:
            files = [old["file"], *(d["file"] for d in old.get("deltas") or [])] if old else []
            previous = {"file": files[0], "files": files, "since": since} if old else None
            return {
                "file": name,
                "rows": df.height,
                "bytes": size,
                "metadata": metadata or {},
                "previous": previous,
            }

        self._commit_pointer(key, name, replace, expect)
        return WriteInfo(path=self.where(_sibling(key, name)), rows=df.height, bytes=size)

    def append(
        self, key: str, df: pl.DataFrame, metadata: dict[str, str] | None = None, expect: Expect = ANY
    ) -> WriteInfo:
        """A new version object, then the pointer's conditional PUT with it added to the delta list."""
        name, size = self._put_version(key, df, metadata)
        rows = 0

        def add(old: dict | None, since: float) -> dict:
            nonlocal rows
            if old is None:
                self.client.delete_object(Bucket=self.bucket, Key=self.prefix + _sibling(key, name))
                raise FileNotFoundError(f"{self.where(key)}: no base to append a delta to")
            rows = int(old.get("rows") or 0) + df.height
            deltas = [*(old.get("deltas") or []), {"file": name, "rows": df.height, "bytes": size}]
            return {**old, "deltas": deltas, "rows": rows, "metadata": metadata or {}}

        self._commit_pointer(key, name, add, expect)
        return WriteInfo(path=self.where(_sibling(key, name)), rows=rows, bytes=size)

    def _put_version(self, key: str, df: pl.DataFrame, metadata: dict[str, str] | None) -> tuple[str, int]:
        """Write `df` as a new immutable version object beside `key`: (its name, its bytes)."""
        buf = io.BytesIO()
        df.write_parquet(buf, **PARQUET_OPTIONS, metadata=metadata)
        body = buf.getvalue()
        stem = PurePosixPath(key).name.removesuffix(".parquet")
        name = f"{stem}.v{int(time.time() * 1000):013d}-{uuid.uuid4().hex[:8]}.parquet"
        self._put(_sibling(key, name), body, create=True)
        return name, len(body)

    def _commit_pointer(
        self, key: str, name: str, next_doc: Callable[[dict | None, float], dict], expect: Expect
    ) -> None:
        """PUT the pointer `next_doc(current pointer, its time)` conditionally on the version read (and,
        unless `expect` is ANY, on that being `expect`); re-read after a lost race only when ANY. The
        version object `name` is removed when the commit fails."""
        for _ in range(_ANY_TRIES if expect == ANY else 1):
            old = self._get(_pointer(key))
            token = old[1] if old else None
            if expect != ANY and token != expect:
                break
            pointer = json.dumps(next_doc(old[0] if old else None, old[2] if old else 0.0)).encode()
            try:
                self._put(_pointer(key), pointer, create=token is None, match=token)
            except CommitConflict:
                continue
            return
        self.client.delete_object(Bucket=self.bucket, Key=self.prefix + _sibling(key, name))
        raise CommitConflict(f"{self.where(key)}: another writer committed a newer version first")

    def read_with_footer(
        self, key: str, name: str, order: tuple[pl.Expr, ...] = ()
    ) -> tuple[pl.DataFrame | None, str | None]:
        """The pointer's version (pointer read once: data and metadata of one version). If that object
        is gone (swept after a replace), the pointer moved: read again."""
        for attempt in range(3):
            cur = self.current(key)
            if cur is None:
                return None, None
            try:
                frames = [pl.read_parquet(u, storage_options=self.storage_options) for u in cur.uris]
                df = pl.concat(frames, how="vertical")
                if cur.deltas and order:
                    df = df.sort(list(order), maintain_order=True)
                return df, (cur.metadata or {}).get(name)
            except (pl.exceptions.PolarsError, OSError):
                moved = self.current(key)
                if attempt == 2 or moved is None or moved.uri == cur.uri:
                    raise
        raise AssertionError("unreachable")

    # -- immutable files ---------------------------------------------------------------------------
    def uri(self, key: str) -> str:
        return self.where(key)

    def write_new(self, key: str, df: pl.DataFrame) -> WriteInfo:
        buf = io.BytesIO()
        df.write_parquet(buf, **PARQUET_OPTIONS)
        self._put(key, buf.getvalue(), create=True)
        return WriteInfo(path=self.where(key), rows=df.height, bytes=buf.tell())

    def list_folder(self, prefix: str) -> list[Entry]:
        return list(self._list(prefix.rstrip("/") + "/", delimiter="/"))

    # -- JSON documents ----------------------------------------------------------------------------
    def read_json(self, key: str) -> tuple[Any, str | None]:
        found = self._get(key)
        return (found[0], found[1]) if found else (None, None)

    def write_json(self, key: str, data: Any, expect: Expect = ANY) -> None:
        body = json.dumps(data, indent=1, sort_keys=True).encode()
        if expect == ANY:
            self._put(key, body)
        else:
            self._put(key, body, create=expect is None, match=expect)

    # -- concurrency and housekeeping --------------------------------------------------------------
    def exclusive(self, scope: str) -> AbstractContextManager[None]:
        return nullcontext()  # commits are conditional PUTs: a lost race is a CommitConflict

    def sweep(self, older_than_s: float, now_s: float, raw_prefix: str) -> SweepReport:
        """Uncommitted raw batches and superseded versions whose last reader-visible moment lies more
        than `older_than_s` before `now_s`: a batch's own age, and for a version the later of its own
        age and when it stopped being current (the pointer records the previous version's replace)."""
        folders: dict[str, list[Entry]] = {}
        for entry in self._list(""):
            folders.setdefault(entry.key.rpartition("/")[0], []).append(entry)
        orphans, superseded, size = [], [], 0
        for folder, entries in sorted(folders.items()):
            doomed = (
                self._orphan_batches(folder, entries)
                if folder.startswith(raw_prefix.rstrip("/") + "/")
                else self._superseded(entries)
            )
            for entry, since in doomed:
                if now_s - max(entry.mtime, since) > older_than_s:
                    self.client.delete_object(Bucket=self.bucket, Key=self.prefix + entry.key)
                    size += entry.size
                    (orphans if entry.key.startswith(raw_prefix) else superseded).append(
                        self.where(entry.key)
                    )
        return SweepReport((), tuple(orphans), size, tuple(superseded))

    def _orphan_batches(self, folder: str, entries: list[Entry]) -> Iterator[tuple[Entry, float]]:
        """Batch objects the folder's manifest does not list, with the manifest's commit time."""
        manifest = self._get(f"{folder}/{MANIFEST_FILE}")
        names = set(RawManifest.from_json(manifest[0] if manifest else None).names)
        since = manifest[2] if manifest else 0.0
        for e in entries:
            if e.key.endswith(".parquet") and PurePosixPath(e.key).stem not in names:
                yield e, since

    def _superseded(self, entries: list[Entry]) -> Iterator[tuple[Entry, float]]:
        """Version objects no pointer names, with the latest time they can have been current."""
        pointers = {e.key[: -len(POINTER_SUFFIX)]: e for e in entries if e.key.endswith(POINTER_SUFFIX)}
        docs = {stem: self._get(e.key) for stem, e in pointers.items()}
        for e in entries:
            match = _VERSION.match(PurePosixPath(e.key).name)
            if not match:
                continue
            stem = f"{e.key.rpartition('/')[0]}/{match['stem']}"
            doc = docs.get(stem)
            if doc is None:
                yield e, 0.0  # no pointer: never committed
                continue
            name, previous = PurePosixPath(e.key).name, doc[0].get("previous") or {}
            if name == doc[0]["file"] or name in {d["file"] for d in doc[0].get("deltas") or []}:
                continue
            replaced = previous.get("files") or [previous.get("file")]
            yield e, doc[2] if name in replaced else float(previous.get("since") or 0.0)

    # -- S3 calls ----------------------------------------------------------------------------------
    def _get(self, key: str) -> tuple[Any, str, float] | None:
        """(JSON document, etag, last modified epoch s) of an object, or None."""
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
                return None
            raise
        return json.loads(obj["Body"].read()), obj["ETag"], obj["LastModified"].timestamp()

    def _put(self, key: str, body: bytes, *, create: bool = False, match: str | None = None) -> None:
        """PUT, conditional when asked: `create` (If-None-Match: *) or `match` (If-Match: etag)."""
        extra: dict[str, str] = {"IfNoneMatch": "*"} if create else {"IfMatch": match} if match else {}
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=body, **extra)
        except ClientError as exc:
            if extra and exc.response["Error"]["Code"] in _CONFLICT_CODES:
                raise CommitConflict(f"{self.where(key)}: changed by another writer") from exc
            raise

    def _list(self, prefix: str, delimiter: str = "") -> Iterator[Entry]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + prefix, Delimiter=delimiter
        )
        for page in pages:
            for obj in page.get("Contents", []):
                key = obj["Key"][len(self.prefix) :]
                yield Entry(key, obj["Size"], obj["LastModified"].timestamp())


def _pointer(key: str) -> str:
    return key.removesuffix(".parquet") + POINTER_SUFFIX


def _sibling(key: str, name: str) -> str:
    folder = key.rpartition("/")[0]
    return f"{folder}/{name}" if folder else name
