"""The lake on S3: the platform's own manifest commit vs Delta Lake, and an in-place control.

    uv run --frozen python -m bench.s3_lake [--replacements 30] [--rows 50000] [--readers 4] [--reads 100]

Starts moto_server on 127.0.0.1 (crypto_platform_tests/s3_server.py), replaces one (instrument, day)
partition repeatedly with each contender (bench/s3_lake/contenders.py), measures write and read
latency, then reads under concurrent replacement and counts reads that saw neither version.
Results go to bench/S3LAKE.md. `measure(Options) -> Result` runs it, `render(Result)` is the report.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.report import write_report
from bench.s3_lake.markdown import render
from bench.s3_lake.measurement import Options, Result, measure

OUT = Path(__file__).resolve().parents[1] / "S3LAKE.md"

__all__ = ["Options", "Result", "main", "measure", "render"]


def main(argv: list[str] | None = None) -> None:
    """Parse the flags, measure, write the report."""
    ap = argparse.ArgumentParser(prog="python -m bench.s3_lake", description=__doc__)
    ap.add_argument("--replacements", type=int, default=30)
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--readers", type=int, default=4)
    ap.add_argument("--reads", type=int, default=100)
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args(argv)
    result = measure(Options(a.replacements, a.rows, a.readers, a.reads))
    write_report(a.out, render(result))
    print(f"wrote {a.out}")
