"""Timed runs of a throughput variant over all day windows of a dataset, each variant in its own process."""

from __future__ import annotations

import gc
import multiprocessing as mp
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl

from bench.throughput.datasets import DAY, MAKERS, PARQUET, Dataset
from bench.throughput.pandas_impl import pandas_candles_1m, pandas_rollup, pandas_to_bronze
from crypto_platform.resources.lake import PARQUET_OPTIONS
from crypto_platform.transforms.candles import candles_1m, rollup
from crypto_platform.transforms.trades import to_bronze

ROLLUPS = ("5m", "1h")
WIDTHS = ("1m", *ROLLUPS)
VARIANTS = ("polars", "polars-eager", "pandas")
STAGES = ("read_bronze", "write_bronze", "candles", "write_candles")
# pandas/pyarrow spells the level differently; same codec, same level, statistics on by default
PANDAS_PARQUET = {"compression": "zstd", "compression_level": PARQUET_OPTIONS["compression_level"]}


@dataclass
class Stages:
    """Seconds spent per pipeline stage, summed over the day windows of one run, and what it produced."""

    read_bronze: float = 0.0
    write_bronze: float = 0.0
    candles: float = 0.0
    write_candles: float = 0.0
    cpu_s: float = 0.0
    bronze_rows: int = 0
    rejects: int = 0
    candles_1m: int = 0  # 1-minute candle rows written (the complete grid)
    traded_minutes: int = 0  # of which not empty

    @property
    def total(self) -> float:
        """Sum of the stage times of one run."""
        return self.read_bronze + self.write_bronze + self.candles + self.write_candles

    def add(self, times: tuple[float, float, float, float, float]) -> None:
        """Add one day window's stage boundaries (t0 .. t4, perf_counter seconds)."""
        t, t1, t2, t3, t4 = times
        self.read_bronze += t1 - t
        self.write_bronze += t2 - t1
        self.candles += t3 - t2
        self.write_candles += t4 - t3


def candle_file(width: str, start: Any) -> str:
    """File name of one day window's candles of one width (what the cross-check compares)."""
    return f"candles_{width}-{start:%Y%m%d}.parquet"


def run_polars(ds: Dataset, out: Path, *, lazy: bool) -> Stages:
    """The project's transforms over every day window; the raw file scanned lazily or read whole."""
    st = Stages()
    prev_close: float | None = None
    for start, path, _ in ds.days:
        end = start + DAY
        t = time.perf_counter()
        raw = pl.scan_parquet(path) if lazy else pl.read_parquet(path)
        res = to_bronze(raw, start, end)
        del raw
        t1 = time.perf_counter()
        res.bronze.write_parquet(out / "bronze.parquet", **PARQUET)
        res.rejects.write_parquet(out / "rejects.parquet", **PARQUET)
        t2 = time.perf_counter()
        c1 = candles_1m(res.bronze, start, end, prev_close=prev_close, exchange=ds.exchange, symbol=ds.symbol)
        bars = {"1m": c1, **{w: rollup(c1, w) for w in ROLLUPS}}
        t3 = time.perf_counter()
        for width, df in bars.items():
            df.write_parquet(out / candle_file(width, start), **PARQUET)
        t4 = time.perf_counter()
        closes = c1.get_column("close").drop_nulls()
        prev_close = float(closes[-1]) if len(closes) else prev_close
        st.bronze_rows += res.bronze.height
        st.rejects += res.rejects.height
        st.candles_1m += c1.height
        st.traded_minutes += int((~c1.get_column("is_empty")).sum())
        st.add((t, t1, t2, t3, t4))
        del res, c1, bars
    return st


def run_pandas(ds: Dataset, out: Path) -> Stages:
    """The pandas implementation of the same steps over every day window."""
    st = Stages()
    prev_close: float | None = None
    for start, path, _ in ds.days:
        end = start + DAY
        t = time.perf_counter()
        raw = pd.read_parquet(path)
        bronze, rej, _ = pandas_to_bronze(raw, start, end)
        del raw
        t1 = time.perf_counter()
        bronze.to_parquet(out / "bronze.parquet", index=False, **PANDAS_PARQUET)
        rej.to_parquet(out / "rejects.parquet", index=False, **PANDAS_PARQUET)
        t2 = time.perf_counter()
        c1 = pandas_candles_1m(bronze, start, end, prev_close, exchange=ds.exchange, symbol=ds.symbol)
        bars = {"1m": c1, **{w: pandas_rollup(c1, w) for w in ROLLUPS}}
        t3 = time.perf_counter()
        for width, df in bars.items():
            df.to_parquet(out / candle_file(width, start), index=False, **PANDAS_PARQUET)
        t4 = time.perf_counter()
        closes = c1["close"].dropna()
        prev_close = float(closes.iloc[-1]) if len(closes) else prev_close
        st.bronze_rows += len(bronze)
        st.rejects += len(rej)
        st.candles_1m += len(c1)
        st.traded_minutes += int((~c1["is_empty"]).sum())
        st.add((t, t1, t2, t3, t4))
        del bronze, rej, c1, bars
    return st


def _max_rss_mib() -> float:
    """This process's RSS high-water mark in MiB.

    Linux `VmHWM` (/proc/self/status) belongs to the current address space only, whereas
    `getrusage().ru_maxrss` keeps the high-water mark of the parent across fork + exec.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _child(variant: str, ds: Dataset, out: str, repeats: int, queue: Any) -> None:
    """Run one variant `repeats` times in this (fresh) process; report stage times and peak RSS."""
    try:
        baseline = _max_rss_mib()
        runs = []
        for _ in range(repeats):
            gc.collect()
            cpu = time.process_time()
            if variant == "pandas":
                st = run_pandas(ds, Path(out))
            else:
                st = run_polars(ds, Path(out), lazy=variant == "polars")
            st.cpu_s = time.process_time() - cpu  # all threads, user + system
            runs.append(st)
        queue.put({"runs": runs, "baseline_mib": baseline, "peak_mib": _max_rss_mib()})
    except BaseException as exc:  # report, never hang the parent
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def run_variant(variant: str, ds: Dataset, out: Path, repeats: int) -> dict[str, Any]:
    """Run a variant in a fresh spawned interpreter so its peak RSS is measured on its own."""
    out.mkdir(parents=True, exist_ok=True)
    return _in_subprocess(_child, variant, ds, str(out), repeats)


def _make_child(name: str, n_trades: int, n_days: int, folder: str, queue: Any) -> None:
    """Generate a dataset's raw files (in a child, so the parent process stays small)."""
    try:
        queue.put({"dataset": MAKERS[name](n_trades, n_days, Path(folder))})
    except BaseException as exc:
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def make_dataset(name: str, n_trades: int, n_days: int, folder: Path) -> Dataset:
    """Generate a dataset's raw files in a spawned child (so the measuring parent stays small)."""
    return _in_subprocess(_make_child, name, n_trades, n_days, str(folder))["dataset"]


def _in_subprocess(target: Any, *args: Any) -> dict[str, Any]:
    """Run `target(*args, queue)` in a freshly spawned interpreter; its one queued answer, or raise."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    if "error" in result:
        raise RuntimeError(f"{target.__name__}{args[:2]}: {result['error']}")
    return result
