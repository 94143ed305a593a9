"""Lake housekeeping: a job (and a daily schedule) that sweeps what killed writes leave behind.

A write killed between its temp file and its rename leaves `.<name>.<uuid>.tmp`; a fetch killed between
its batch file and its manifest commit, or a re-fetch that replaced the committed batches, leaves raw
batch files no manifest lists; on S3 every replace leaves the superseded version object, and on a
folder an open day's compaction leaves the base and deltas of the snapshot it replaced (a reader that
resolved the old list may still read them). New readers never see any of them; the sweep removes
those superseded (or left) longer ago than a bound
(younger ones may belong to a write in progress) and reports every file it removed.
"""

import time

import dagster as dg
from pydantic import Field

from crypto_platform.automation.retraining import automation_status
from crypto_platform.platform_settings import PlatformSettings
from crypto_platform.resources.lake import LakeResource


class SweepConfig(dg.Config):
    older_than_hours: float = Field(
        default=6.0,
        gt=0,
        description="Only files last modified longer ago than this are removed (a running write is younger).",
    )


@dg.op(description="Remove temp files of killed writes and uncommitted raw batches older than the bound.")
def sweep_lake(context: dg.OpExecutionContext, config: SweepConfig, lake: LakeResource) -> dg.Output[int]:
    report = lake.sweep(config.older_than_hours * 3600, time.time())
    removed = [*report.temp_files, *report.orphan_batches, *report.superseded]
    for path in removed:
        context.log.info(f"removed {path}")
    context.log.info(f"lake sweep: {len(removed)} file(s), {report.bytes} bytes removed")
    return dg.Output(
        len(removed),
        metadata={
            "temp_files_removed": len(report.temp_files),
            "orphan_batches_removed": len(report.orphan_batches),
            "superseded_versions_removed": len(report.superseded),
            "bytes_removed": report.bytes,
            "files": dg.MetadataValue.md("\n".join(f"- `{p}`" for p in removed[:200]) or "(none)"),
        },
    )


@dg.job(
    description="Sweep the lake: temp files of killed writes and orphan raw batches (see maintenance.py)."
)
def lake_sweep_job() -> None:
    sweep_lake()


def build_maintenance_schedules(settings: PlatformSettings) -> list[dg.ScheduleDefinition]:
    """The daily lake sweep, RUNNING only with CRYPTO_AUTOMATION=running (like the other schedules)."""
    return [
        dg.ScheduleDefinition(
            name="daily_lake_sweep",
            job=lake_sweep_job,
            cron_schedule="15 3 * * *",
            execution_timezone="UTC",
            default_status=automation_status(settings),
        )
    ]


MAINTENANCE_JOBS = [lake_sweep_job]
