"""Near-real-time: a sensor that keeps the newest partitions of every live instrument fresh.

`live_sensor` runs every ~15 s while it is on. For every live instrument (source `synthetic` or
`ccxt`; `replay` is history, never live) it looks at the newest UTC-day partitions and requests, per exchange,
ONE run covering exactly the partitions that are behind, selecting raw -> bronze -> silver ->
gold/features -> gold/predictions (gold/labels optionally); a partition is behind when:

* **new**: a whole minute closed since the partition's raw watermark (the end of its committed
  coverage); the run fetches from the watermark (re-reading `overlap_seconds` before it, for trades
  published late) up to the last whole minute and re-derives the day: idempotent, every layer of
  the partition is replaced, bronze de-duplicates the re-read trades by id.
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
`crypto/exchange`, so the run queue limits the runs of one exchange together (dagster.yaml).

Isolation. A multi-partition run fails as a whole (a failed step skips the downstream steps of every
partition of the run), so after a failed multi-partition run each of its partitions is requested in
a run of its own, at once (not waiting for the next minute; "retry" even if its raw is current: the
run may have fetched it before another partition's step failed): the good instruments go through, the
bad one fails alone, visibly per partition, and stays in a run of its own until a run of it succeeds.

Run hygiene. At most one request per partition per minute (the run key is `live:<partition>@<minute>`
(`live:<first>..<last>@<minute>` for a range), and the cursor remembers the minute of each
partition's last request); nothing is requested for a
partition while a run for it is queued or in progress (runs tagged `dagster/partition` = the key;
a run "in progress" for longer than `stale_run_minutes` is treated as abandoned, e.g. its process
died with the daemon). A restarted daemon resumes from the cursor: it never replays the minutes it
missed one by one (one run fetches everything since each partition's watermark) and never reaches
back further than `catchup_days` days (older gaps are for an explicit backfill).

Asset checks: a live run executes the blocking checks of its assets (the Great Expectations
suites on bronze/silver: bad data stops the run before gold), not the others (drift is judged by the
monitoring job); `CRYPTO_LIVE_CHECKS=all|none` changes that.

Predictions use the MLflow 'champion'. `allow_unqualified_model` (serve the latest challenger when
no version qualifies) is passed only when `CRYPTO_ALLOW_UNQUALIFIED_MODEL=true` says so explicitly,
and those runs are tagged `crypto/unqualified_model=allowed`.

Settings: `LiveSettings`, taken from the platform settings the code location loaded once (the
`CRYPTO_LIVE_*` variables, crypto_platform/platform_settings.py), never read again at a tick.
"""

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg

from crypto_platform import tables
from crypto_platform.fetch_plan import plan_fetch
from crypto_platform.partitions import DayPartition, instrument_partitions, trade_partitions
from crypto_platform.platform_settings import DEFAULT_OVERLAP_SECONDS, PlatformSettings, env_name
from crypto_platform.raw_manifest import RawManifest
from crypto_platform.resources.lake import LakeResource
from crypto_platform.settings import load_universe
from crypto_platform.timeutil import floor_minute

SENSOR_NAME = "live_sensor"

LIVE_TAG = "crypto/live"
EXCHANGE_TAG = "crypto/exchange"  # the run queue's per-exchange limit (tag_concurrency_limits, dagster.yaml)
TRIGGER_TAG = "crypto/live_trigger"
UNQUALIFIED_TAG = "crypto/unqualified_model"
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
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
# Statuses of a run that may still write the partition.
UNFINISHED = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
# Unfinished statuses that mean a worker process should exist (so a very old one is abandoned).
_WORKER_STATUSES = {
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
}


@dataclass(frozen=True)
class LiveSettings:
    """What the live sensor requests (see PlatformSettings for the variables and their meaning)."""

    allow_unqualified_model: bool = False  # serve a challenger if no champion
    predictions: bool = True  # include gold/predictions (false: stop at features)
    labels: bool = False  # include gold/labels
    checks: str = "blocking"  # which checks of the selected assets run (LIVE_CHECK_MODES)
    overlap_seconds: int = DEFAULT_OVERLAP_SECONDS  # late-trade re-read
    catchup_days: int = 1  # earlier days (besides today) the sensor may finish
    stale_run_minutes: float = 30.0  # older "in progress" runs are abandoned

    @classmethod
    def from_settings(cls, settings: PlatformSettings) -> "LiveSettings":
        """The live part of the platform settings."""
        return cls(
            allow_unqualified_model=settings.allow_unqualified_model,
            predictions=settings.live_predictions,
            labels=settings.live_labels,
            checks=settings.live_checks,
            overlap_seconds=settings.live_overlap_seconds,
            catchup_days=settings.live_catchup_days,
            stale_run_minutes=settings.live_stale_run_minutes,
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
        ops: dict[str, Any] = {
            RAW.to_python_identifier(): {"config": {"overlap_seconds": self.overlap_seconds}}
        }
        if self.predictions and self.allow_unqualified_model:
            ops[PREDICTIONS.to_python_identifier()] = {"config": {"allow_unqualified_model": True}}
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


def _latest_storage_id(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str) -> int | None:
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
    )
    return result.records[0].storage_id if result.records else None


def downstream_stale(instance: dg.DagsterInstance, partition: str, settings: LiveSettings) -> bool:
    """raw/trades of the partition was materialized after the run's last asset (or that never was)."""
    raw = _latest_storage_id(instance, RAW, partition)
    if raw is None:
        return False
    done = _latest_storage_id(instance, settings.terminal, partition)
    return done is None or raw > done


def is_abandoned(record: Any, now: datetime, stale_after: timedelta) -> bool:
    """An unfinished run whose worker should have finished long ago (e.g. it died with the daemon)."""
    if record.dagster_run.status not in _WORKER_STATUSES:
        return False  # queued runs wait for a slot; they are not abandoned
    started = record.start_time or record.create_timestamp.timestamp()
    return now.timestamp() - started > stale_after.total_seconds()


def unfinished_runs(
    instance: dg.DagsterInstance, partition: str, now: datetime, stale_after: timedelta, ranges: Sequence[Any]
) -> tuple[list[str], list[str]]:
    """(active, abandoned) ids of the unfinished runs writing a partition, whoever launched them:
    runs of that one key, and single-run ranges (backfills) whose rectangle holds it."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(tags={PARTITION_TAG: partition}, statuses=UNFINISHED), limit=20
    )
    records = [*records, *(r for r in ranges if partition in _range_keys(r))]
    active, abandoned = [], []
    for r in records:
        (abandoned if is_abandoned(r, now, stale_after) else active).append(r.dagster_run.run_id)
    return active, abandoned


def unfinished_range_runs(instance: dg.DagsterInstance) -> list[Any]:
    """Unfinished runs over a partition range (single-run backfills), with the range in their tags."""
    records = instance.get_run_records(filters=dg.RunsFilter(statuses=UNFINISHED), limit=200)
    return [
        r for r in records if RANGE_START_TAG in r.dagster_run.tags and RANGE_END_TAG in r.dagster_run.tags
    ]


def _range_keys(record: Any) -> set[str]:
    tags = record.dagster_run.tags
    if PARTITION_TAG in tags:
        return {tags[PARTITION_TAG]}
    if RANGE_START_TAG not in tags or RANGE_END_TAG not in tags:
        return set()
    try:
        rng = dg.PartitionKeyRange(tags[RANGE_START_TAG], tags[RANGE_END_TAG])
        return set(trade_partitions.get_partition_keys_in_range(rng))
    except Exception:  # another partitioning (e.g. a job of other assets): not ours
        return set()


def split_after_failure(
    instance: dg.DagsterInstance, keys: Sequence[str], lookback: int = 200
) -> tuple[set[str], set[str]]:
    """(split, retry_now) among `keys` (the due partitions): split = the latest finished live run
    covering the key failed, so it gets a run of its own (isolation); retry_now = that failed run
    covered several partitions, so the key is requested again at once, not a minute later.
    Only the newest `lookback` finished live runs are looked at."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(tags={LIVE_TAG: "true"}, statuses=FINISHED), limit=lookback
    )
    pending: set[str] = set(keys)
    split: set[str] = set()
    retry_now: set[str] = set()
    for r in records:  # newest first
        if not pending:
            break
        covered = _range_keys(r) & pending
        if covered and r.dagster_run.status == dg.DagsterRunStatus.FAILURE:
            split |= covered
            if PARTITION_TAG not in r.dagster_run.tags:
                retry_now |= covered
        pending -= covered
    return split, retry_now


def rectangles(parts: Sequence[DayPartition], order: Sequence[str]) -> list[list[DayPartition]]:
    """Cut partitions into as few (consecutive days x consecutive instruments) rectangles as cover
    exactly them; `order` is the instrument dimension's key order (a range spans it)."""
    index = {k: i for i, k in enumerate(order)}
    by_day: dict[date, list[DayPartition]] = {}
    for p in sorted(parts, key=lambda p: (p.day, index[p.instrument.key])):
        by_day.setdefault(p.day, []).append(p)
    blocks: dict[date, list[list[DayPartition]]] = {}
    for day, row in by_day.items():  # runs of instruments adjacent in the dimension's order
        cut: list[list[DayPartition]] = []
        for p in row:
            if cut and index[p.instrument.key] == index[cut[-1][-1].instrument.key] + 1:
                cut[-1].append(p)
            else:
                cut.append([p])
        blocks[day] = cut
    out: list[list[DayPartition]] = []
    open_: dict[tuple[str, ...], list[DayPartition]] = {}  # block (instrument keys) -> rectangle so far
    for day in sorted(blocks):
        still: dict[tuple[str, ...], list[DayPartition]] = {}
        for block in blocks[day]:
            sig = tuple(p.instrument.key for p in block)
            rect = open_.pop(sig, None)
            if rect is not None and rect[-1].day == day - timedelta(days=1):
                still[sig] = rect + block
            else:
                if rect is not None:
                    out.append(rect)
                still[sig] = list(block)
        out.extend(open_.values())
        open_ = still
    out.extend(open_.values())
    return sorted(out, key=lambda r: (r[0].day, index[r[0].instrument.key]))


def group_runs(
    due: Sequence[tuple[DayPartition, str]], split: set[str], order: Sequence[str]
) -> list[tuple[list[DayPartition], list[str]]]:
    """The runs of one tick: (rectangle of partitions, their reasons) per exchange (`rectangles`),
    each key in `split` in a run of its own; `order` is the instrument dimension's key order."""
    groups: dict[str, list[tuple[DayPartition, str]]] = {}
    for part, reason in due:
        groups.setdefault(part.key if part.key in split else part.instrument.exchange, []).append(
            (part, reason)
        )
    runs = []
    for group in groups.values():
        reasons = {p.key: r for p, r in group}
        runs += [(rect, [reasons[p.key] for p in rect]) for rect in rectangles([p for p, _ in group], order)]
    return runs


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
) -> dg.RunRequest:
    """One run over a rectangle of partitions (`rectangles`): a key, or a range from the first to the
    last; tagged with the exchange (the queue's per-exchange limit) and why it was requested."""
    # With run monitoring on, Dagster cancels a run stuck longer than the sensor waits for it.
    tags = {
        LIVE_TAG: "true",
        TRIGGER_TAG: ",".join(sorted(set(reasons))),
        EXCHANGE_TAG: parts[0].instrument.exchange,
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
            if reason is None and day == today and downstream_stale(context.instance, part.key, settings):
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
    for rect, reasons in group_runs(due, split, instrument_partitions.get_partition_keys()):
        requests.append(run_request(rect, token, reasons, settings, checks))

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
