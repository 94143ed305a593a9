"""The bronze quality contract of one live tick: the whole open day (full) vs the tick's delta (incremental).

    uv run --frozen python -m bench.contract_delta [--rate 1000] [--at 23:00] [--deltas 60] [--repeats 7]

One open bronze partition late in the day, as the live ticks leave it: a base holding the trades up to
`--deltas` minutes before `--at` (the last whole rewrite), one delta per minute since, validated and
proven, then the tick's own one-minute delta. Both ways run the check's real per-partition path
(`checks.bronze_cells.validate_bronze_cell` with the polars contract, lake reads and the proof's write
included), interleaved in one process: full = read and validate every row; incremental = the new
delta plus the seam probe of its trade ids in the proven files. Before each incremental run the proof
of the files before the tick is put back, so every repeat judges the same tick. Trades are generated
like the simulator's (ids = minute * 100,000 + sequence, as strings; seconds spread over the minute).
Writes bench/CONTRACT_DELTA.md; `measure(Options) -> Result`, `render(Result) -> str`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import polars as pl

from bench.report import LoadAvg, Machine, command, loads, minute, table, write_report
from crypto_platform import tables
from crypto_platform.checks.bronze_cells import proof_key, validate_bronze_cell
from crypto_platform.lineage import Lineage, new_id
from crypto_platform.partitions import DayPartition
from crypto_platform.quality.contract import check_bronze
from crypto_platform.resources.lake import LINEAGE_KEY, PART_FILE, LakeResource
from crypto_platform.schemas import BRONZE_TRADES, conform
from crypto_platform.settings import load_universe

OUT = Path(__file__).resolve().parents[1] / "bench" / "CONTRACT_DELTA.md"
DAY = date(2024, 3, 4)
IDS_PER_MINUTE = 100_000  # as the simulator numbers its trades


@dataclass(frozen=True)
class Options:
    rate: int = 1000  # trades per minute
    at: str = "23:00"  # the tick's minute (UTC)
    deltas: int = 60  # one-minute deltas stored on the base before the tick (MAX_DELTAS is 120)
    repeats: int = 7


@dataclass(frozen=True)
class Way:
    """One way of validating the tick: medians and every repeat's CPU and wall seconds."""

    name: str
    mode: str
    rows_validated: int
    cpu_s: list[float]
    wall_s: list[float]

    @property
    def cpu(self) -> float:
        return statistics.median(self.cpu_s)

    @property
    def wall(self) -> float:
        return statistics.median(self.wall_s)


@dataclass(frozen=True)
class Result:
    options: Options
    rows: int  # the partition's trades after the tick
    files: int  # base + deltas after the tick
    base_mb: float
    full: Way
    incremental: Way
    same_verdict: bool  # every outcome of both ways equal (counts, examples)
    started: datetime
    load_before: LoadAvg
    load_after: LoadAvg
    machine: Machine


def trades(first_minute: int, minutes: int, rate: int, seed: int) -> pl.DataFrame:
    """`rate` valid trades per minute for `minutes` minutes from `first_minute` of DAY, in (ts, id) order."""
    rng = np.random.default_rng(seed)
    n = minutes * rate
    mins = np.repeat(np.arange(first_minute, first_minute + minutes), rate)
    seq = np.tile(np.arange(rate), minutes)
    start_us = int(datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC).timestamp() * 1_000_000)
    price = 60_000 + np.cumsum(rng.normal(0, 2, n))
    amount = rng.exponential(0.05, n) + 1e-6
    df = pl.DataFrame(
        {
            "exchange": "sim",
            "symbol": "BTC/USDT",
            "trade_id": (mins * IDS_PER_MINUTE + seq).astype(str),
            "ts": pl.Series(start_us + mins * 60_000_000 + seq * 60_000_000 // rate).cast(
                pl.Datetime("us", "UTC")
            ),
            "price": price,
            "amount": amount,
            "cost": price * amount,
            "side": np.where(rng.random(n) < 0.5, "buy", "sell"),
        }
    )
    return conform(df, BRONZE_TRADES, name="bench trades").sort(list(tables.BRONZE_TRADES.order))


def measure(opts: Options, root: Path) -> Result:
    """Build the late-day partition under `root`, then time both ways, interleaved (see the module doc)."""
    hh, mm = (int(x) for x in opts.at.split(":"))
    tick = hh * 60 + mm
    if not opts.deltas <= tick < 24 * 60:
        raise ValueError(
            f"--at {opts.at}: must be a minute of the day at least --deltas ({opts.deltas}) minutes in"
        )
    part = DayPartition(load_universe().instrument("sim.BTC-USDT"), DAY)
    lake = LakeResource(root=str(root / "lake"))
    key = f"{lake.part_key(tables.BRONZE_TRADES, part)}/{PART_FILE}"
    meta = {LINEAGE_KEY: Lineage(1, id=new_id()).to_json()}
    base_minutes = tick - opts.deltas
    lake.store.write(key, trades(0, base_minutes, opts.rate, seed=1), meta)
    for k in range(opts.deltas):
        lake.store.append(key, trades(base_minutes + k, 1, opts.rate, seed=10 + k), meta)
    proven = validate_bronze_cell(lake, part, check_bronze, incremental=True)  # full: records the proof
    assert proven is not None and proven.success, proven and proven.summary()
    proof_doc, _ = lake.store.read_json(proof_key(lake, part))
    lake.store.append(key, trades(tick, 1, opts.rate, seed=99), meta)  # the tick
    load_before, started = os.getloadavg(), datetime.now(UTC)
    runs: dict[bool, list[tuple[float, float, object]]] = {False: [], True: []}
    for _ in range(opts.repeats):
        for incremental in (False, True):
            lake.store.write_json(proof_key(lake, part), proof_doc)
            c0, w0 = time.process_time(), time.perf_counter()
            res = validate_bronze_cell(lake, part, check_bronze, incremental=incremental)
            runs[incremental].append((time.process_time() - c0, time.perf_counter() - w0, res))
    load_after = os.getloadavg()
    full, inc = runs[False][-1][2], runs[True][-1][2]

    def way(name: str, incremental: bool) -> Way:
        res = runs[incremental][-1][2]
        return Way(
            name,
            res.parameters["validation"],
            int(res.parameters["rows_validated"]),
            [r[0] for r in runs[incremental]],
            [r[1] for r in runs[incremental]],
        )

    current = lake.store.current(key)
    return Result(
        options=opts,
        rows=full.row_count,
        files=len(current.uris),
        base_mb=Path(current.uri).stat().st_size / 1e6,
        full=way("full (today)", False),
        incremental=way("incremental (delta + seam)", True),
        same_verdict=(full.success, full.row_count, full.outcomes)
        == (inc.success, inc.row_count, inc.outcomes),
        started=started,
        load_before=load_before,
        load_after=load_after,
        machine=Machine.current(),
    )


def render(r: Result) -> str:
    o = r.options
    flags = [("--rate", o.rate), ("--at", o.at), ("--deltas", o.deltas), ("--repeats", o.repeats)]
    rows = [
        [w.name, w.mode, f"{w.rows_validated:,}", f"{w.cpu:.3f}", f"{w.wall:.3f}"]
        for w in (r.full, r.incremental)
    ]
    cpu_ratio, wall_ratio = r.full.cpu / r.incremental.cpu, r.full.wall / r.incremental.wall
    rows.append(["ratio full / incremental", "", "", f"{cpu_ratio:.0f}x", f"{wall_ratio:.0f}x"])
    return "\n".join(
        [
            "# Bronze quality contract per tick: full vs incremental",
            "",
            f"Generated by `{command('bench.contract_delta', flags)}` on {minute(r.started)} UTC.",
            "",
            f"Load: one open bronze partition of a {o.rate:,} trades/min instrument at {o.at} UTC: "
            f"{r.rows:,} trades in {r.files} files (a {r.base_mb:.1f} MB base up to {o.deltas} minutes "
            f"before, {o.deltas} one-minute deltas since, all validated and proven, then the tick's "
            f"one-minute delta of {o.rate:,} trades). Each way is the bronze check's per-partition path "
            "(`validate_bronze_cell`, polars contract: lake reads, validation, the proof's write), "
            f"interleaved, {o.repeats} repeats each; medians. CPU = process CPU seconds (all threads).",
            "",
            table(["way", "mode", "rows validated", "CPU s (median)", "wall s (median)"], rows, "llrrr"),
            "",
            f"Verdicts equal (every outcome, counts and examples): **{'yes' if r.same_verdict else 'NO'}**.",
            "",
            f"Machine: {r.machine.cpu}, {r.machine.nproc} cores shared with other engineers' work; "
            f"1/5/15-minute load average {loads(r.load_before)} before, {loads(r.load_after)} after "
            "(wall times suffer from the load more than CPU seconds).",
            "",
            "Every repeat (CPU s / wall s): "
            + "; ".join(
                f"{w.name}: " + ", ".join(f"{c:.3f}/{s:.3f}" for c, s in zip(w.cpu_s, w.wall_s, strict=True))
                for w in (r.full, r.incremental)
            ),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.contract_delta", description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=Options.rate, help="trades per minute")
    ap.add_argument("--at", default=Options.at, help="the tick's minute, HH:MM UTC")
    ap.add_argument("--deltas", type=int, default=Options.deltas, help="deltas stored before the tick")
    ap.add_argument("--repeats", type=int, default=Options.repeats, help="timed runs per way")
    ap.add_argument("--output", default=str(OUT), help="markdown report to write")
    args = ap.parse_args(argv)
    opts = Options(args.rate, args.at, args.deltas, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(opts, Path(tmp))
    write_report(Path(args.output), render(result))
    print(render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
