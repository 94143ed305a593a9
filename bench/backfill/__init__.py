"""Backfill at a desk's breadth: days x instruments raw -> predictions through the real daemon.

    uv run --frozen python -m bench.backfill --days 30 --instruments 10 --per-run 10,30

For each partitions-per-run setting N (one full measurement each, on a fresh platform, one after the
other):

1. A temp root (never data/): DAGSTER_HOME with the repo's dagster.yaml (storage moved into the temp
   root: SQLite storage, QueuedRunCoordinator with max_concurrent_runs 4, the local run launcher), lake,
   warehouse, MLflow store; `--instruments` synthetic instruments on `sim` at the `--rates` trades a
   minute (before the simulator's intraday activity curve), each with `informed_flow: 1.0`.
2. `dagster-daemon run` on the repo's workspace, with CRYPTO_BACKFILL_PARTITIONS_PER_RUN=N (every
   partitioned asset: `BackfillPolicy.multi_run(N)`).
3. `crypto-platform backfill` of raw -> bronze -> silver -> gold features and labels over the
   `--days` x `--instruments` rectangle ending yesterday; waited for until the daemon has finished it.
4. Training set + model with `dagster asset materialize` (`--trials` Optuna trials), tuned and fitted on
   the first `--train-days` days and evaluated on the rest (`eval_from`): predictions need a model, and
   a model needs the features and labels, so it comes between the two backfills.
5. `crypto-platform backfill` of gold/predictions over the same rectangle (the first `--train-days`
   days are in-sample for the model, the rest out of sample). If the promotion gate refused the model,
   the backfill's run config sets `allow_unqualified_model: true` (`--config-json`) and the challenger
   is served (the report says which was).
6. Memory and CPU of every process of the daemon's session and of each command's (daemon, code
   server, run workers, the CLI run) sampled from /proc every 0.5 s; afterwards the runs of each
   backfill from the instance, the partitions materialized per asset, raw vs bronze + rejects rows of
   every partition, and bronze against the simulator's tape for `--tape-sample` partitions.
Results go to bench/BACKFILL.md. `measure(Options) -> Result` runs it, `render(Result)` is the report.
"""

from __future__ import annotations

import argparse
import signal
import sys
from datetime import date
from pathlib import Path

from bench.backfill.markdown import render
from bench.backfill.measurement import DEFAULT_RATES, Options, Result, measure
from bench.freshness.harness import PROJECT, log
from bench.report import write_report

OUT = PROJECT / "bench" / "BACKFILL.md"

__all__ = ["Options", "Result", "main", "measure", "render"]


def parse_args(argv: list[str] | None) -> tuple[Options, Path]:
    """The CLI flags as Options, and the report path."""
    ap = argparse.ArgumentParser(
        prog="python -m bench.backfill",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--days", type=int, default=30, help="UTC days, ending yesterday (default 30)")
    ap.add_argument("--instruments", type=int, default=10, help="synthetic instruments (default 10)")
    ap.add_argument("--per-run", default="10", help="partitions per run: N or N,M,... (one measurement each)")
    ap.add_argument(
        "--rates",
        default=",".join(f"{r:g}" for r in DEFAULT_RATES),
        help="trades/min of each instrument, cycled (default: %(default)s)",
    )
    ap.add_argument("--train-days", type=int, default=7, help="days the model is fitted on (default 7)")
    ap.add_argument("--trials", type=int, default=3, help="Optuna trials (default 3)")
    ap.add_argument("--tape-sample", type=int, default=20, help="partitions checked against the tape; 0: all")
    ap.add_argument("--last-day", type=date.fromisoformat, default=None, help="last day (default: yesterday)")
    ap.add_argument("--phase-timeout", type=float, default=3600.0, help="seconds allowed to one backfill")
    ap.add_argument("--keep", action="store_true", help="keep the temp roots (logs, lake, instance)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    opts = Options(
        days=args.days,
        instruments=args.instruments,
        per_run=tuple(int(x) for x in args.per_run.split(",")),
        rates=tuple(float(x) for x in args.rates.split(",")),
        train_days=args.train_days,
        trials=args.trials,
        tape_sample=args.tape_sample,
        last_day=args.last_day,
        phase_timeout=args.phase_timeout,
        keep=args.keep,
    )
    return opts, args.out


def main(argv: list[str] | None = None) -> None:
    """Entry point: measure every setting, write the report."""
    opts, out = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench: terminated"))
    result = measure(opts, progress=lambda so_far: write_report(out, render(so_far)))
    write_report(out, render(result))
    log(f"wrote {out}")
