"""The fetch plan: one decision for the raw asset and the live sensor (pure, no Dagster)."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest

from crypto_platform.fetch_plan import DAY_TAIL, NEW, SETTLE, is_settled, plan_fetch
from crypto_platform.partitions import DayPartition
from crypto_platform.raw_manifest import RawBatch, RawManifest
from crypto_platform.settings import load_universe

OVERLAP = timedelta(seconds=120)


@pytest.fixture
def part() -> DayPartition:
    return DayPartition(load_universe().instrument("sim.BTC-USDT"), date(2024, 3, 4))


def committed(part: DayPartition, covered_to: datetime, written_at: datetime) -> RawManifest:
    return RawManifest().with_batch(RawBatch("b", part.start, covered_to, rows=1, written_at=written_at))


def test_open_day_fetches_whole_minutes_from_the_watermark_minus_overlap(part: DayPartition) -> None:
    now = part.start + timedelta(hours=10, seconds=42)
    first = plan_fetch(RawManifest(), part, now, OVERLAP)
    assert (first.start, first.end, first.trigger, first.due) == (
        part.start,
        now.replace(second=0),
        NEW,
        True,
    )
    wm = part.start + timedelta(hours=9)
    again = plan_fetch(committed(part, wm, wm), part, now, OVERLAP)
    assert (again.start, again.end, again.note) == (
        wm - OVERLAP,
        part.start + timedelta(hours=10),
        "watermark 09:00:00 < 10:00",
    )
    up_to_date = plan_fetch(committed(part, now.replace(second=0), now), part, now, OVERLAP)
    assert (up_to_date.due, up_to_date.status) == (False, "up to date")
    partial = plan_fetch(RawManifest(), part, now, OVERLAP, whole_minutes=False)
    assert partial.end == now


def test_nothing_before_the_first_whole_minute(part: DayPartition) -> None:
    plan = plan_fetch(RawManifest(), part, part.start + timedelta(seconds=59), OVERLAP)
    assert (plan.due, plan.status, plan.note) == (False, "not started", "no whole minute of the day yet")


def test_finished_day_tail_then_one_settling_re_read(part: DayPartition) -> None:
    just_after = part.end + timedelta(seconds=30)
    tail = plan_fetch(
        committed(part, part.end - timedelta(seconds=20), just_after), part, just_after, OVERLAP
    )
    assert (tail.trigger, tail.start, tail.end) == (DAY_TAIL, part.end - timedelta(seconds=140), part.end)
    complete = committed(part, part.end, just_after)
    waiting = plan_fetch(complete, part, just_after, OVERLAP)
    assert (waiting.due, waiting.status, waiting.note) == (False, "complete", "complete; settles at 00:02:00")
    later = part.end + timedelta(minutes=3)
    settle = plan_fetch(complete, part, later, OVERLAP)
    assert (settle.trigger, settle.start, settle.end) == (SETTLE, part.end - OVERLAP, part.end)
    settled = complete.with_batch(RawBatch("c", part.end - OVERLAP, part.end, rows=0, written_at=later))
    assert is_settled(settled, part, OVERLAP) and not is_settled(complete, part, OVERLAP)
    done = plan_fetch(settled, part, later, OVERLAP)
    assert (done.due, done.note) == (False, "complete and settled")


def test_a_past_day_never_fetched_is_fetched_whole(part: DayPartition) -> None:
    plan = plan_fetch(RawManifest(), part, part.end + timedelta(days=3), OVERLAP)
    assert (plan.start, plan.end, plan.trigger) == (part.start, part.end, DAY_TAIL)
