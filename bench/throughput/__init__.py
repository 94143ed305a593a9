"""End-to-end throughput of trades -> bronze -> candles (1m, 5m, 1h) with Parquet I/O: polars vs pandas.

Run from the repository root:  uv run --frozen python -m bench.throughput [--trades N] [--repeats R]

Per UTC day window (the lake's partition), each variant reads the day's raw trades from Parquet,
validates / de-duplicates them into bronze (+ rejects), writes both, builds the complete 1-minute
candle grid and its 5-minute and 1-hour roll-ups, and writes those. Datasets: (a) real Binance
BTC/USDT ticks (../shared/data) tiled to >= N trades over `--days` UTC days, (b) simulated trades.
Every variant runs in a fresh process (so peak RSS is its own); times are medians over repeats.
`measure(Options) -> Result` runs it, `render(Result) -> str` is the report. See bench/README.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.report import write_report
from bench.throughput.datasets import REPO
from bench.throughput.markdown import render
from bench.throughput.measurement import Options, Result, measure
from bench.throughput.runner import VARIANTS

__all__ = ["Options", "Result", "main", "measure", "render"]


def parse_args(argv: list[str] | None) -> tuple[Options, Path]:
    """The CLI flags as Options, and the report path."""
    ap = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.splitlines()[0])
    ap.add_argument("--trades", type=int, default=10_000_000, help="trades per dataset (default 10M)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per variant (median reported)")
    ap.add_argument(
        "--days", type=int, default=2, help="UTC days the trades are spread over (one window each)"
    )
    ap.add_argument("--datasets", default="real,synthetic", help="comma list: real, synthetic")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    ap.add_argument(
        "--pandas-repeats", type=int, default=None, help="repeats for pandas (default: --repeats)"
    )
    ap.add_argument("--output", default=str(REPO / "bench" / "RESULTS.md"), help="markdown report to write")
    args = ap.parse_args(argv)
    variants = tuple(v for v in args.variants.split(",") if v)
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        ap.error(f"unknown variants {unknown}")
    opts = Options(
        trades=args.trades,
        repeats=args.repeats,
        days=args.days,
        datasets=tuple(d for d in args.datasets.split(",") if d),
        variants=variants,
        pandas_repeats=args.pandas_repeats,
    )
    return opts, Path(args.output)


def main(argv: list[str] | None = None) -> int:
    """Entry point: build the datasets, run every variant, cross-check, write the results table."""
    opts, output = parse_args(argv)
    result = measure(opts)
    write_report(output, render(result))
    print(f"wrote {output} ({result.elapsed_s:.0f}s)")
    return 0
