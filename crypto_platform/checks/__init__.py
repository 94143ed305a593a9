"""Dagster asset checks: Great Expectations suites on bronze/silver, drift on gold features/predictions.

Why the checks are *unpartitioned* checks on partitioned assets (Dagster 1.13.27):
`@asset_check(partitions_def=...)` exists but is a preview feature, and it records a result only for
the step's single partition key: in a single-run range (this project's backfill policy), the result
is stored without a partition and the range's partitions stay "planned" in the UI. So every check here
is unpartitioned but partition-aware: it reads the partition key(s) of its run from the context
(`run_partitions`, the same range expansion as the assets), validates each (instrument, day) cell and
reports per-partition figures in its metadata. Run in the same run as the asset, a blocking check
still stops every downstream step of that run (for the whole range). Run on its own without a
partition (a check-only run from the UI, the monitoring job), a check judges the newest data.

Module layout: `quality` (GX suites, blocking), `drift` (feature and prediction drift vs the
champion's reference); the prediction-skill check lives with its asset in `assets.monitoring`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any

import dagster as dg

from crypto_platform.partitions import DayPartition, parse_key, partitions_of
from crypto_platform.resources.lake import PART_FILE, LakeResource
from crypto_platform.settings import Instrument

# Metadata key every monitoring check sets: does the judged window include the newest data of the
# table? The retraining sensor ignores failures about history (e.g. a backfill of old partitions).
ABOUT_LATEST_DATA = "about_latest_data"
_DATE_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")


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


def stored_days(lake: LakeResource, layer: str, table: str, instrument: Instrument) -> list[date]:
    """Days of a partitioned lake table that hold a data file for the instrument, oldest first."""
    folder = lake.table_path(layer, table) / f"instrument={instrument.key}"
    if not folder.is_dir():
        return []
    days = [
        date.fromisoformat(m.group(1))
        for d in folder.iterdir()
        if (m := _DATE_DIR.match(d.name)) and (d / PART_FILE).is_file()
    ]
    return sorted(days)


def newest_parts(
    lake: LakeResource, layer: str, table: str, instrument: Instrument, days: int
) -> list[DayPartition]:
    """The instrument's newest `days` stored partitions of a table (fewer if it has fewer)."""
    stored = stored_days(lake, layer, table, instrument)
    return [DayPartition(instrument, d) for d in stored[-days:]] if days > 0 else []


def includes_newest(lake: LakeResource, layer: str, table: str, parts: Iterable[DayPartition]) -> bool:
    """Whether any of these cells is its instrument's newest stored day of the table."""
    newest: dict[str, date | None] = {}
    for p in parts:
        if p.instrument.key not in newest:
            stored = stored_days(lake, layer, table, p.instrument)
            newest[p.instrument.key] = stored[-1] if stored else None
        last = newest[p.instrument.key]
        if last is None or p.day >= last:
            return True
    return False


def md_table(rows: Sequence[Mapping[str, Any]], limit: int = 100) -> str:
    """Rows of dicts as a markdown table (first `limit` rows) for check metadata."""
    if not rows:
        return "(none)"
    cols = list(rows[0].keys())
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in rows[:limit]]
    if len(rows) > limit:
        lines.append(f"| … {len(rows) - limit} more |" + " |" * (len(cols) - 1))
    return "\n".join(lines)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M")
    return "" if v is None else str(v).replace("|", "/")
