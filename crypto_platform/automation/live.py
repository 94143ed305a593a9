"""Near-real-time: a sensor that keeps the newest partitions of every live instrument fresh.

`live_sensor` runs every `CRYPTO_LIVE_INTERVAL_SECONDS` (5 s) while on. For every live instrument (source
`synthetic`/`ccxt`; `replay` is history) it looks at the newest UTC-day partitions and requests, per exchange
(or per shard), ONE run covering exactly the partitions that are behind, selecting raw -> bronze -> silver
-> gold/features -> gold/predictions (gold/labels optionally); a partition is behind when:

* **new**: a whole minute closed since the partition's raw watermark (the end of its committed
  coverage); the run fetches from the watermark (re-reading `overlap_seconds` before it, for trades
  published late) up to the last whole minute and derives only what the new trades change: bronze
  appends them to the open day as one delta file (the re-read trades de-duplicated by id against the
  stored ones), candles and features are recomputed from the first minute they touch; compacted once
  when the day settles. Idempotent: a re-run with nothing new rewrites nothing.
* **changed**: raw/trades of today's partition was materialized after its last gold/predictions
  (a run failed half-way, or someone fetched raw by hand), so the downstream layers are stale.
* **day tail / settle**: after midnight, yesterday's partition is requested until its coverage
  reaches midnight, and once more `overlap_seconds` after midnight ("settled"), so the last minutes
  of the day and trades published late for them are not lost.

Run shape. A run covers a rectangle of (days x instruments) (the asset code handles any rectangle,
`partitions_of`): one key (`dagster/partition`), or a range (`dagster/asset_partition_range_start/end`,
every day of the range x every instrument between the two in the instruments file's order). The due
partitions of an exchange are cut into as few rectangles as exactly cover them (`rectangles`): one
run per exchange per tick when its instruments are listed together in the instruments file and the
same ones are due on each day; more otherwise, never a partition that is not due. Runs are tagged
`crypto/exchange`, so the run queue limits the runs of one exchange together (dagster.yaml);
`CRYPTO_LIVE_SHARDS` = N > 1 cuts them into up to N runs that may run at once (`live_runs.shard_runs`).

Isolation. A multi-partition run fails as a whole (a failed step skips the downstream steps of every
partition of the run), so after a failed multi-partition run each of its partitions is requested in
a run of its own, at once (not waiting for the next minute; "retry" even if its raw is current: the
run may have fetched it before another partition's step failed): the good instruments go through, the
bad one fails alone, visibly per partition, and stays in a run of its own until a run of it succeeds.

Run hygiene. At most one request per partition per minute (run key `live:<partition>@<minute>`, or
`live:<first>..<last>@<minute>`; the cursor remembers each partition's last request minute); nothing is
requested for a partition while a run for it is queued or in progress (runs tagged `dagster/partition`;
a run "in progress" for longer than `stale_run_minutes` is treated as abandoned, e.g. its process
died with the daemon). A restarted daemon resumes from the cursor: it never replays the minutes it
missed one by one (one run fetches everything since each partition's watermark) and never reaches
back further than `catchup_days` days (older gaps are for an explicit backfill).

Asset checks: a live run executes the blocking checks of its assets (the quality gates on
bronze/silver: bad data stops the run before gold), validated by the polars contract of the Great
Expectations suites' rules (`CRYPTO_LIVE_QUALITY_ENGINE=contract`, no GX import per run; the GX
suites themselves run on the `quality_suites` cadence), not the others (drift is judged by the
monitoring job); `CRYPTO_LIVE_CHECKS=all|none` changes that.

Predictions use the MLflow 'champion'. `allow_unqualified_model` (serve the latest challenger when
no version qualifies) is passed only when `CRYPTO_ALLOW_UNQUALIFIED_MODEL=true` says so explicitly,
and those runs are tagged `crypto/unqualified_model=allowed`.

Settings: `LiveSettings`, from the platform settings loaded once (`CRYPTO_LIVE_*`), never re-read at a tick.
"""

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg

from crypto_platform import tables
from crypto_platform.automation.live_runs import (  # noqa: F401 (re-exported for callers)
    LIVE_TAG,
    PARTITION_TAG,
    RANGE_END_TAG,
    RANGE_START_TAG,
    UNFINISHED,
    downstream_stale,
    group_runs,
    is_abandoned,
    rectangles,
    shard_runs,
    split_after_failure,
    unfinished_range_runs,
    unfinished_runs,
)
from crypto_platform.checks.quality import QUALITY_CHECKS
from crypto_platform.fetch_plan import plan_fetch
from crypto_platform.partitions import DayPartition, instrument_partitions
from crypto_platform.platform_settings import DEFAULT_OVERLAP_SECONDS, PlatformSettings, env_name
from crypto_platform.raw_manifest import RawManifest
from crypto_platform.resources.lake import LakeResource
from crypto_platform.settings import load_universe
from crypto_platform.timeutil import floor_minute

SENSOR_NAME = "live_sensor"

EXCHANGE_TAG = "crypto/exchange"  # the run queue's per-exchange limit (tag_concurrency_limits, dagster.yaml)
TRIGGER_TAG = "crypto/live_trigger"
UNQUALIFIED_TAG = "crypto/unqualified_model"
MAX_RUNTIME_TAG = "dagster/max_runtime"

RAW, FEATURES, LABELS, PREDICTIONS = (
    t.key for t in (tables.RAW_TRADES, tables.FEATURES, tables.LABELS, tables.PREDICTIONS)
)
INGEST_KEYS = [
    RAW,
    tables.BRONZE_TRADES.key,
    tables.TRADE_REJECTS.key,
    *(t.key for t in tables.CANDLES.values()),
]


@dataclass(frozen=True)
class LiveSettings:
    """What the live sensor requests (see PlatformSettings for the variables and their meaning)."""

    allow_unqualified_model: bool = False  # serve a challenger if no champion
    predictions: bool = True  # include gold/predictions (false: stop at features)
    labels: bool = False  # include gold/labels
    checks: str = "blocking"  # which checks of the selected assets run (LIVE_CHECK_MODES)
    quality_engine: str = "contract"  # how the quality gates validate (LIVE_QUALITY_ENGINES)
    overlap_seconds: int = DEFAULT_OVERLAP_SECONDS  # late-trade re-read
    catchup_days: int = 1  # earlier days (besides today) the sensor may finish
    stale_run_minutes: float = 30.0  # older "in progress" runs are abandoned
    shards: int = 1  # runs per exchange per tick (each spaces its requests by this factor)

    @classmethod
    def from_settings(cls, settings: PlatformSettings) -> "LiveSettings":
        """The live part of the platform settings."""
        return cls(
            allow_unqualified_model=settings.allow_unqualified_model,
            predictions=settings.live_predictions,
            labels=settings.live_labels,
            checks=settings.live_checks,
            quality_engine=settings.live_quality_engine,
            overlap_seconds=settings.live_overlap_seconds,
            catchup_days=settings.live_catchup_days,
            stale_run_minutes=settings.live_stale_run_minutes,
            shards=settings.live_shards,
        )

    @property
    def overlap(self) -> timedelta:
        return timedelta(seconds=self.overlap_seconds)

    @property
    def terminal(self) -> dg.AssetKey:
        """The last asset of a live run: its materialization means the partition is processed."""
        return PREDICTIONS if self.predictions else FEATURES

    def selection(self) -> list[dg.AssetKey]:
        keys = [*INGEST_KEYS, FEATURES]
        if self.labels:
            keys.append(LABELS)
        if self.predictions:
            keys.append(PREDICTIONS)
        return keys

    def run_config(self) -> dict[str, Any]:
        raw = {"overlap_seconds": self.overlap_seconds} | (
            {"exchange_runs": self.shards} if self.shards > 1 else {}
        )
        ops: dict[str, Any] = {RAW.to_python_identifier(): {"config": raw}}
        if self.predictions and self.allow_unqualified_model:
            ops[PREDICTIONS.to_python_identifier()] = {"config": {"allow_unqualified_model": True}}
        if self.checks != "none":  # the quality gates are in the run: say which engine validates
            ops.update({c.node_def.name: {"config": {"engine": self.quality_engine}} for c in QUALITY_CHECKS})
        return {"ops": ops}


@dataclass
class LiveCursor:
    """Sensor state between ticks: when it last ran and the minute of each partition's last request."""

    evaluated_at: datetime | None = None
    requested: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: str | None) -> "LiveCursor":
        if not raw:
            return cls()
        try:
            data = json.loads(raw)
            at = data.get("evaluated_at")
            return cls(datetime.fromisoformat(at) if at else None, dict(data.get("requested") or {}))
        except (ValueError, TypeError, AttributeError):
            return cls()  # an unreadable cursor (older format) only costs one request per partition

    def dumps(self) -> str:
        at = self.evaluated_at.isoformat() if self.evaluated_at else None
        return json.dumps({"v": 1, "evaluated_at": at, "requested": dict(sorted(self.requested.items()))})


@dataclass(frozen=True)
class Decision:
    """What the sensor decided for one partition in one tick."""

    key: str
    reason: str | None  # why the partition needs a run; None: up to date
    note: str = ""  # detail for the tick log (watermark, why not requested, ...)
    requested: bool = False


def minute_token(ts: datetime) -> str:
    return floor_minute(ts).strftime("%Y-%m-%dT%H:%M")


def live_days(now: datetime, catchup_days: int, start_date: date) -> list[date]:
    """The days the sensor looks after, oldest first: today and up to `catchup_days` before it."""
    today = now.astimezone(UTC).date()
    return [d for k in range(catchup_days, -1, -1) if (d := today - timedelta(days=k)) >= start_date]


def partition_need(
    part: DayPartition, manifest: RawManifest, now: datetime, settings: LiveSettings, *, today: date
) -> tuple[str | None, str]:
    """(reason a run is needed or None, note): the raw fetch plan, except that the sensor never starts
    a past day it has not ingested (that is a backfill's job)."""
    if part.day != today and not manifest.exists:
        return None, "never ingested (not live): backfill it explicitly"
    plan = plan_fetch(manifest, part, now, settings.overlap)
    return (plan.trigger if plan.due else None), plan.note


def live_checks(
    repository: dg.RepositoryDefinition | None, settings: LiveSettings
) -> list[dg.AssetCheckKey] | None:
    """The asset checks of a live run: None = every check of the selected assets, [] = none."""
    if settings.checks == "all":
        return None
    if settings.checks == "none":
        return []
    if repository is None:
        raise dg.DagsterInvariantViolationError(
            f"{env_name('live_checks')}=blocking needs the repository to find the blocking checks"
        )
    graph = repository.asset_graph
    selected = set(settings.selection())
    return sorted(
        (ck for ck in graph.asset_check_keys if ck.asset_key in selected and graph.get(ck).blocking),
        key=lambda ck: (ck.asset_key.to_user_string(), ck.name),
    )


def run_request(
    parts: Sequence[DayPartition],
    token: str,
    reasons: Sequence[str],
    settings: LiveSettings,
    checks: Sequence[dg.AssetCheckKey] | None = (),
    slot: int = 0,
) -> dg.RunRequest:
    """One run over a rectangle of partitions (`rectangles`): a key, or a range from the first to the
    last; tagged with the exchange (the queue's per-exchange limit; `<exchange>#<slot>` with several
    shards, one run at a time per slot) and why it was requested."""
    # With run monitoring on, Dagster cancels a run stuck longer than the sensor waits for it.
    tags = {
        LIVE_TAG: "true",
        TRIGGER_TAG: ",".join(sorted(set(reasons))),
        EXCHANGE_TAG: parts[0].instrument.exchange + ("" if settings.shards == 1 else f"#{slot}"),
        MAX_RUNTIME_TAG: str(int(settings.stale_run_minutes * 60)),
    }
    if settings.predictions and settings.allow_unqualified_model:
        tags[UNQUALIFIED_TAG] = "allowed"
    first, last = parts[0].key, parts[-1].key
    if len(parts) > 1:
        tags.update({RANGE_START_TAG: first, RANGE_END_TAG: last})
    return dg.RunRequest(
        run_key=f"live:{first}@{token}" if len(parts) == 1 else f"live:{first}..{last}@{token}",
        partition_key=first if len(parts) == 1 else None,
        asset_selection=settings.selection(),
        asset_check_keys=None if checks is None else list(checks),
        run_config=settings.run_config(),
        tags=tags,
    )


def evaluate(
    context: dg.SensorEvaluationContext, lake: LakeResource, settings: LiveSettings, now: datetime
) -> tuple[dg.SensorResult, list[Decision]]:
    """One tick: the run requests, the new cursor, and every partition's decision (for logs and tests)."""
    universe = load_universe()
    cursor = LiveCursor.parse(context.cursor)
    token = minute_token(now)
    today = now.astimezone(UTC).date()
    days = live_days(now, settings.catchup_days, universe.start_date)
    live = [i for i in universe.instruments if i.is_live]
    if cursor.evaluated_at and now - cursor.evaluated_at > timedelta(minutes=2):
        context.log.info(
            f"resuming after {now - cursor.evaluated_at} without a tick (last: {cursor.evaluated_at:%F %T}): "
            f"one run per exchange catches up; days before {days[0]} are not backfilled"
        )

    requests: list[dg.RunRequest] = []
    decisions: list[Decision] = []
    ranges = unfinished_range_runs(context.instance)
    checks = live_checks(context.repository_def, settings)
    behind: list[tuple[DayPartition, str | None, str]] = []
    for day in days:
        for inst in live:
            part = DayPartition(inst, day)
            reason, note = partition_need(
                part, lake.read_manifest(tables.RAW_TRADES, part), now, settings, today=today
            )
            if (
                reason is None
                and day == today
                and downstream_stale(context.instance, part.key, settings.terminal)
            ):
                reason, note = "changed", f"raw newer than {settings.terminal.to_user_string()}; {note}"
            behind.append((part, reason, note))

    split, retry_now = split_after_failure(context.instance, [p.key for p, _, _ in behind])
    for i, (part, reason, note) in enumerate(behind):
        if reason is None and part.key in retry_now:  # it may have fetched before a partner failed
            behind[i] = (part, "retry", f"its last run, over several partitions, failed; {note}")
    for part, _none, note in [b for b in behind if b[1] is None]:
        decisions.append(Decision(part.key, None, note))
    behind = [b for b in behind if b[1] is not None]
    due: list[tuple[DayPartition, str]] = []
    for part, reason, note in behind:
        key = part.key
        if cursor.requested.get(key) == token and key not in retry_now:
            decisions.append(Decision(key, reason, f"{note}; already requested at {token}"))
            continue
        active, abandoned = unfinished_runs(
            context.instance, key, now, timedelta(minutes=settings.stale_run_minutes), ranges
        )
        if abandoned:
            context.log.warning(
                f"{key}: ignoring runs 'in progress' for over {settings.stale_run_minutes:g} min "
                f"(abandoned?): {', '.join(abandoned)}"
            )
        if active:
            decisions.append(Decision(key, reason, f"{note}; run in progress: {', '.join(active)}"))
            continue
        if key in split:
            note = f"{note}; alone: its last run failed"
        due.append((part, reason))
        cursor.requested[key] = token
        decisions.append(Decision(key, reason, note, requested=True))
    order = instrument_partitions.get_partition_keys()
    for rect, reasons, slot in shard_runs(due, split, order, settings.shards):
        requests.append(run_request(rect, token, reasons, settings, checks, slot))

    keep = {DayPartition(i, d).key for i in live for d in days}
    cursor.requested = {k: v for k, v in cursor.requested.items() if k in keep}
    cursor.evaluated_at = now
    for d in decisions:
        if d.reason:
            context.log.info(f"{'REQUEST' if d.requested else 'wait':7} {d.key}: {d.reason} ({d.note})")
    if fine := [d.key for d in decisions if not d.reason]:
        context.log.info(f"up to date: {', '.join(fine)}")
    if settings.predictions and settings.allow_unqualified_model and requests:
        context.log.warning(
            f"{env_name('allow_unqualified_model')}=true: predictions may be served by an UNQUALIFIED "
            "model (no champion)"
        )
    if requests:
        return dg.SensorResult(run_requests=requests, cursor=cursor.dumps()), decisions
    waiting = [d for d in decisions if d.reason]
    why = (
        f"{len(waiting)} partition(s) behind but already requested or in progress"
        if waiting
        else f"all {len(decisions)} live partition(s) up to date"
    )
    return dg.SensorResult(skip_reason=why, cursor=cursor.dumps()), decisions


def sensor_default_status(settings: PlatformSettings) -> dg.DefaultSensorStatus:
    """RUNNING when CRYPTO_LIVE_SENSOR=running (the daemon then starts the live sensors), else STOPPED."""
    return dg.DefaultSensorStatus.RUNNING if settings.live_sensor else dg.DefaultSensorStatus.STOPPED


def build_live_sensor(
    settings: PlatformSettings,
    *,
    name: str = SENSOR_NAME,
    clock: Callable[[], datetime] | None = None,
    default_status: dg.DefaultSensorStatus | None = None,
) -> dg.SensorDefinition:
    """The live sensor for the loaded `settings`; `clock` (default: the wall clock) for tests."""
    live = LiveSettings.from_settings(settings)
    target = dg.AssetSelection.assets(*INGEST_KEYS, FEATURES, LABELS, PREDICTIONS)

    @dg.sensor(
        name=name,
        minimum_interval_seconds=settings.live_interval_seconds,
        default_status=default_status or sensor_default_status(settings),
        target=target,
        description=(
            f"Near-real-time: every ~{settings.live_interval_seconds} s, one run per exchange covering "
            "its live partitions that are behind (a new minute closed, raw changed, or yesterday's tail "
            "after midnight): raw -> bronze -> silver -> gold/features -> gold/predictions. At most one "
            "request per partition and minute, none while a run covering it is in progress; after a "
            "failed run its partitions run one per run until each succeeds. "
            "See crypto_platform/automation/live.py."
        ),
        tags={"crypto/kind": "live"},
    )
    def _live(context: dg.SensorEvaluationContext, lake: LakeResource) -> dg.SensorResult:
        now = (clock or (lambda: datetime.now(UTC)))()
        result, _ = evaluate(context, lake, live, now)
        return result

    return _live
