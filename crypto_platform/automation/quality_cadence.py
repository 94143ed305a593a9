"""The full Great Expectations suites on a cadence, for the partitions live runs gate with the contract.

Live runs block on the polars contract of the suites' rules (quality/contract.py), every minute.
`quality_suites` (hourly at :07 UTC) runs the GX suites themselves, check-only, over today's and
yesterday's partitions of every live instrument: one run per exchange (the partitions grouped as the
live sensor groups them), so the reference implementation still judges every live partition at least
hourly and once more after the day settled. It is RUNNING with the live sensor (CRYPTO_LIVE_SENSOR)
or with the other schedules (CRYPTO_AUTOMATION).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg

from crypto_platform import tables
from crypto_platform.automation.live import sensor_default_status
from crypto_platform.automation.live_runs import (
    PARTITION_TAG,
    RANGE_END_TAG,
    RANGE_START_TAG,
    READ_ONLY_TAG,
    group_runs,
)
from crypto_platform.checks.quality import QUALITY_CHECKS
from crypto_platform.partitions import DayPartition, instrument_partitions
from crypto_platform.platform_settings import PlatformSettings
from crypto_platform.resources.lake import LakeResource
from crypto_platform.settings import load_universe

SCHEDULE_NAME = "quality_suites"
KIND_TAG = "crypto/kind"

quality_suites_job = dg.define_asset_job(
    "quality_suites_job",
    selection=dg.AssetSelection.checks(*QUALITY_CHECKS),
    description=(
        "The Great Expectations suites on bronze trades and silver 1m candles, check-only, over the "
        "partitions of the run (the reference of the polars contract live runs block on)."
    ),
)


def cadence_requests(now: datetime, lake: LakeResource) -> Iterator[dg.RunRequest]:
    """One check-only run per exchange over today's and yesterday's live partitions that hold raw
    trades (`group_runs`: the fewest rectangles that cover exactly them)."""
    universe = load_universe()
    today = now.astimezone(UTC).date()
    days = [d for d in (today - timedelta(days=1), today) if d >= universe.start_date]
    parts = [DayPartition(i, d) for d in days for i in universe.instruments if i.is_live]
    parts = [p for p in parts if lake.read_manifest(tables.RAW_TRADES, p).exists]
    order = instrument_partitions.get_partition_keys()
    for rect, _ in group_runs([(p, "cadence") for p in parts], set(), order):
        first, last = rect[0].key, rect[-1].key
        # read-only: never counted as a run holding the partition (the live sensor does not wait for
        # it), and no exchange tag (it fetches nothing, so it takes no slot of the exchange's limit)
        tags = {KIND_TAG: SCHEDULE_NAME, READ_ONLY_TAG: "true"}
        rng = {RANGE_START_TAG: first, RANGE_END_TAG: last}
        tags.update({PARTITION_TAG: first} if len(rect) == 1 else rng)
        yield dg.RunRequest(run_key=f"{SCHEDULE_NAME}:{first}..{last}@{now:%Y-%m-%dT%H:%M}", tags=tags)


def _status(settings: PlatformSettings) -> dg.DefaultScheduleStatus:
    """RUNNING with the live sensor (CRYPTO_LIVE_SENSOR) or with the other schedules (CRYPTO_AUTOMATION)."""
    running = sensor_default_status(settings) == dg.DefaultSensorStatus.RUNNING or settings.automation
    return dg.DefaultScheduleStatus.RUNNING if running else dg.DefaultScheduleStatus.STOPPED


def build_quality_schedule(settings: PlatformSettings) -> dg.ScheduleDefinition:
    """`quality_suites`, RUNNING with the live sensor or CRYPTO_AUTOMATION=running."""

    @dg.schedule(
        name=SCHEDULE_NAME,
        job=quality_suites_job,
        cron_schedule="7 * * * *",
        execution_timezone="UTC",
        default_status=_status(settings),
        description="Hourly: the GX suites over today's and yesterday's live partitions, per exchange.",
    )
    def _quality_suites(
        context: dg.ScheduleEvaluationContext, lake: LakeResource
    ) -> list[dg.RunRequest] | dg.SkipReason:
        requests = list(cadence_requests(context.scheduled_execution_time or datetime.now(UTC), lake))
        return requests or dg.SkipReason("no live partition of today or yesterday holds trades yet")

    return _quality_suites
