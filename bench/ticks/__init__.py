"""Cost of one live tick by time of day: incremental derivation vs deriving the open day from scratch.

Run from the repository root:  uv run --frozen python -m bench.ticks [--rate 1000] [--instruments 3]

Writes bench/TICKS.md. `measure(...) -> Result` runs it (bench/ticks/measurement.py), `render(Result)
-> str` is the report (markdown.py). It runs in a temp folder with its own instruments file (synthetic
instruments of exchange `sim`), never in data/.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from datetime import time
from pathlib import Path

from bench.report import write_report

REPO = Path(__file__).resolve().parents[2]
SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT", "XRP/USDT", "DOGE/USDT")


def main(argv: list[str] | None = None) -> int:
    """Entry point: an instruments file of N synthetic instruments at the rate, measure, write."""
    ap = argparse.ArgumentParser(prog="python -m bench.ticks", description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=1000.0, help="mean trades per minute per instrument")
    ap.add_argument("--instruments", type=int, default=3, help=f"synthetic instruments (1..{len(SYMBOLS)})")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per tick and way (median reported)")
    ap.add_argument("--output", default=str(REPO / "bench" / "TICKS.md"), help="markdown report to write")
    args = ap.parse_args(argv)
    if not 1 <= args.instruments <= len(SYMBOLS):
        ap.error(f"--instruments must be 1..{len(SYMBOLS)}")
    with tempfile.TemporaryDirectory() as tmp:
        entries = [
            f'  - {{exchange: sim, symbol: "{s}", source: synthetic, trades_per_minute: {args.rate:g}}}'
            for s in SYMBOLS[: args.instruments]
        ]
        path = Path(tmp) / "instruments.yaml"
        path.write_text('start_date: "2024-01-01"\ninstruments:\n' + "\n".join(entries) + "\n")
        os.environ["CRYPTO_INSTRUMENTS"] = str(path)  # before crypto_platform is imported
        from bench.ticks.markdown import render
        from bench.ticks.measurement import measure
        from crypto_platform.settings import load_universe

        load_universe.cache_clear()
        result = measure(
            list(load_universe().instruments), ticks=(time(1, 0), time(23, 0)), repeats=args.repeats
        )
    flags = [("--rate", f"{args.rate:g}"), ("--instruments", args.instruments), ("--repeats", args.repeats)]
    write_report(Path(args.output), render(result, flags))
    print(Path(args.output).read_text())
    return 0
