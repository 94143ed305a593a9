"""Retraining automation: a sensor that retrains on drift / loss of skill, and the default schedules.

`retraining_sensor` reads the state of the watched checks (feature drift, prediction drift, model
skill) from the instance's asset-check records and requests one run of `training_job` when

  1. a watched check's newest evaluation *about the newest data* failed with a triggering severity
     (ERROR by default: WARN is shown, never acted on; failures about history, e.g. a backfill of old
     partitions, carry `about_latest_data: false` and are ignored),
  2. no training run is queued or running,
  3. that failure is newer than the last training run (any origin: this sensor, the daily schedule,
     a manual launch), so evidence the current model was trained after is not acted on twice, and
  4. the cooldown (default 6 h, `CRYPTO_RETRAIN_COOLDOWN_HOURS`) since the last training run or
     request has passed.

Otherwise the tick is skipped with the reason. The cursor remembers the last request (so the cooldown
also holds before the requested run reaches the run storage); the run key is the triggering
evaluation, and the run's tags name the triggering check(s).

Default status of every schedule and this sensor: STOPPED, switchable at once with
`CRYPTO_AUTOMATION=running` (or one by one in the UI). They launch real compute: on a fresh
checkout (empty lake, no champion) the daily training would fail every day and the hourly monitoring
would fill the run history with no-op runs; a deployment turns them on deliberately. The
notification sensors (automation/notifications.py) default to RUNNING: they send nothing without a
webhook URL.
"""

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Self

import dagster as dg

from crypto_platform import tables
from crypto_platform.assets.rolling_evaluation import MODEL_SKILL_CHECK
from crypto_platform.automation.jobs import training_job
from crypto_platform.checks.drift import FEATURE_DRIFT_CHECK, PREDICTION_DRIFT_CHECK
from crypto_platform.metadata import ABOUT_LATEST_DATA
from crypto_platform.partitions import multi_key
from crypto_platform.platform_settings import PlatformSettings
from crypto_platform.settings import load_universe

TRIGGER_TAG = "crypto_platform/trigger"
TRIGGER_CHECKS_TAG = "crypto_platform/trigger_checks"
TRIGGER_RUN_TAG = "crypto_platform/trigger_run_id"

WATCHED_CHECKS: tuple[dg.AssetCheckKey, ...] = (
    dg.AssetCheckKey(tables.FEATURES.key, FEATURE_DRIFT_CHECK),
    dg.AssetCheckKey(tables.PREDICTIONS.key, PREDICTION_DRIFT_CHECK),
    dg.AssetCheckKey(tables.ROLLING_EVALUATION.key, MODEL_SKILL_CHECK),
)
_PENDING = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
_HISTORY = 25  # newest evaluations read per check when looking for one about the newest data


def automation_status(settings: PlatformSettings) -> dg.DefaultScheduleStatus:
    """STOPPED unless $CRYPTO_AUTOMATION is 'running' (or true)."""
    return dg.DefaultScheduleStatus.RUNNING if settings.automation else dg.DefaultScheduleStatus.STOPPED


def _sensor_status(status: dg.DefaultScheduleStatus) -> dg.DefaultSensorStatus:
    return dg.DefaultSensorStatus(status.value)


@dataclass(frozen=True)
class CheckFinding:
    """The newest evaluation of one watched check that concerns the newest data."""

    key: dg.AssetCheckKey
    record_id: int
    run_id: str
    timestamp: float
    passed: bool
    severity: dg.AssetCheckSeverity
    description: str | None

    @property
    def label(self) -> str:
        """'asset:check' name of the finding's check."""
        return f"{self.key.asset_key.to_user_string()}:{self.key.name}"

    @property
    def when(self) -> str:
        """When the check was evaluated, ISO-8601 UTC."""
        return _iso(self.timestamp)


def latest_finding(instance: dg.DagsterInstance, key: dg.AssetCheckKey) -> CheckFinding | None:
    """The newest completed evaluation of `key` not marked as being about history (None if none)."""
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus as S

    records = instance.event_log_storage.get_asset_check_execution_history(
        key, limit=_HISTORY, status={S.SUCCEEDED, S.FAILED}
    )
    for rec in records:
        ev = rec.evaluation
        if ev is None or rec.event is None:
            continue
        latest = ev.metadata.get(ABOUT_LATEST_DATA)
        if latest is not None and latest.value is False:
            continue
        return CheckFinding(
            key, rec.id, rec.run_id, rec.event.timestamp, ev.passed, ev.severity, ev.description
        )
    return None


@dataclass
class RetrainCursor:
    """Sensor state: when this sensor last requested a training run, and what triggered it."""

    last_request_ts: float = 0.0
    last_trigger: str = ""

    @classmethod
    def parse(cls, raw: str | None) -> Self:
        """Read a cursor string (empty or missing: a fresh cursor)."""
        if not raw:
            return cls()
        try:
            data = json.loads(raw)
            return cls(float(data.get("last_request_ts", 0.0)), str(data.get("last_trigger", "")))
        except (ValueError, TypeError, AttributeError):
            return cls()

    def dumps(self) -> str:
        """The cursor as a JSON string."""
        return json.dumps(asdict(self), sort_keys=True)


def build_retraining_sensor(
    settings: PlatformSettings,
    *,
    name: str = "retraining_sensor",
    watched: Sequence[dg.AssetCheckKey] = WATCHED_CHECKS,
    trigger_severities: Sequence[dg.AssetCheckSeverity] = (dg.AssetCheckSeverity.ERROR,),
    minimum_interval_seconds: int = 300,
) -> dg.SensorDefinition:
    """A sensor requesting `training_job` on failing drift / skill checks, at most once per cooldown."""
    cooldown_s = 3600.0 * settings.retrain_cooldown_hours
    severities = set(trigger_severities)
    status = _sensor_status(automation_status(settings))
    job_name = training_job.name

    @dg.sensor(
        name=name,
        job=training_job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=status,
        description=(
            f"Requests one {job_name} run when a drift or skill check ({', '.join(k.name for k in watched)}) "
            f"fails with {'/'.join(s.value for s in severities)} about the newest data after the last "
            f"training, at most once per {cooldown_s / 3600:g} h; the run's tags name the trigger."
        ),
    )
    def _retraining_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        state = RetrainCursor.parse(context.cursor)
        now = time.time()
        instance = context.instance

        def skip(reason: str) -> dg.SensorResult:
            return dg.SensorResult(skip_reason=dg.SkipReason(reason), cursor=state.dumps())

        findings = [f for key in watched if (f := latest_finding(instance, key)) is not None]
        failing = [f for f in findings if not f.passed and f.severity in severities]
        if not failing:
            seen = "; ".join(
                f"{f.label} {'passed' if f.passed else f'failed with {f.severity.value}'} at {f.when}"
                for f in findings
            )
            return skip(
                f"no watched check failing with {'/'.join(s.value for s in severities)} "
                f"({seen or 'no evaluations yet'})"
            )
        pending = instance.get_run_records(dg.RunsFilter(job_name=job_name, statuses=_PENDING), limit=1)
        if pending:
            run = pending[0].dagster_run
            return skip(f"{job_name} run {run.run_id} is already {run.status.value.lower()}")
        last_run = _last_training_run_ts(instance, job_name)
        last_training = max(state.last_request_ts, last_run or 0.0)
        new = [f for f in failing if f.timestamp > last_training]
        if not new:
            return skip(
                f"failing {', '.join(f.label for f in failing)} predate the last training "
                f"run or request at {_iso(last_training)}: waiting for a newer evaluation"
            )
        if now < last_training + cooldown_s:
            return skip(
                f"cooldown: last training run or request at {_iso(last_training)}, next allowed at "
                f"{_iso(last_training + cooldown_s)}; failing: {', '.join(f.label for f in new)}"
            )
        trigger = max(new, key=lambda f: f.timestamp)
        labels = ", ".join(f.label for f in new)
        context.log.info(f"requesting {job_name}: {labels} failed ({trigger.description})")
        state = RetrainCursor(last_request_ts=now, last_trigger=f"{trigger.label}#{trigger.record_id}")
        request = dg.RunRequest(
            run_key=f"retrain:{trigger.label}:{trigger.record_id}",
            tags={
                TRIGGER_TAG: name,
                TRIGGER_CHECKS_TAG: labels[:1000],
                TRIGGER_RUN_TAG: trigger.run_id,
            },
        )
        return dg.SensorResult(run_requests=[request], cursor=state.dumps())

    return _retraining_sensor


def _last_training_run_ts(instance: dg.DagsterInstance, job_name: str) -> float | None:
    records = instance.get_run_records(dg.RunsFilter(job_name=job_name), limit=1)
    if not records:
        return None
    created = records[0].create_timestamp
    return (created if created.tzinfo else created.replace(tzinfo=UTC)).timestamp()  # stored as naive UTC


def _iso(ts: float) -> str:
    if ts <= 0:
        return "never"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


monitoring_job = dg.define_asset_job(
    "monitoring_job",
    selection=(
        # the monitoring assets, and the drift and skill checks on the newest data (check-only)
        dg.AssetSelection.assets(tables.PREDICTION_ERRORS.key, tables.PREDICTION_SKILL.key)
        | dg.AssetSelection.checks(*WATCHED_CHECKS)
    ),
    description=(
        "Matured prediction errors and rolling skill, the feature and prediction drift checks over the "
        "newest 24 h of each instrument and model_skill on each instrument's newest out-of-sample day."
    ),
)


rolling_evaluation_job = dg.define_asset_job(
    "rolling_evaluation_job",
    selection=dg.AssetSelection.assets(tables.LABELS.key, tables.ROLLING_EVALUATION.key),
    description=(
        "A closed day's labels (now complete: the next day's first bars exist) and the champion's "
        "out-of-sample score against every baseline on it (gold/rolling_evaluation, with model_skill)."
    ),
)


def build_rolling_evaluation_schedule(settings: PlatformSettings) -> dg.ScheduleDefinition:
    """Daily at 01:15 UTC: yesterday's labels and rolling evaluation, one run per live instrument."""

    @dg.schedule(
        name="daily_rolling_evaluation",
        job=rolling_evaluation_job,
        cron_schedule="15 1 * * *",
        execution_timezone="UTC",
        default_status=automation_status(settings),
        description=(
            "Score the champion and every baseline on the previous UTC day of each live instrument once its "
            "labels matured (01:15 UTC: the 60-minute labels of the day's last bars exist)."
        ),
    )
    def _daily_rolling_evaluation(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
        day = (context.scheduled_execution_time or datetime.now(UTC)).astimezone(UTC).date() - timedelta(
            days=1
        )
        return [
            dg.RunRequest(run_key=f"rolling_evaluation:{key}", partition_key=key)
            for inst in load_universe().instruments
            if inst.is_live and (key := multi_key(day, inst.key))
        ]

    return _daily_rolling_evaluation


def build_schedules(settings: PlatformSettings) -> list[dg.ScheduleDefinition]:
    """The daily retraining, rolling evaluation and hourly monitoring schedules, RUNNING only with
    CRYPTO_AUTOMATION=running."""
    return [
        dg.ScheduleDefinition(
            name="daily_retraining",
            job=training_job,
            cron_schedule="30 2 * * *",
            execution_timezone="UTC",
            default_status=automation_status(settings),
            description=(
                "Retrain daily at 02:30 UTC, after the previous UTC day closed; the promotion gate decides."
            ),
        ),
        dg.ScheduleDefinition(
            name="hourly_monitoring",
            job=monitoring_job,
            cron_schedule="5 * * * *",
            execution_timezone="UTC",
            default_status=automation_status(settings),
            description=(
                "Prediction errors, skill and drift every hour (5 past, after the top-of-hour bars closed)."
            ),
        ),
        build_rolling_evaluation_schedule(settings),
    ]


RETRAINING_JOBS = [monitoring_job, rolling_evaluation_job]
