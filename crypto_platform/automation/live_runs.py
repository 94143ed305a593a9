"""The live sensor's view of runs: which are unfinished or abandoned, whether a partition's downstream
is stale, and how due partitions are grouped into as few range runs as cover exactly them (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

import dagster as dg

from crypto_platform import tables
from crypto_platform.partitions import DayPartition, trade_partitions

LIVE_TAG = "crypto/live"
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
# A run failed because its process was stopped (dagster dev restarted, a worker killed): not the
# partitions' fault, so they are retried together at once, not split into a run each.
FAILURE_REASON_TAG = "dagster/failure_reason"
INTERRUPTED_REASONS = frozenset({"UNEXPECTED_TERMINATION"})
# Runs that only read partitions (the quality_suites cadence): they never hold a partition up.
READ_ONLY_TAG = "crypto/read_only"


# Statuses of a run that may still write the partition.
UNFINISHED = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


# Unfinished statuses that mean a worker process should exist (so a very old one is abandoned).
_WORKER_STATUSES = {
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
}


def _latest_storage_id(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str) -> int | None:
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
    )
    return result.records[0].storage_id if result.records else None


def downstream_stale(instance: dg.DagsterInstance, partition: str, terminal: dg.AssetKey) -> bool:
    """raw/trades of the partition was materialized after the run's last asset (or that never was)."""
    raw = _latest_storage_id(instance, tables.RAW_TRADES.key, partition)
    if raw is None:
        return False
    done = _latest_storage_id(instance, terminal, partition)
    return done is None or raw > done


def is_abandoned(record: Any, now: datetime, stale_after: timedelta) -> bool:
    """An unfinished run whose worker should have finished long ago (e.g. it died with the daemon)."""
    if record.dagster_run.status not in _WORKER_STATUSES:
        return False  # queued runs wait for a slot; they are not abandoned
    started = record.start_time or record.create_timestamp.timestamp()
    return now.timestamp() - started > stale_after.total_seconds()


def unfinished_runs(
    instance: dg.DagsterInstance, partition: str, now: datetime, stale_after: timedelta, ranges: Sequence[Any]
) -> tuple[list[str], list[str]]:
    """(active, abandoned) ids of the unfinished runs writing a partition, whoever launched them:
    runs of that one key, and single-run ranges (backfills) whose rectangle holds it."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(tags={PARTITION_TAG: partition}, statuses=UNFINISHED), limit=20
    )
    records = [*records, *(r for r in ranges if partition in _range_keys(r))]
    active, abandoned = [], []
    for r in (r for r in records if r.dagster_run.tags.get(READ_ONLY_TAG) != "true"):
        (abandoned if is_abandoned(r, now, stale_after) else active).append(r.dagster_run.run_id)
    return active, abandoned


def unfinished_range_runs(instance: dg.DagsterInstance) -> list[Any]:
    """Unfinished runs over a partition range (single-run backfills), with the range in their tags."""
    records = instance.get_run_records(filters=dg.RunsFilter(statuses=UNFINISHED), limit=200)
    return [
        r for r in records if RANGE_START_TAG in r.dagster_run.tags and RANGE_END_TAG in r.dagster_run.tags
    ]


def _range_keys(record: Any) -> set[str]:
    tags = record.dagster_run.tags
    if PARTITION_TAG in tags:
        return {tags[PARTITION_TAG]}
    if RANGE_START_TAG not in tags or RANGE_END_TAG not in tags:
        return set()
    try:
        rng = dg.PartitionKeyRange(tags[RANGE_START_TAG], tags[RANGE_END_TAG])
        return set(trade_partitions.get_partition_keys_in_range(rng))
    except Exception:  # another partitioning (e.g. a job of other assets): not ours
        return set()


def split_after_failure(
    instance: dg.DagsterInstance, keys: Sequence[str], lookback: int = 200
) -> tuple[set[str], set[str]]:
    """(split, retry_now) among `keys` (the due partitions): split = the latest finished live run
    covering the key failed, so it gets a run of its own (isolation); retry_now = that failed run
    covered several partitions, so the key is requested again at once, not a minute later. A run
    that failed because its process was stopped (UNEXPECTED_TERMINATION, e.g. a restart) splits
    nothing: its partitions are retried at once, together.
    Only the newest `lookback` finished live runs are looked at."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(tags={LIVE_TAG: "true"}, statuses=FINISHED), limit=lookback
    )
    pending: set[str] = set(keys)
    split: set[str] = set()
    retry_now: set[str] = set()
    for r in records:  # newest first
        if not pending:
            break
        covered = _range_keys(r) & pending
        if covered and r.dagster_run.status == dg.DagsterRunStatus.FAILURE:
            interrupted = r.dagster_run.tags.get(FAILURE_REASON_TAG) in INTERRUPTED_REASONS
            if not interrupted:
                split |= covered
            if interrupted or PARTITION_TAG not in r.dagster_run.tags:
                retry_now |= covered
        pending -= covered
    return split, retry_now


def rectangles(parts: Sequence[DayPartition], order: Sequence[str]) -> list[list[DayPartition]]:
    """Cut partitions into as few (consecutive days x consecutive instruments) rectangles as cover
    exactly them; `order` is the instrument dimension's key order (a range spans it)."""
    index = {k: i for i, k in enumerate(order)}
    by_day: dict[date, list[DayPartition]] = {}
    for p in sorted(parts, key=lambda p: (p.day, index[p.instrument.key])):
        by_day.setdefault(p.day, []).append(p)
    blocks: dict[date, list[list[DayPartition]]] = {}
    for day, row in by_day.items():  # runs of instruments adjacent in the dimension's order
        cut: list[list[DayPartition]] = []
        for p in row:
            if cut and index[p.instrument.key] == index[cut[-1][-1].instrument.key] + 1:
                cut[-1].append(p)
            else:
                cut.append([p])
        blocks[day] = cut
    out: list[list[DayPartition]] = []
    open_: dict[tuple[str, ...], list[DayPartition]] = {}  # block (instrument keys) -> rectangle so far
    for day in sorted(blocks):
        still: dict[tuple[str, ...], list[DayPartition]] = {}
        for block in blocks[day]:
            sig = tuple(p.instrument.key for p in block)
            rect = open_.pop(sig, None)
            if rect is not None and rect[-1].day == day - timedelta(days=1):
                still[sig] = rect + block
            else:
                if rect is not None:
                    out.append(rect)
                still[sig] = list(block)
        out.extend(open_.values())
        open_ = still
    out.extend(open_.values())
    return sorted(out, key=lambda r: (r[0].day, index[r[0].instrument.key]))


def shard(parts: Sequence[DayPartition], shards: int) -> list[list[DayPartition]]:
    """Cut one exchange's due partitions (in order) into up to `shards` consecutive, near-equal parts."""
    n = min(shards, len(parts))
    return [list(parts[i * len(parts) // n : (i + 1) * len(parts) // n]) for i in range(n)] if n else []


def shard_runs(
    due: Sequence[tuple[DayPartition, str]], split: set[str], order: Sequence[str], shards: int = 1
) -> list[tuple[list[DayPartition], list[str], int]]:
    """The runs of one tick: (rectangle of partitions, their reasons, slot) per exchange (`rectangles`),
    each key in `split` in a run of its own (slot 0); an exchange's other due partitions are cut by
    instrument into up to `shards` parts (`shard`), slot = the part's index, so the queue's
    per-value limit runs at most `shards` runs of one exchange at once. `order`: the instrument
    dimension's key order."""
    index = {k: i for i, k in enumerate(order)}
    groups: dict[str, list[tuple[DayPartition, str]]] = {}
    for part, reason in due:
        groups.setdefault(part.key if part.key in split else part.instrument.exchange, []).append(
            (part, reason)
        )
    runs = []
    for name, group in groups.items():
        reasons = {p.key: r for p, r in group}
        parts = sorted((p for p, _ in group), key=lambda p: (index[p.instrument.key], p.day))
        cuts = [parts] if name in split else shard(parts, shards)
        for slot, cut in enumerate(cuts):
            runs += [(rect, [reasons[p.key] for p in rect], slot) for rect in rectangles(cut, order)]
    return runs


def group_runs(
    due: Sequence[tuple[DayPartition, str]], split: set[str], order: Sequence[str]
) -> list[tuple[list[DayPartition], list[str]]]:
    """The runs of one tick, one exchange's due partitions together (`shard_runs` with one shard)."""
    return [(rect, reasons) for rect, reasons, _ in shard_runs(due, split, order)]
