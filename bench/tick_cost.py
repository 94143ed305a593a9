"""The fixed cost of a live run, piece by piece, each measured in a fresh interpreter (as a run worker).

    uv run --frozen python -m bench.tick_cost [--before REV] [--repeats 3] [--mlflow-uri URI]

1. Loading the code location (`import crypto_platform.definitions`, what every run worker, code
   server and test subprocess does): wall time and which heavy libraries it imported, for this tree
   and for git revision `--before` (extracted to a temp folder), median of `--repeats` processes.
2. The blocking quality gate on one live partition (a fast instrument's day up to 18:00 UTC, 1,000
   trades/min, as bronze): the Great Expectations suite (import + first validation, then a second
   validation in the same process) against the polars contract of the same rules.
3. With `--mlflow-uri` (a store with a 'challenger' or 'champion' of crypto_return_lgbm, e.g. the
   freshness bench's `--keep` root): the served model, loaded in a fresh process (import + load) and
   again in the same process (the per-process cache keyed by version and artifact digest).
Results go to bench/TICK_COST.md. `measure(Options) -> Result`, `render(Result) -> str`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.report import LoadAvg, Machine, machine_section, minute, table, write_report

PROJECT = Path(__file__).resolve().parents[1]
OUT = PROJECT / "bench" / "TICK_COST.md"
HEAVY = ("scipy", "great_expectations", "mlflow", "optuna", "lightgbm", "sklearn", "ccxt", "pandas", "boto3")
DAY = datetime(2024, 3, 4, tzinfo=UTC)
UNTIL = DAY + timedelta(hours=18)

LOAD_PROBE = f"""
import json, sys, time
t = time.perf_counter()
import crypto_platform.definitions
print(json.dumps({{"s": time.perf_counter() - t, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""

GATE_PROBE = """
import json, sys, time
from datetime import datetime
import polars as pl
df = pl.read_parquet(sys.argv[1])
start, end = datetime.fromisoformat(sys.argv[2]), datetime.fromisoformat(sys.argv[3])
t0 = time.perf_counter()
if sys.argv[4] == "gx":
    from crypto_platform.quality.expectations import validate_bronze as check
else:
    from crypto_platform.quality.contract import check_bronze as check
t1 = time.perf_counter(); first = check(df, start, end); t2 = time.perf_counter()
check(df, start, end); t3 = time.perf_counter()
out = {"import": t1 - t0, "first": t2 - t1, "again": t3 - t2}
print(json.dumps({**out, "ok": first.success, "rows": df.height}))
"""

MODEL_PROBE = """
import json, sys, time
t0 = time.perf_counter()
from crypto_platform.ml import model_cache, registry
t1 = time.perf_counter()
try:
    m = model_cache.load_alias(sys.argv[1], "crypto_return_lgbm", registry.CHAMPION); alias = "champion"
except registry.NoChampionError:
    m = model_cache.load_alias(sys.argv[1], "crypto_return_lgbm", registry.CHALLENGER); alias = "challenger"
t2 = time.perf_counter()
model_cache.load_alias(sys.argv[1], "crypto_return_lgbm", alias)
t3 = time.perf_counter()
out = {"import": t1 - t0, "load": t2 - t1, "cached": t3 - t2}
print(json.dumps({**out, "version": m.info.version, "alias": alias}))
"""


@dataclass(frozen=True)
class Options:
    """The CLI flags."""

    before: str = "ffb8baa"  # main before issue 12's tick-cost work
    repeats: int = 3
    mlflow_uri: str = ""


@dataclass(frozen=True)
class Result:
    """Medians (seconds) of each probe, and where they ran."""

    options: Options
    began: datetime
    load_now: dict
    load_before: dict
    gate_gx: dict
    gate_contract: dict
    model: dict | None
    load_avg_before: LoadAvg
    load_avg_after: LoadAvg
    machine: Machine


def _probe(code: str, args: list[str], cwd: Path, repeats: int, extra_path: Path | None = None) -> dict:
    """Run `code` in `repeats` fresh interpreters; the median of every numeric field (others: the last)."""
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "GX_ANALYTICS_ENABLED": "false"}
    if extra_path is not None:
        env["PYTHONPATH"] = str(extra_path)
    runs = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-W", "ignore", "-c", code, *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
        )
        if out.returncode:
            sys.exit(f"bench.tick_cost: probe failed in {cwd}:\n{out.stderr[-2000:]}")
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    merged = dict(runs[-1])
    for k, v in runs[-1].items():
        if isinstance(v, float):
            merged[k] = statistics.median(r[k] for r in runs)
    return merged


def _bronze_day(folder: Path) -> Path:
    """One fast synthetic instrument's trades from 00:00 to 18:00 UTC as bronze, in a Parquet file."""
    from crypto_platform.settings import Instrument
    from crypto_platform.sources.synthetic import SyntheticSource
    from crypto_platform.transforms.trades import to_bronze

    inst = Instrument("sim", "S01/USDT", "synthetic", {"trades_per_minute": 1000})
    trades = SyntheticSource(seed=7, now=lambda: UNTIL).fetch(inst, DAY, UNTIL).trades
    path = folder / "bronze.parquet"
    to_bronze(trades, DAY, DAY + timedelta(days=1)).bronze.write_parquet(path)
    return path


def measure(opts: Options) -> Result:
    """Every probe, in fresh interpreters."""
    load0, began = os.getloadavg(), datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="tick_cost_") as tmp:
        old = Path(tmp) / "before"
        old.mkdir()
        archive = subprocess.run(
            ["git", "archive", opts.before], cwd=PROJECT, capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
        load_before = _probe(LOAD_PROBE, [], old, opts.repeats, extra_path=old)
        load_now = _probe(LOAD_PROBE, [], PROJECT, opts.repeats)
        day = _bronze_day(Path(tmp))
        window = [str(day), DAY.isoformat(), (DAY + timedelta(days=1)).isoformat()]
        gx = _probe(GATE_PROBE, [*window, "gx"], PROJECT, opts.repeats)
        contract = _probe(GATE_PROBE, [*window, "contract"], PROJECT, opts.repeats)
        model = _probe(MODEL_PROBE, [opts.mlflow_uri], PROJECT, opts.repeats) if opts.mlflow_uri else None
    return Result(
        opts, began, load_now, load_before, gx, contract, model, load0, os.getloadavg(), Machine.current()
    )


def render(r: Result) -> str:
    """The markdown report TICK_COST.md."""
    s = lambda x: f"{x:.2f}"  # noqa: E731
    heavy = lambda d: ", ".join(d["heavy"]) or "none"  # noqa: E731
    rows = [
        [
            "load the code location (`import crypto_platform.definitions`)",
            s(r.load_before["s"]),
            s(r.load_now["s"]),
        ],
        ["heavy libraries it imports", heavy(r.load_before), heavy(r.load_now)],
    ]
    g, c = r.gate_gx, r.gate_contract
    gate = [
        ["import", s(g["import"]), s(c["import"])],
        ["first validation in the process", s(g["first"]), s(c["first"])],
        ["a second validation (same process)", s(g["again"]), s(c["again"])],
        [
            "**per live run (import + first)**",
            f"**{s(g['import'] + g['first'])}**",
            f"**{s(c['import'] + c['first'])}**",
        ],
        ["verdict on the clean day", "pass" if g["ok"] else "FAIL", "pass" if c["ok"] else "FAIL"],
    ]
    lines = [
        "# The fixed cost of a live run",
        "",
        f"Generated by `uv run --frozen python -m bench.tick_cost --before {r.options.before} --repeats "
        f"{r.options.repeats}{' --mlflow-uri <store>' if r.model else ''}` on {minute(r.began)} UTC. Every "
        f"figure is the median over {r.options.repeats} fresh interpreters, in seconds.",
        "",
        "## Loading the code location (every run worker, code server and test subprocess)",
        "",
        table(["", f"before (`{r.options.before}`)", "now"], rows, "lrr"),
        "",
        f"## The blocking bronze gate on one live partition ({g['rows']:,} trades: a 1,000 trades/min "
        "instrument's day up to 18:00)",
        "",
        table(["", "Great Expectations suite", "polars contract"], gate, "lrr"),
    ]
    if r.model:
        m = r.model
        lines += [
            "",
            f"## The served model (`crypto_return_lgbm` v{m['version']}, {m['alias']})",
            "",
            table(
                ["", "seconds"],
                [
                    ["import the registry (MLflow) in a fresh process", s(m["import"])],
                    [
                        "first load (alias lookup, artifact download + SHA-256 check, pyfunc load)",
                        s(m["load"]),
                    ],
                    ["again in the same process (alias lookup; cached by version + digest)", s(m["cached"])],
                ],
                "lr",
            ),
        ]
    lines += ["", *machine_section(r.machine, r.load_avg_before, r.load_avg_after)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Parse the flags, measure, write bench/TICK_COST.md."""
    ap = argparse.ArgumentParser(prog="python -m bench.tick_cost", description=__doc__)
    ap.add_argument("--before", default=Options.before, help="git revision to compare with")
    ap.add_argument("--repeats", type=int, default=Options.repeats)
    ap.add_argument("--mlflow-uri", default="", help="MLflow store holding crypto_return_lgbm")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    result = measure(Options(args.before, args.repeats, args.mlflow_uri))
    write_report(args.out, render(result))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
