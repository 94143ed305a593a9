"""When to fetch a raw partition and from where: one pure decision for the raw asset and the live sensor.

Inputs are the partition's committed manifest, the clock and the late-trade overlap; the output says
whether a fetch is due, over which window, and why. The raw asset fetches that window; the live
sensor requests a run when a fetch is due (plus its own policy on days it never ingested).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from crypto_platform.partitions import DayPartition
from crypto_platform.raw_manifest import RawManifest
from crypto_platform.timeutil import floor_minute

NEW, DAY_TAIL, SETTLE, REFETCH = "new", "day tail", "settle", "refetch"  # why a fetch is due


@dataclass(frozen=True)
class FetchPlan:
    """The fetch window [start, end) of one partition, or `start is None` when nothing is due."""

    start: datetime | None
    end: datetime
    trigger: str | None  # NEW | DAY_TAIL | SETTLE when due, else None
    note: str  # for logs and metadata: watermark, what is due or why nothing is
    status: str  # when not due: 'complete' | 'up to date' | 'not started'
    restart: bool = False  # a re-fetch: the committed batches are replaced by this fetch's batch

    @property
    def due(self) -> bool:
        """True when the window holds time not fetched yet (or the settling re-read)."""
        return self.start is not None and self.start < self.end


def is_settled(manifest: RawManifest, part: DayPartition, overlap: timedelta) -> bool:
    """The partition's coverage reaches its end and was (re-)read at least `overlap` after that end."""
    wm, last = manifest.watermark, manifest.last_written_at
    return wm is not None and wm >= part.end and last is not None and last >= part.end + overlap


def _shown(wm: datetime | None, part: DayPartition) -> str:
    if wm is None:
        return "none"
    return wm.strftime("%H:%M:%S") if wm.date() == part.day else wm.isoformat()


def plan_fetch(
    manifest: RawManifest,
    part: DayPartition,
    now: datetime,
    overlap: timedelta,
    *,
    whole_minutes: bool = True,
    refetch: bool = False,
) -> FetchPlan:
    """Where the next fetch of `part` starts and ends, and why (see the module docstring).

    `refetch` reads the whole partition again (up to now) and replaces what was committed: the repair
    of a partition whose stored batches are corrupt or incomplete.
    """
    end = min(part.end, floor_minute(now) if whole_minutes else now)
    wm, shown = manifest.watermark, _shown(manifest.watermark, part)
    idle = "complete" if end >= part.end else "up to date" if wm else "not started"
    if refetch and end > part.start:
        return FetchPlan(part.start, end, REFETCH, f"re-fetch requested (watermark {shown})", idle, True)
    trigger = NEW if end < part.end else DAY_TAIL
    if wm is None:
        if end <= part.start:
            return FetchPlan(None, end, None, "no whole minute of the day yet", idle)
        return FetchPlan(part.start, end, trigger, f"first fetch up to {end:%H:%M}", idle)
    if wm < end:
        target = f"{end:%H:%M}" if end < part.end else "end of day"
        return FetchPlan(max(part.start, wm - overlap), end, trigger, f"watermark {shown} < {target}", idle)
    if end < part.end:
        return FetchPlan(None, end, None, f"watermark {shown}", idle)
    if is_settled(manifest, part, overlap):
        return FetchPlan(None, end, None, "complete and settled", idle)
    if now < part.end + overlap:
        return FetchPlan(None, end, None, f"complete; settles at {(part.end + overlap):%H:%M:%S}", idle)
    start = max(part.start, part.end - overlap)
    return FetchPlan(start, end, SETTLE, "complete; re-read the last minutes for late trades", idle)
