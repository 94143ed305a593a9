"""The restart's timeline: from the start command of `dagster dev` to the first new prediction row.

Every instant is an observation: dagster dev's own log lines (its services, the daemon, the code
server), the live sensor's ticks and the live runs' events in the Dagster instance, and the bench's
poll of gold.predictions. `events()` is pure (tested); `gather()` reads them from a kept or running
instance.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SENSOR = "live_sensor"
START_MARK = "===== dagster dev started "
# dagster dev's log lines (ANSI colours stripped): label -> pattern, the first match after the start
LOG_MARKS = {
    "dagster dev: services launching (its imports done)": r"Launching Dagster services",
    "code server: process up (its imports done)": r"Starting Dagster code server",
    "code server: code location loaded": r"Started Dagster code server",
    "daemon: started (workspace loaded)": r"Instance is configured with the",
    "webserver: serving": r"Serving dagster-webserver",
    "sensor daemon: first sensor evaluated": r"Checking for new runs for sensor",
    f"sensor daemon: {SENSOR} evaluated": rf"Checking for new runs for sensor: {SENSOR}\b",
}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) \+0000")


@dataclass(frozen=True)
class RunTrace:
    """One live run as the instance recorded it (epoch seconds)."""

    run_id: str
    status: str
    created: float
    started: float | None  # the run worker started (RUN_START)
    ended: float | None
    steps: list[tuple[str, float, float | None]]  # (step key, start, success or None)
    trigger: str = ""


@dataclass(frozen=True)
class Timeline:
    """The restart of dagster dev, each instant in epoch seconds, and the runs around it."""

    down: float
    up: float
    log_marks: dict[str, float]
    first_tick: tuple[float, float | None, int] | None  # (start, end, runs requested) of the sensor
    in_flight: list[RunTrace]  # live runs executing when dagster dev was stopped
    catch_up: RunTrace | None  # the first live run created after the start command
    back: float | None  # first new prediction row readable


def log_marks(text: str, after: float) -> dict[str, float]:
    """The first time each LOG_MARKS line appears in dagster dev's log at or after `after` (s epoch).

    Log stamps have whole seconds, so a mark can read up to 1 s early."""
    found: dict[str, float] = {}
    for raw in text.splitlines():
        line = _ANSI.sub("", raw)
        stamp = _STAMP.match(line)
        if not stamp:
            continue
        at = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
        if at < int(after):
            continue
        for label, pattern in LOG_MARKS.items():
            if label not in found and re.search(pattern, line):
                found[label] = at
    return found


def events(t: Timeline) -> list[tuple[float, str]]:
    """(epoch s, what happened) in time order: the stop, the in-flight runs' fate, the start, the
    services, the first tick, the catch-up run step by step, the first new row."""
    out: list[tuple[float, str]] = [(t.down, "stop command (SIGTERM to dagster dev's process group)")]
    for r in t.in_flight:
        done = [k for k, _, ok in r.steps if ok is not None and ok <= t.down]
        after = [k for k, _, ok in r.steps if ok is not None and ok > t.down]
        what = f"in-flight run {r.run_id[:8]} ended {r.status}" + (
            f" ({len(done)} step(s) done before the stop, {len(after)} after it)" if r.steps else ""
        )
        if r.ended is not None:
            out.append((r.ended, what))
    out.append((t.up, "start command"))
    out += [(at, label) for label, at in t.log_marks.items()]
    if t.first_tick:
        start, end, n = t.first_tick
        out.append((start, f"{SENSOR}: first tick after the start (daemon)"))
        if end is not None:
            out.append((end, f"{SENSOR}: first tick done, {n} run(s) requested"))
    if (r := t.catch_up) is not None:
        out.append((r.created, f"catch-up run {r.run_id[:8]} created ({r.trigger})"))
        if r.started is not None:
            out.append((r.started, "catch-up run: run worker started (RUN_START)"))
        for key, began, ok in r.steps:
            out.append((began, f"catch-up run: step `{key}` started"))
            if ok is not None:
                out.append((ok, f"catch-up run: step `{key}` done ({ok - began:.1f} s)"))
        if r.ended is not None:
            out.append((r.ended, f"catch-up run ended {r.status}"))
    if t.back is not None:
        out.append((t.back, "first new prediction row readable (bench poll)"))
    return sorted(out, key=lambda e: e[0])


def _trace(instance: Any, record: Any) -> RunTrace:
    run = record.dagster_run
    steps: dict[str, list[float | None]] = {}
    for e in instance.all_logs(run.run_id):
        kind = e.dagster_event.event_type_value if e.dagster_event else None
        if kind == "STEP_START":
            steps[e.step_key] = [e.timestamp, None]
        elif kind == "STEP_SUCCESS" and e.step_key in steps:
            steps[e.step_key][1] = e.timestamp
    return RunTrace(
        run_id=run.run_id,
        status=run.status.value,
        created=record.create_timestamp.timestamp(),
        started=record.start_time,
        ended=record.end_time,
        steps=[(k, float(v[0] or 0.0), v[1]) for k, v in steps.items()],
        trigger=run.tags.get("crypto/live_trigger", ""),
    )


def _first_tick(instance: Any, up: float) -> tuple[float, float | None, int] | None:
    states = [s for s in instance.all_instigator_state() if s.instigator_name == SENSOR]
    ticks = [
        tick
        for s in states
        for tick in instance.get_ticks(s.instigator_origin_id, s.selector_id, after=up, limit=50)
    ]
    if not ticks:
        return None
    first = min(ticks, key=lambda tick: tick.timestamp)
    return first.timestamp, first.end_timestamp, len(first.run_ids)


def gather(home: Path, devlog: Path, down: float, up: float, back: float | None) -> Timeline:
    """The restart's timeline from the instance under `home` and dagster dev's log."""
    import dagster as dg

    text = devlog.read_text(errors="replace") if devlog.exists() else ""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = instance.get_run_records(
            filters=dg.RunsFilter(tags={"crypto/live": "true"}), ascending=True
        )
        in_flight = [
            _trace(instance, r)
            for r in records
            if r.start_time is not None and r.start_time < down and (r.end_time is None or r.end_time > down)
        ]
        after = [r for r in records if r.create_timestamp.timestamp() >= up]
        catch_up = _trace(instance, after[0]) if after else None
        tick = _first_tick(instance, up)
    return Timeline(down, up, log_marks(text, up), tick, in_flight, catch_up, back)


def render(t: Timeline) -> list[str]:
    """The timeline as a markdown table: seconds after the start command (negative: before it)."""
    rows = [f"| {at - t.up:+.1f} | {datetime.fromtimestamp(at, UTC):%H:%M:%S} | {e} |" for at, e in events(t)]
    return ["| s after start | UTC | event |", "|---:|---|---|", *rows]
