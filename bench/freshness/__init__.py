"""Live freshness: how long after a minute closes is its prediction readable in DuckDB?

    uv run --frozen python -m bench.freshness [--minutes 10] [--trials 5] [--keep]

1. A temp root (never data/): DAGSTER_HOME with the repo's dagster.yaml settings (storage paths moved
   into the temp root), lake, warehouse and MLflow store.
2. History and a model: yesterday's partitions of every synthetic instrument (raw .. silver,
   features, labels) with `dagster asset materialize`, then training set + model. If the promotion
   gate does not make it 'champion', the live predictions are allowed to use the unqualified
   'challenger' (CRYPTO_ALLOW_UNQUALIFIED_MODEL=true), and the results say so.
3. `dagster dev` in its own process group (stopped with SIGTERM to the group) on a code location
   with the live sensors, started RUNNING through CRYPTO_LIVE_SENSOR=running.
4. Every second, the warehouse view gold.predictions is queried (read-only DuckDB); the first time a
   row (instrument, minute) is seen gives delay = seen - (minute + 60 s). Halfway through, dagster
   dev is stopped and started again.
5. Afterwards: the bronze trades of every live partition equal the simulator's deterministic tape
   over the partition's covered span (no loss, no duplicates), run timings from the instance.
Results go to bench/FRESHNESS.md. `measure(Options) -> Result` runs it, `render(Result)` is the report.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from bench.freshness.harness import PROJECT, log
from bench.freshness.markdown import render
from bench.freshness.measurement import Options, Result, measure
from bench.report import write_report

OUT = PROJECT / "bench" / "FRESHNESS.md"

__all__ = ["Options", "Result", "main", "measure", "render"]


def parse_args(argv: list[str] | None) -> tuple[Options, Path]:
    """The CLI flags as Options, and the report path."""
    ap = argparse.ArgumentParser(
        prog="python -m bench.freshness",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--minutes", type=float, default=10, help="measured minutes after warm-up (default 10)")
    ap.add_argument("--trials", type=int, default=5, help="Optuna trials of the model trained first")
    ap.add_argument(
        "--restart-at", type=float, default=0.5, help="restart dagster dev at this share of the run"
    )
    ap.add_argument("--downtime", type=float, default=20, help="seconds dagster dev stays down")
    ap.add_argument("--grace", type=float, default=240, help="seconds to wait for the last minutes' rows")
    ap.add_argument("--keep", action="store_true", help="keep the temp root (logs, lake, instance)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    opts = Options(args.minutes, args.trials, args.restart_at, args.downtime, args.grace, args.keep)
    return opts, args.out


def main(argv: list[str] | None = None) -> None:
    """Entry point: prepare, run live for `--minutes`, restart once, measure, write the report."""
    opts, out = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench: terminated"))
    result = measure(opts)
    write_report(out, render(result))
    log(f"wrote {out}")
