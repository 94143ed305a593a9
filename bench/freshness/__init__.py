"""Live freshness: how long after a minute closes is its prediction readable in DuckDB?

    uv run --frozen python -m bench.freshness [--minutes 10] [--trials 5] [--keep]
    uv run --frozen python -m bench.freshness --minutes 10 --instruments 30,10,3   # issue 12's table

`--instruments N` replaces the embedded universe by N synthetic instruments (a third of them at
`--fast-rate` trades/min); several values run one full measurement each (its own temp root and
`dagster dev`, one after the other) and write one report with a summary table and a section each.

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
import json
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.freshness.harness import PROJECT, log
from bench.freshness.markdown import render, render_many, summary
from bench.freshness.measurement import Options, Result, measure
from bench.report import write_report

OUT = PROJECT / "bench" / "FRESHNESS.md"

__all__ = ["Options", "Result", "main", "measure", "render"]


def parse_args(argv: list[str] | None) -> tuple[Options, Path, list[int], Path | None]:
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
    ap.add_argument(
        "--instruments", default="0", help="N synthetic instruments, or N,M,... (one run each); 0: embedded"
    )
    ap.add_argument("--base-rate", type=float, default=60.0, help="trades/min of two thirds of them")
    ap.add_argument("--fast-rate", type=float, default=1000.0, help="trades/min of the fast third")
    ap.add_argument("--warm-limit", type=float, default=900.0, help="seconds allowed to the first prediction")
    ap.add_argument("--json", type=Path, default=None, help="also write the summary figures as JSON")
    ap.add_argument("--prep-cache", default="", help="folder sharing history + model between measurements")
    args = ap.parse_args(argv)
    counts = [int(x) for x in str(args.instruments).split(",")]
    opts = Options(
        args.minutes,
        args.trials,
        args.restart_at,
        args.downtime,
        args.grace,
        args.keep,
        counts[0],
        args.base_rate,
        args.fast_rate,
        args.warm_limit,
        args.prep_cache,
    )
    return opts, args.out, counts, args.json


def main(argv: list[str] | None = None) -> None:
    """Entry point: prepare, run live for `--minutes`, restart once, measure, write the report."""
    opts, out, counts, as_json = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench: terminated"))
    if len(counts) > 1:
        return _many(argv or sys.argv[1:], counts, out)
    result = measure(opts)
    shown = "" if out.resolve() == OUT.resolve() else _relative(out)
    write_report(out, render(result, shown))
    if as_json:
        as_json.write_text(json.dumps(summary(result)))
    log(f"wrote {out}")


def _relative(path: Path) -> str:
    """`path` as the command line would name it from the project folder."""
    try:
        return str(path.resolve().relative_to(PROJECT))
    except ValueError:
        return str(path)


def _without(argv: list[str], flags: tuple[str, ...]) -> list[str]:
    """argv without the given flags and their values (`--flag v` or `--flag=v`)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in flags:
            skip = True
        elif not a.startswith(tuple(f + "=" for f in flags)):
            out.append(a)
    return out


def _many(argv: list[str], counts: list[int], out: Path) -> None:
    """One measurement per instrument count, each in its own process (the universe is fixed per
    process), then one report: the summary table and every measurement's section."""
    work = Path(tempfile.mkdtemp(prefix="crypto_freshness_many_"))
    rest = _without(argv, ("--instruments", "--out", "--json", "--prep-cache"))
    rest += ["--prep-cache", str(work / "prep")]  # history + model prepared once for all of them
    done: list[tuple[dict, str]] = []
    for n in counts:
        md, js = work / f"{n}.md", work / f"{n}.json"
        cmd = [sys.executable, "-m", "bench.freshness", *rest, "--instruments", str(n), "--out", str(md)]
        log(f"--- {n} instruments: {' '.join(cmd[1:])}")
        if subprocess.run([*cmd, "--json", str(js)], cwd=PROJECT).returncode or not js.exists():
            log(f"{n} instruments: the measurement failed (see its output above); reported as such")
            done.append(({"instruments": n, "failed": True}, f"The measurement with {n} instruments failed."))
        else:
            done.append((json.loads(js.read_text()), md.read_text()))
        shown = _without(argv, ("--out", "--json", "--prep-cache"))
        write_report(out, render_many(shown, done))  # after each: what fits before a deadline is kept
    log(f"wrote {out}")
