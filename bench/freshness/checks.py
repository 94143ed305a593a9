"""What the freshness bench checks after the live window: bronze vs the simulator's tape, closes, run stats.

The comparisons are pure functions of polars frames / run records, so they are tested on their own.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from bench.report import Summary

TAPE_COLUMNS = ["trade_id", "timestamp_ms", "price", "amount", "side"]
SIM_SEED = 7  # the embedded universe's simulator seed: the live sensor's source is built with it


# ------------------------------------------------------------------------------------------- tape


@dataclass(frozen=True)
class TapeDiff:
    """Bronze trades against the expected tape, joined on trade id."""

    bronze: int
    tape: int
    missing: int  # on the tape, not in bronze
    extra: int  # in bronze, not on the tape
    duplicates: int  # bronze rows beyond one per trade id
    differ: int  # same id, different timestamp / price / amount / side

    @property
    def ok(self) -> bool:
        """No loss, no duplicates, no difference."""
        return (
            self.missing == 0
            and self.extra == 0
            and self.differ == 0
            and self.bronze == self.tape
            and self.duplicates == 0
        )


def compare_tape(bronze: pl.DataFrame, tape: pl.DataFrame) -> TapeDiff:
    """Compare bronze trades (`ts`) with a source tape (`timestamp_ms`) on trade id and values."""
    b = bronze.select(
        "trade_id", pl.col("ts").dt.epoch("ms").alias("timestamp_ms"), "price", "amount", "side"
    )
    t = tape.select(TAPE_COLUMNS)
    joined = b.join(t, on="trade_id", how="full", suffix="_tape", coalesce=True)
    both = pl.col("timestamp_ms").is_not_null() & pl.col("timestamp_ms_tape").is_not_null()
    changed = pl.any_horizontal(pl.col(c) != pl.col(f"{c}_tape") for c in TAPE_COLUMNS[1:])
    return TapeDiff(
        bronze=bronze.height,
        tape=tape.height,
        missing=joined.filter(pl.col("timestamp_ms").is_null()).height,
        extra=joined.filter(pl.col("timestamp_ms_tape").is_null()).height,
        duplicates=bronze.height - bronze["trade_id"].n_unique(),
        differ=joined.filter(both & changed).height,
    )


@dataclass(frozen=True)
class TapeCheck:
    """One live partition: its covered span and raw batches, and bronze against the tape."""

    partition: str
    covered_from: datetime
    covered_to: datetime
    batches: int
    raw_rows: int
    diff: TapeDiff


def verify_tape(lake_root: Path, instruments: list[str], days: list) -> list[TapeCheck]:
    """bronze == the simulator's tape over each live partition's covered span."""
    from crypto_platform import tables
    from crypto_platform.partitions import DayPartition
    from crypto_platform.resources.lake import LakeResource
    from crypto_platform.settings import load_universe
    from crypto_platform.sources.factory import build_source

    lake = LakeResource(root=str(lake_root))
    out = []
    for key in instruments:
        inst = load_universe().instrument(key)
        for day in days:
            part = DayPartition(inst, day)
            manifest = lake.read_manifest(tables.RAW_TRADES, part)
            bronze = lake.read_partition(tables.BRONZE_TRADES, part)
            if not manifest.exists or bronze is None:
                continue
            cov = manifest.coverage
            source = build_source(inst, seed=SIM_SEED, now=lambda c=cov.covered_to: c)
            tape = source.fetch(inst, cov.covered_from, cov.covered_to).trades
            raw_rows = sum(bt.rows for bt in manifest.batches)
            diff = compare_tape(bronze, tape)
            out.append(
                TapeCheck(part.key, cov.covered_from, cov.covered_to, len(manifest.batches), raw_rows, diff)
            )
    return out


def final_closes(trades: pl.DataFrame, symbol: str) -> dict[tuple[str, int], float]:
    """(symbol, minute close epoch s) -> price of the minute's last trade, from a tape."""
    finals: dict[tuple[str, int], float] = {}
    for ts_ms, price in (
        trades.sort("timestamp_ms", maintain_order=True).select("timestamp_ms", "price").iter_rows()
    ):
        finals[(symbol, (ts_ms // 60_000 + 1) * 60)] = price
    return finals


def check_closes(rows: list[dict], instruments: list[str]) -> tuple[int, int]:
    """(checked, equal): first-seen prediction rows carrying the final close of their minute on the tape."""
    from crypto_platform.settings import load_universe
    from crypto_platform.sources.factory import build_source

    if not rows:
        return 0, 0
    by_symbol = {load_universe().instrument(k).symbol: load_universe().instrument(k) for k in instruments}
    start = datetime.fromtimestamp(min(r["close"] for r in rows) - 60, UTC)
    end = datetime.fromtimestamp(max(r["close"] for r in rows), UTC)
    finals: dict[tuple[str, int], float] = {}
    for sym, inst in by_symbol.items():
        trades = build_source(inst, seed=SIM_SEED, now=lambda e=end: e).fetch(inst, start, end).trades
        finals.update(final_closes(trades, sym))
    equal = sum(1 for r in rows if finals.get((r["symbol"], r["close"])) == r["close_px"])
    return len(rows), equal


# ---------------------------------------------------------------------------------------- warehouse


def poll(warehouse: Path, since_ms: int) -> list[tuple[str, int, float]]:
    """(symbol, minute ms, close) of every prediction row from `since_ms` on; [] while unreadable."""
    import duckdb

    try:
        con = duckdb.connect(str(warehouse), read_only=True)
    except (duckdb.IOException, duckdb.CatalogException, duckdb.InvalidInputException):
        return []
    try:
        return con.execute(
            "select symbol, epoch_ms(ts), close from gold.predictions where epoch_ms(ts) >= ?", [since_ms]
        ).fetchall()
    except duckdb.Error:
        return []
    finally:
        con.close()


# -------------------------------------------------------------------------------------- live runs


def live_runs_in_progress(home: Path) -> int:
    """Number of live runs the instance shows as executing right now."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        return instance.get_runs_count(
            dg.RunsFilter(tags={"crypto/live": "true"}, statuses=[dg.DagsterRunStatus.STARTED])
        )


@dataclass(frozen=True)
class RunStats:
    """Live runs from the instance: statuses, stage and step durations, overlaps, the restart's effect."""

    runs: int
    statuses: dict[str, int]
    detect: Summary  # minute close -> run created
    launch: Summary  # run created -> worker started
    execute: Summary  # worker started -> run finished (successful runs)
    overlaps: int
    duplicate_keys: int
    unfinished: int
    interrupted: list[int]  # failed runs in flight at each stop of dagster dev
    partitions: int
    steps: dict[str, Summary]


def _step_durations(instance: Any, records: list) -> dict[str, list[float]]:
    """Seconds from STEP_START to STEP_SUCCESS of every step of the successful runs."""
    import dagster as dg

    steps: dict[str, list[float]] = {}
    for r in records:
        if r.dagster_run.status != dg.DagsterRunStatus.SUCCESS:
            continue
        began: dict[str, float] = {}
        for e in instance.all_logs(r.dagster_run.run_id):
            kind = e.dagster_event.event_type_value if e.dagster_event else None
            if kind == "STEP_START":
                began[e.step_key] = e.timestamp
            elif kind == "STEP_SUCCESS" and e.step_key in began:
                steps.setdefault(e.step_key, []).append(e.timestamp - began[e.step_key])
    return steps


def _overlaps(by_partition: dict[str, list]) -> int:
    """Runs of the same partition that started before the previous one ended."""
    overlaps = 0
    for spans in by_partition.values():
        spans.sort(key=lambda s: (s[0], s[1] is None, s[1] or 0.0))
        overlaps += sum(1 for (_, end), (nxt, _) in itertools.pairwise(spans) if end is None or nxt < end)
    return overlaps


def _detect_delay(run: Any, created: float) -> float | None:
    """Seconds from the minute close a run was created for to its creation (new-minute runs only)."""
    run_key = run.tags.get("dagster/run_key", "")
    try:
        minute = datetime.strptime(run_key.rsplit("@", 1)[-1], "%Y-%m-%dT%H:%M").replace(tzinfo=UTC)
    except ValueError:
        return None
    # a run over several partitions names each of their reasons ("changed,new")
    new = "new" in run.tags.get("crypto/live_trigger", "").split(",")
    return created - minute.timestamp() if new else None


def summarize_runs(records: list, stops: list[float], steps: dict[str, list[float]]) -> RunStats:
    """RunStats of the live run records (ascending), given the times dagster dev was stopped."""
    import dagster as dg

    statuses: dict[str, int] = {}
    detect, launch, execute = [], [], []
    by_partition: dict[str, list] = {}
    keys: dict[str, int] = {}
    interrupted = [0] * len(stops)
    for r in records:
        run = r.dagster_run
        statuses[run.status.value] = statuses.get(run.status.value, 0) + 1
        run_key = run.tags.get("dagster/run_key", "")
        keys[run_key] = keys.get(run_key, 0) + 1
        created = r.create_timestamp.timestamp()
        covers = run.tags.get(
            "dagster/partition"
        ) or "..".join(  # one key, or a range (a live run per exchange)
            run.tags.get(f"dagster/asset_partition_range_{end}", "?") for end in ("start", "end")
        )
        by_partition.setdefault(covers, []).append((created, r.end_time))
        if (delay := _detect_delay(run, created)) is not None:
            detect.append(delay)
        if r.start_time:
            launch.append(r.start_time - created)
            if r.end_time and run.status == dg.DagsterRunStatus.SUCCESS:
                execute.append(r.end_time - r.start_time)
        for n, stop in enumerate(stops):
            if run.status == dg.DagsterRunStatus.FAILURE and created < stop <= (r.end_time or 0) + 1:
                interrupted[n] += 1
    return RunStats(
        runs=len(records),
        statuses=statuses,
        detect=Summary.of(detect),
        launch=Summary.of(launch),
        execute=Summary.of(execute),
        overlaps=_overlaps(by_partition),
        duplicate_keys=sum(n - 1 for n in keys.values() if n > 1),
        unfinished=sum(v for k, v in statuses.items() if k not in ("SUCCESS", "FAILURE", "CANCELED")),
        interrupted=interrupted,
        partitions=len(by_partition),
        steps={k: Summary.of(v) for k, v in steps.items()},
    )


def run_stats(home: Path, stops: list[float]) -> RunStats:
    """Live runs from the instance: statuses, where the time goes, overlaps, the restart's effect."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = instance.get_run_records(
            filters=dg.RunsFilter(tags={"crypto/live": "true"}), ascending=True
        )
        steps = _step_durations(instance, records)
    return summarize_runs(list(records), stops, steps)
