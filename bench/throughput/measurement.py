"""measure(): build the datasets, run every variant in its own process, cross-check the outputs."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from bench.report import LoadAvg, Machine
from bench.throughput.datasets import Dataset
from bench.throughput.runner import STAGES, VARIANTS, WIDTHS, Stages, candle_file, make_dataset, run_variant

EXACT = ["ts", "open", "high", "low", "close", "trade_count", "is_empty"]
SUMS = ("volume", "quote_volume", "vwap", "buy_volume", "sell_volume")


@dataclass(frozen=True)
class Options:
    """What to measure: the CLI flags of `python -m bench.throughput`."""

    trades: int = 10_000_000
    repeats: int = 3
    days: int = 2
    datasets: tuple[str, ...] = ("real", "synthetic")
    variants: tuple[str, ...] = VARIANTS
    pandas_repeats: int | None = None

    def repeats_of(self, variant: str) -> int:
        """Timed runs of `variant` (pandas may have its own, fewer)."""
        return self.pandas_repeats if variant == "pandas" and self.pandas_repeats else self.repeats


@dataclass(frozen=True)
class VariantResult:
    """One (dataset, variant): medians over the repeats, peak RSS, and what the last run produced."""

    dataset: str
    variant: str
    trades: int
    days: int
    max_day: int
    repeats: int
    median_s: float
    min_s: float
    cpu_s: float
    stages: dict[str, float]  # median seconds per stage (STAGES)
    peak_mib: float
    baseline_mib: float
    bronze_rows: int
    rejects: int
    candles_1m: int
    traded_minutes: int

    @property
    def trades_per_s(self) -> float:
        """Throughput of the median run."""
        return self.trades / self.median_s


@dataclass(frozen=True)
class CrossCheck:
    """Agreement of the variants of one dataset: candle files, and (bronze rows, rejects) per variant."""

    dataset: str
    candles: str  # "identical candles ..." or the first mismatch
    counts: tuple[tuple[int, int], ...]  # distinct (bronze rows, rejects) over the variants

    def text(self) -> str:
        """The cross-check line of the report."""
        if len(self.counts) == 1:
            ((bronze_rows, rejects),) = self.counts
            return f"{self.candles}; bronze rows {bronze_rows:,}, rejects {rejects:,} in every variant"
        return f"{self.candles}; MISMATCH of bronze/reject row counts across variants: {list(self.counts)}"


@dataclass(frozen=True)
class Result:
    """Everything RESULTS.md reports: options, machine, timings, cross-checks."""

    options: Options
    began: datetime
    elapsed_s: float
    load_before: LoadAvg
    load_after: LoadAvg
    machine: Machine
    versions: dict[str, str]
    rows: list[VariantResult] = field(default_factory=list)
    checks: list[CrossCheck] = field(default_factory=list)


def library_versions() -> dict[str, str]:
    """Versions of the libraries the variants use."""
    import duckdb
    import numpy as np
    import pandas as pd
    import pyarrow

    mods = {"polars": pl, "pandas": pd, "pyarrow": pyarrow, "numpy": np, "duckdb": duckdb}
    return {name: mod.__version__ for name, mod in mods.items()}


def check_same_candles(out: Path, ds: Dataset, variants: list[str] | tuple[str, ...]) -> str:
    """Compare every variant's candle files with the first variant's: prices/counts exact, sums 1e-9."""
    if len(variants) < 2:
        return "n/a (one variant)"
    ref = variants[0]
    for v in variants[1:]:
        for start, _, _ in ds.days:
            for width in WIDTHS:
                name = candle_file(width, start)
                a = pl.read_parquet(out / ds.name / ref / name)
                b = pl.read_parquet(out / ds.name / v / name).select(a.columns).cast(a.schema)
                b = b.with_columns(pl.col(pl.Float64).fill_nan(None))  # pandas writes NaN for missing
                if not a.select(EXACT).equals(b.select(EXACT)):
                    return f"MISMATCH: {v} vs {ref} in {name}"
                for col in SUMS:
                    x, y = a.get_column(col), b.get_column(col).fill_nan(None)
                    close = ((x - y).abs() <= 1e-9 * x.abs().clip(lower_bound=1.0)).fill_null(True).all()
                    if not (close and (x.is_null() == y.is_null()).all()):
                        return f"MISMATCH ({col}): {v} vs {ref} in {name}"
    return f"identical candles (1m/5m/1h) across {', '.join(variants)}"


def summarize(ds: Dataset, variant: str, res: dict) -> VariantResult:
    """Medians over the repeats of one variant's runs (the row of the results table)."""
    runs: list[Stages] = res["runs"]
    last = runs[-1]
    return VariantResult(
        dataset=ds.name,
        variant=variant,
        trades=ds.trades,
        days=len(ds.days),
        max_day=ds.max_day,
        repeats=len(runs),
        median_s=statistics.median(r.total for r in runs),
        min_s=min(r.total for r in runs),
        cpu_s=statistics.median(r.cpu_s for r in runs),
        stages={k: statistics.median(getattr(r, k) for r in runs) for k in STAGES},
        peak_mib=res["peak_mib"],
        baseline_mib=res["baseline_mib"],
        bronze_rows=last.bronze_rows,
        rejects=last.rejects,
        candles_1m=last.candles_1m,
        traded_minutes=last.traded_minutes,
    )


def _progress(row: VariantResult) -> None:
    print(
        f"  {row.variant:13s} median {row.median_s:7.2f}s (cpu {row.cpu_s:.2f}s)  "
        f"{row.trades_per_s / 1e6:6.2f} M trades/s  "
        f"peak RSS {row.peak_mib:7.0f} MiB  stages "
        + " ".join(f"{k}={v:.2f}" for k, v in row.stages.items()),
        flush=True,
    )


def measure_dataset(name: str, opts: Options, tmpdir: Path) -> tuple[list[VariantResult], CrossCheck]:
    """Generate one dataset, run every variant on it, compare their outputs; the raw files are removed."""
    t = time.perf_counter()
    ds = make_dataset(name, opts.trades, opts.days, tmpdir / "raw" / name)
    per_day = ", ".join(f"{s:%Y-%m-%d}: {n:,}" for s, _, n in ds.days)
    took = time.perf_counter() - t
    print(f"[{name}] {ds.trades:,} trades ({per_day}) generated in {took:.1f}s", flush=True)
    rows = []
    for variant in opts.variants:
        res = run_variant(variant, ds, tmpdir / "out" / name / variant, opts.repeats_of(variant))
        rows.append(summarize(ds, variant, res))
        _progress(rows[-1])
    counts = tuple(sorted({(r.bronze_rows, r.rejects) for r in rows}))
    check = CrossCheck(name, check_same_candles(tmpdir / "out", ds, opts.variants), counts)
    print(f"  check: {check.text()}", flush=True)
    for _, path, _ in ds.days:
        Path(path).unlink()
    return rows, check


def measure(opts: Options) -> Result:
    """Run the bench: every dataset x variant, each variant in a fresh process, in a temp folder."""
    unknown = sorted(set(opts.variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    began, load_before, t_start = datetime.now(UTC), os.getloadavg(), time.perf_counter()
    rows: list[VariantResult] = []
    checks: list[CrossCheck] = []
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp:
        for name in opts.datasets:
            ds_rows, check = measure_dataset(name, opts, Path(tmp))
            rows += ds_rows
            checks.append(check)
    return Result(
        options=opts,
        began=began,
        elapsed_s=time.perf_counter() - t_start,
        load_before=load_before,
        load_after=os.getloadavg(),
        machine=Machine.current(),
        versions=library_versions(),
        rows=rows,
        checks=checks,
    )
