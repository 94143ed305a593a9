"""Partitions, defined once: UTC day x instrument ('2024-01-01|binance.BTC-USDT').

Daily windows keep the partition count far below Dagster's 100k guidance (10 instruments x 10 years
= 36,500) while a day of even a busy market (~5 M trades) fits comfortably in memory. The current,
still-open day is a partition too (end_offset=1), so near-real-time runs can refresh it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from crypto_platform.platform_settings import load_settings
from crypto_platform.settings import Instrument, load_universe

DATE_DIM = "date"
INSTRUMENT_DIM = "instrument"

_universe = load_universe()

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=_universe.start_date.isoformat(), timezone="UTC", end_offset=1
)
instrument_partitions = dg.StaticPartitionsDefinition(_universe.keys)
trade_partitions = dg.MultiPartitionsDefinition(
    {DATE_DIM: daily_partitions, INSTRUMENT_DIM: instrument_partitions}
)


def backfill_policy(partitions_per_run: int) -> dg.BackfillPolicy:
    """multi_run(N) when N > 0 (a daemon backfill is cut into runs of at most N partitions, which a
    run launcher can spread over machines), else single_run: one run per backfill, the policy
    `dagster asset materialize --partition-range` requires. The asset code handles any rectangle of
    (day x instrument) keys, one partition at a time, so either works."""
    if partitions_per_run > 0:
        return dg.BackfillPolicy.multi_run(max_partitions_per_run=partitions_per_run)
    return dg.BackfillPolicy.single_run()


# Every partitioned asset's policy: CRYPTO_BACKFILL_PARTITIONS_PER_RUN (read once, at load).
BACKFILL_POLICY = backfill_policy(load_settings().backfill_partitions_per_run)
single_run = BACKFILL_POLICY  # the name the asset modules import


@dataclass(frozen=True)
class DayPartition:
    """One (instrument, UTC day) cell of the partition grid, with its exact half-open window."""

    instrument: Instrument
    day: date

    @property
    def start(self) -> datetime:
        """Start of the UTC day (inclusive)."""
        return datetime(self.day.year, self.day.month, self.day.day, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        """End of the UTC day (exclusive)."""
        return self.start + timedelta(days=1)

    @property
    def key(self) -> str:
        """The Dagster multi-partition key ('YYYY-MM-DD|instrument')."""
        return multi_key(self.day, self.instrument.key)

    def __str__(self) -> str:
        return self.key


def multi_key(day: date, instrument_key: str) -> str:
    """The Dagster multi-partition key string for a day and an instrument."""
    return str(dg.MultiPartitionKey({DATE_DIM: day.isoformat(), INSTRUMENT_DIM: instrument_key}))


def parse_key(key: str | dg.MultiPartitionKey) -> DayPartition:
    """Turn a multi-partition key into a DayPartition (unknown instruments raise a clear error)."""
    mk = key if isinstance(key, dg.MultiPartitionKey) else trade_partitions.get_partition_key_from_str(key)
    dims = mk.keys_by_dimension
    return DayPartition(load_universe().instrument(dims[INSTRUMENT_DIM]), date.fromisoformat(dims[DATE_DIM]))


def partitions_of(context: dg.AssetExecutionContext) -> list[DayPartition]:
    """Every (instrument, day) cell a run covers: one key, or the rectangle of a single-run range.

    The range is expanded from its start/end keys ourselves rather than trusting
    `context.partition_keys`, which has open bugs for single-run backfills over multi-partitions.
    """
    if not context.has_partition_key_range:
        return [parse_key(context.partition_key)]
    rng = context.partition_key_range
    keys = trade_partitions.get_partition_keys_in_range(rng)
    return sorted((parse_key(k) for k in keys), key=lambda p: (p.instrument.key, p.day))


def run_partitions(context: dg.AssetCheckExecutionContext) -> list[DayPartition] | None:
    """The (instrument, day) cells of the check's run (a key or a single-run range); None if unpartitioned."""
    if context.has_partition_key_range or context.has_partition_key:
        return partitions_of(context)  # type: ignore[arg-type]  # same partition API as the asset context
    return None


def last_materialized_partitions(
    context: dg.AssetCheckExecutionContext, asset_key: dg.AssetKey
) -> list[DayPartition]:
    """The cells written by the asset's latest materializing run (every key of a range run)."""
    records = context.instance.fetch_materializations(asset_key, limit=1).records
    if not records:
        return []
    run_id = records[0].event_log_entry.run_id
    keys = context.instance.get_asset_partitions_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
    ).get(asset_key, set())
    parts = [parse_key(k) for k in keys if k is not None]
    return sorted(parts, key=lambda p: (p.instrument.key, p.day))
