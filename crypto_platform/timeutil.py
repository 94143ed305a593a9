"""Exact time arithmetic shared by sources, transforms and sensors (one definition of each)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def as_utc(ts: datetime) -> datetime:
    """Timezone-aware UTC datetime; a naive one is taken to be UTC already (for user-facing inputs)."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def epoch_us(ts: datetime) -> int:
    """Exact microseconds since the epoch of a timezone-aware datetime (naive ones are refused)."""
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError(f"naive datetime {ts!r}: pass timezone-aware (UTC) datetimes")
    return (ts - EPOCH) // _US


def epoch_ms_floor(ts: datetime) -> int:
    """The epoch millisecond holding `ts` (so `ms < epoch_ms_floor(t)` <=> instant < floor(t))."""
    return epoch_us(ts) // 1000


def epoch_ms_ceil(ts: datetime) -> int:
    """Smallest epoch millisecond whose instant is >= ts (so `ms >= epoch_ms_ceil(t)` <=> instant >= t)."""
    return -(-epoch_us(ts) // 1000)


def floor_minute(ts: datetime) -> datetime:
    """The start of the minute holding `ts`."""
    return ts.replace(second=0, microsecond=0)
