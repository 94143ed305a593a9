"""Run the contenders against one S3-compatible server (moto on loopback) and collect plain figures."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import numpy as np
import polars as pl

from bench.report import LoadAvg, Machine, quantile
from bench.s3_lake.contenders import Delta, InPlace, OwnManifest
from crypto_platform_tests.s3_server import s3_server


class Contender(Protocol):
    name: str
    bucket: str

    def write(self, df: pl.DataFrame) -> None: ...
    def read(self) -> pl.DataFrame: ...


@dataclass(frozen=True)
class Options:
    replacements: int = 30  # sequential replace + read pairs (latency)
    rows: int = 50_000  # rows of the partition (~1 MB of Parquet)
    readers: int = 4  # reader threads during the concurrent phase
    reads: int = 100  # reads during concurrent replacement, per contender


@dataclass(frozen=True)
class Figures:
    """One contender: latencies (seconds), and what the reads under concurrent replacement saw."""

    name: str
    write_p50: float
    write_p95: float
    read_p50: float
    read_p95: float
    wrong_sequential: int  # sequential reads that did not return the version just written
    reads: int
    old_or_new: int
    mixed: int  # a frame that is neither version (rows of both, or half of one)
    errors: int
    replacements_meanwhile: int
    objects_after: int


@dataclass(frozen=True)
class Result:
    options: Options
    figures: tuple[Figures, ...]
    machine: Machine
    started: datetime
    seconds: float
    load: LoadAvg


def frame(seed: int, rows: int) -> pl.DataFrame:
    """One version of the partition: distinct values per seed."""
    rng = np.random.default_rng(seed)
    return pl.DataFrame({"i": np.arange(rows) + seed * rows, "v": rng.normal(size=rows)})


def _same(df: pl.DataFrame, want: pl.DataFrame) -> bool:
    return df.height == want.height and df.sort("i").equals(want)


def run(c: Contender, opts: Options, count_objects: Callable[[], int]) -> Figures:
    """Sequential replace/read latency, then reads under a writer replacing as fast as it can."""
    writes, reads, wrong = [], [], 0
    for k in range(opts.replacements):
        df = frame(k, opts.rows)
        t = time.perf_counter()
        c.write(df)
        writes.append(time.perf_counter() - t)
        t = time.perf_counter()
        got = c.read()
        reads.append(time.perf_counter() - t)
        wrong += not _same(got, df)
    old, new = frame(1000, opts.rows), frame(1001, opts.rows)
    c.write(old)
    seen = {"ok": 0, "mixed": 0, "errors": 0}
    lock, done, replaced = threading.Lock(), threading.Event(), [0]

    def writer() -> None:
        while not done.is_set():
            c.write(new if replaced[0] % 2 == 0 else old)
            replaced[0] += 1

    def reader() -> None:
        while True:
            with lock:
                if sum(seen.values()) >= opts.reads:
                    return
            try:
                df = c.read()
                kind = "ok" if _same(df, old) or _same(df, new) else "mixed"
            except Exception:  # a failed read is counted, not fatal to the bench
                kind = "errors"
            with lock:
                seen[kind] += 1

    w = threading.Thread(target=writer, daemon=True)
    rs = [threading.Thread(target=reader, daemon=True) for _ in range(opts.readers)]
    w.start()
    for r in rs:
        r.start()
    for r in rs:
        r.join()
    done.set()
    w.join()
    return Figures(
        c.name,
        quantile(writes, 0.5),
        quantile(writes, 0.95),
        quantile(reads, 0.5),
        quantile(reads, 0.95),
        wrong,
        sum(seen.values()),
        seen["ok"],
        seen["mixed"],
        seen["errors"],
        replaced[0],
        count_objects(),
    )


def measure(opts: Options) -> Result:
    """Every contender, each in its own bucket of one moto server."""
    import boto3

    for name, value in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}.items():
        os.environ.setdefault(name, value)
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    started, t0 = datetime.now(UTC), time.perf_counter()
    figures = []
    with s3_server() as endpoint:
        client = boto3.client("s3", endpoint_url=endpoint)
        for kind in (OwnManifest, Delta, InPlace):
            c = kind(endpoint)

            def count(b: str = c.bucket) -> int:
                pages = client.get_paginator("list_objects_v2").paginate(Bucket=b)
                return sum(p.get("KeyCount", 0) for p in pages)

            figures.append(run(c, opts, count))
    return Result(opts, tuple(figures), Machine.current(), started, time.perf_counter() - t0, os.getloadavg())
