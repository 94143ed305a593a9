"""Asset jobs: the selections users launch from the UI, the CLI, schedules and sensors."""

from __future__ import annotations

import dagster as dg

from crypto_platform.partitions import trade_partitions

MEDALLION = dg.AssetSelection.groups("raw", "bronze", "silver")

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=MEDALLION,
    partitions_def=trade_partitions,
    description="raw -> bronze -> silver for one (day x instrument) partition or a range of them.",
)

JOBS = [ingest_job]
