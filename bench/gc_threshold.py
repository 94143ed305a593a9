"""Python's cyclic garbage collector in a run process: CPython's young threshold (700) vs the platform's.

    uv run --frozen python -m bench.gc_threshold [--repeats 5] [--thresholds 700,10000]

One workload, a run as a run worker executes it: `dagster asset materialize` of raw -> bronze -> silver ->
gold features and labels (with the blocking Great Expectations suites) for one day of two synthetic
instruments, through the dagster CLI's entry point in a fresh interpreter with its own instance, lake and
warehouse. The only difference between the settings is CRYPTO_GC_YOUNG_THRESHOLD, which the code
location applies when it loads (crypto_platform/gc_tuning.py). The settings alternate run by run (A B A
B ...), so that a change in the machine's speed hits both. Each process reports its CPU time, the time
its collector spent per generation and how often it ran, and its peak RSS. Results go to bench/GC.md.
`measure(Options) -> Result`, `render(Result) -> str`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.report import LoadAvg, Machine, Summary, command, machine_section, minute, table, write_report

PROJECT = Path(__file__).resolve().parents[1]
OUT = PROJECT / "bench" / "GC.md"
DAY = "2024-03-04"
UNIVERSE = """start_date: "2024-01-01"
instruments:
  - {{exchange: sim, symbol: BTC/USDT, source: synthetic, trades_per_minute: {tpm}}}
  - {{exchange: sim, symbol: ETH/USDT, source: synthetic, trades_per_minute: {tpm}}}
"""
CPYTHON = 700  # CPython's own young threshold
SELECTION = "group:raw or group:bronze or group:silver or key:gold/features or key:gold/labels"

# The run, in this fresh interpreter, with the collector's work recorded per generation.
PROBE = """
import gc, json, resource, sys, time
spent = {0: [0, 0.0], 1: [0, 0.0], 2: [0, 0.0]}
began = {}
def watch(phase, info):
    g = info["generation"]
    if phase == "start":
        began[g] = time.process_time()
    else:
        spent[g][0] += 1
        spent[g][1] += time.process_time() - began.pop(g, time.process_time())
gc.callbacks.append(watch)
wall = time.monotonic()
from crypto_platform.cli import dagster_cli
status = dagster_cli(json.loads(sys.argv[1]))
print(json.dumps({
    "status": status, "threshold": gc.get_threshold()[0], "cpu": time.process_time(),
    "wall": time.monotonic() - wall, "gc": spent,
    "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
"""


@dataclass(frozen=True)
class Options:
    """The CLI flags."""

    repeats: int = 5
    thresholds: tuple[int, ...] = (CPYTHON, 10_000)
    trades_per_minute: int = 60
    selection: str = SELECTION  # the assets of the run (the test's tiny run: raw only)


@dataclass(frozen=True)
class Probe:
    """One process's figures."""

    threshold: int
    cpu: float
    wall: float
    gc_seconds: tuple[float, float, float]  # per generation: young, middle, old
    collections: tuple[int, int, int]
    rss_mib: float


@dataclass(frozen=True)
class Result:
    """Every process, in the order they ran, and where they ran."""

    options: Options
    began: datetime
    probes: list[Probe]
    load_avg_before: LoadAvg
    load_avg_after: LoadAvg
    machine: Machine

    def of(self, threshold: int) -> list[Probe]:
        """The processes that ran with `threshold`."""
        return [p for p in self.probes if p.threshold == threshold]


def _run_once(folder: Path, threshold: int, opts: Options) -> Probe:
    """One materialization in a fresh interpreter on its own instance, lake and warehouse."""
    home = folder / "home"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    universe = folder / "instruments.yaml"
    universe.write_text(UNIVERSE.format(tpm=opts.trades_per_minute))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRYPTO_", "DAGSTER_", "MLFLOW_"))}
    env |= {
        "DAGSTER_HOME": str(home),
        "CRYPTO_INSTRUMENTS": str(universe),
        "CRYPTO_LAKE_ROOT": str(folder / "lake"),
        "CRYPTO_WAREHOUSE_PATH": str(folder / "warehouse.duckdb"),
        "CRYPTO_GC_YOUNG_THRESHOLD": str(threshold),
        "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "GX_ANALYTICS_ENABLED": "false",
        "PYTHONWARNINGS": "ignore",
    }
    rng = f"{DAY}|sim.BTC-USDT...{DAY}|sim.ETH-USDT"
    args = ["asset", "materialize", "-m", "crypto_platform.definitions", "--select", opts.selection]
    args += ["--partition-range", rng]
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)], cwd=PROJECT, env=env, capture_output=True, text=True
    )
    lines = out.stdout.strip().splitlines()
    got = json.loads(lines[-1]) if out.returncode == 0 and lines else {"status": out.returncode}
    if got["status"] != 0:
        sys.exit(f"bench.gc_threshold: the run failed (threshold {threshold}):\n{out.stderr[-3000:]}")
    gc_ = got["gc"]
    return Probe(
        threshold=got["threshold"],
        cpu=got["cpu"],
        wall=got["wall"],
        gc_seconds=tuple(gc_[g][1] for g in ("0", "1", "2")),
        collections=tuple(gc_[g][0] for g in ("0", "1", "2")),
        rss_mib=got["rss_mib"],
    )


def measure(opts: Options) -> Result:
    """Every setting `repeats` times, alternating run by run, each in a fresh interpreter and folder."""
    load0, began = os.getloadavg(), datetime.now(UTC)
    probes = []
    with tempfile.TemporaryDirectory(prefix="bench_gc_") as tmp:
        for i in range(opts.repeats):
            for threshold in opts.thresholds:
                probes.append(_run_once(Path(tmp) / f"{i}-{threshold}", threshold, opts))
    return Result(opts, began, probes, load0, os.getloadavg(), Machine.current())


def render(r: Result) -> str:
    """The markdown report GC.md: medians per setting side by side, and their ratio to the first."""
    base, *others = r.options.thresholds

    def med(threshold: int, figure) -> float:
        return Summary.of([figure(p) for p in r.of(threshold)]).p50

    figures = [
        ("process CPU (s)", lambda p: p.cpu, "{:.1f}"),
        ("wall (s)", lambda p: p.wall, "{:.1f}"),
        ("collector, all generations (CPU s)", lambda p: sum(p.gc_seconds), "{:.2f}"),
        ("collector, full collections (CPU s)", lambda p: p.gc_seconds[2], "{:.2f}"),
        ("full collections (count)", lambda p: p.collections[2], "{:.0f}"),
        ("young collections (count)", lambda p: p.collections[0], "{:.0f}"),
        ("peak RSS (MiB)", lambda p: p.rss_mib, "{:.0f}"),
    ]
    named = [f"{t:,}" + (" (CPython)" if t == CPYTHON else "") for t in r.options.thresholds]
    header = ["median per process", *named]
    header += [f"{t:,} / {base:,}" for t in others]
    rows = []
    for name, figure, fmt in figures:
        values = [med(t, figure) for t in r.options.thresholds]
        ratios = [f"{v / values[0]:.2f}" if values[0] else "n/a" for v in values[1:]]
        rows.append([name, *(fmt.format(v) for v in values), *ratios])
    cpu = {t: med(t, lambda p: p.cpu) for t in r.options.thresholds}
    gc_cpu = {t: med(t, lambda p: sum(p.gc_seconds)) for t in r.options.thresholds}
    flags = [("--repeats", r.options.repeats), ("--thresholds", ",".join(map(str, r.options.thresholds)))]
    if r.options.trades_per_minute != Options.trades_per_minute:
        flags.append(("--trades-per-minute", r.options.trades_per_minute))
    what = "raw -> bronze -> silver -> gold features and labels (with the blocking Great Expectations suites)"
    if r.options.selection != SELECTION:
        what = f"`{r.options.selection}`"
        flags.append(("--select", f"'{r.options.selection}'"))
    lines = [
        "# Python's garbage collector in a run process",
        "",
        f"Generated by `{command('bench.gc_threshold', flags)}` on {minute(r.began)} UTC: "
        f"{r.options.repeats} fresh interpreters per setting, the settings alternating run by run. Each "
        f"runs `dagster asset materialize` of {what} for {DAY} of two synthetic instruments at "
        f"{r.options.trades_per_minute} trades/min, on its own instance, lake and warehouse; only "
        "CRYPTO_GC_YOUNG_THRESHOLD differs (the young generation's threshold, applied when the code "
        "location loads: crypto_platform/gc_tuning.py).",
        "",
        table(header, rows, "l" + "r" * (len(header) - 1)),
        "",
        f"With {named[0]} the collector took {gc_cpu[base]:.2f} of {cpu[base]:.1f} CPU seconds "
        f"({gc_cpu[base] / cpu[base]:.0%}) of the run process: mostly full collections, each walking "
        "every object of a heap that Dagster, polars and Great Expectations fill with long-lived ones."
        + "".join(
            f" With {t:,}: {gc_cpu[t]:.2f} of {cpu[t]:.1f} ({gc_cpu[t] / cpu[t]:.0%})." for t in others
        ),
        "",
        "Every process:",
        "",
        table(
            ["#", "threshold", "CPU (s)", "wall (s)", "collector (s)", "full collections", "peak RSS (MiB)"],
            [
                [
                    i + 1,
                    f"{p.threshold:,}",
                    f"{p.cpu:.1f}",
                    f"{p.wall:.1f}",
                    f"{sum(p.gc_seconds):.2f}",
                    p.collections[2],
                    f"{p.rss_mib:.0f}",
                ]
                for i, p in enumerate(r.probes)
            ],
            "rrrrrrr",
        ),
        "",
        *machine_section(r.machine, r.load_avg_before, r.load_avg_after),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Parse the flags, measure, write bench/GC.md."""
    ap = argparse.ArgumentParser(prog="python -m bench.gc_threshold", description=__doc__)
    ap.add_argument("--repeats", type=int, default=Options.repeats)
    ap.add_argument("--thresholds", default=",".join(map(str, Options.thresholds)), help="e.g. 700,10000")
    ap.add_argument("--trades-per-minute", type=int, default=Options.trades_per_minute)
    ap.add_argument("--select", default=SELECTION, help="the run's asset selection")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    thresholds = tuple(int(t) for t in args.thresholds.split(","))
    result = measure(Options(args.repeats, thresholds, args.trades_per_minute, args.select))
    write_report(args.out, render(result))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
