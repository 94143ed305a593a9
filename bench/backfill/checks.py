"""What a backfill left behind, read from the instance and the lake: runs launched and failed, partitions
materialized per asset, bronze rows against raw, and bronze against the simulator's tape."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from bench.freshness.checks import TapeCheck, verify_tape
from bench.report import Summary


@dataclass(frozen=True)
class RunFigures:
    """The runs of one backfill: how many, how they ended, how long they took (start to end, s)."""

    launched: int
    succeeded: int
    failed: int
    other: int  # canceled, or still not finished
    durations: Summary
    partitions_per_run: Summary  # partitions each run covered
    step_seconds: dict[str, float]  # step key -> seconds summed over the runs (where the time goes)


@dataclass(frozen=True)
class Coverage:
    """Partitions materialized per asset against the partitions asked for."""

    expected: int
    by_asset: dict[str, int]  # asset key -> materialized partitions among the expected ones

    @property
    def complete(self) -> bool:
        """Every asset has every expected partition."""
        return bool(self.by_asset) and all(n == self.expected for n in self.by_asset.values())


def _run_partitions(tags: dict[str, str]) -> int:
    """How many partitions a backfill run covers (one key, or a range tagged start..end)."""
    from crypto_platform.automation.backfills import partition_keys

    if "dagster/partition" in tags:
        return 1
    start, end = (
        tags.get("dagster/asset_partition_range_start"),
        tags.get("dagster/asset_partition_range_end"),
    )
    return len(partition_keys(f"{start}...{end}")) if start and end else 0


def run_figures(home: Path, backfill_id: str) -> RunFigures:
    """Runs of backfill `backfill_id` in the instance at `home`."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = instance.get_run_records(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
        steps: dict[str, float] = {}
        for r in records:
            for st in instance.get_run_step_stats(r.dagster_run.run_id):
                if st.start_time and st.end_time:
                    steps[st.step_key] = steps.get(st.step_key, 0.0) + st.end_time - st.start_time
    status = [r.dagster_run.status for r in records]
    ok = status.count(dg.DagsterRunStatus.SUCCESS)
    failed = status.count(dg.DagsterRunStatus.FAILURE)
    durations = [r.end_time - r.start_time for r in records if r.start_time and r.end_time]
    parts = [float(_run_partitions(dict(r.dagster_run.tags))) for r in records]
    by_time = dict(sorted(steps.items(), key=lambda kv: -kv[1]))
    return RunFigures(
        len(records),
        ok,
        failed,
        len(records) - ok - failed,
        Summary.of(durations),
        Summary.of(parts),
        by_time,
    )


def coverage(home: Path, backfill_id: str, expected: list[str]) -> Coverage:
    """Partitions among `expected` materialized, for every asset the backfill selected."""
    import dagster as dg

    want = set(expected)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        keys = instance.get_backfill(backfill_id).asset_selection or []
        by_asset = {
            k.to_user_string(): len(want & set(instance.get_materialized_partitions(k))) for k in keys
        }
    return Coverage(len(want), dict(sorted(by_asset.items())))


@dataclass(frozen=True)
class RowCheck:
    """Rows of every partition of the range: raw rows committed = bronze + rejects, and the totals."""

    partitions: int
    raw_rows: int
    bronze_rows: int
    reject_rows: int
    mismatched: list[
        str
    ]  # partitions whose raw rows != bronze + rejects (duplicates removed count as neither)
    predictions_rows: int
    tape: list[TapeCheck]  # the sample compared with the simulator's tape

    @property
    def ok(self) -> bool:
        """Every partition's rows add up and every sampled partition equals the tape."""
        return not self.mismatched and all(t.diff.ok for t in self.tape)


def rows(
    lake_root: Path, instruments: list[str], days: list[date], tape_sample: int, seed: int = 0
) -> RowCheck:
    """Raw vs bronze + rejects rows of every partition, prediction rows, and bronze vs the simulator's
    tape for `tape_sample` partitions drawn at random (0: all of them)."""
    from crypto_platform import tables
    from crypto_platform.partitions import DayPartition
    from crypto_platform.resources.lake import LakeResource
    from crypto_platform.settings import load_universe

    lake = LakeResource(root=str(lake_root))
    raw = bronze = rejects = preds = 0
    mismatched = []
    for key in instruments:
        inst = load_universe().instrument(key)
        for day in days:
            part = DayPartition(inst, day)
            n_raw = sum(b.rows for b in lake.read_manifest(tables.RAW_TRADES, part).batches)
            n_bronze = _height(lake.read_partition(tables.BRONZE_TRADES, part))
            n_rej = _height(lake.read_partition(tables.TRADE_REJECTS, part))
            preds += _height(lake.read_partition(tables.PREDICTIONS, part))
            raw, bronze, rejects = raw + n_raw, bronze + n_bronze, rejects + n_rej
            if n_raw == 0 or n_raw != n_bronze + n_rej:
                mismatched.append(part.key)
    cells = [(k, d) for k in instruments for d in days]
    sample = cells if tape_sample <= 0 else random.Random(seed).sample(cells, min(tape_sample, len(cells)))
    tape = [t for k, d in sorted(sample) for t in verify_tape(lake_root, [k], [d])]
    return RowCheck(len(cells), raw, bronze, rejects, mismatched, preds, tape)


def _height(df: object) -> int:
    return 0 if df is None else df.height  # type: ignore[attr-defined]
