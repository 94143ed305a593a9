"""Alerting: failed runs and failed asset checks, posted to a Slack-compatible webhook.

Where the URL comes from: `WebhookResource.url`, which the code location sets from the settings
(`CRYPTO_WEBHOOK_URL`, passed as an `EnvVar`: the UI shows the variable, never the URL). Empty:
nothing is sent, no connection is attempted, and the sensors skip with a reason (the check cursor
still advances, so enabling the webhook later does not replay old failures).

* `run_failure_notifier` (run-failure sensor over every run of the instance, whatever started it: the
  UI, a sensor or schedule of any code location, or the CLI, e.g. the README's backfills and the demo,
  whose runs belong to no code location): job, run id, partition(s), selected assets and checks, and
  the error of every failed step (a blocking check failure names the check).
* `check_failure_notifier` (sensor over the instance's asset-check records): one message per failed
  evaluation of any check in the code location at ERROR (WARN optional): asset, check, partition(s),
  severity, description and the check's figures (unexpected counts, PSI / KS, rank IC, ...). Blocking
  and non-blocking checks alike: a drift or skill check never fails its run, so a run-failure sensor
  alone would never hear of it.

Both default to RUNNING: they are inert without a URL and cheap (one query per check and tick).
"""

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

import dagster as dg
from pydantic import Field

from crypto_platform.monitoring.notify import Notifier, format_check_failure, format_run_failure
from crypto_platform.platform_settings import env_name

WEBHOOK_ENV = env_name("webhook_url")
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
_MAX_FIGURES = 24
_MAX_PER_TICK = 20
_PENDING_MAX_AGE_S = 24 * 3600


class WebhookResource(dg.ConfigurableResource):
    """Where alerts go: a Slack-compatible webhook (empty: nothing is sent)."""

    url: str = Field(
        default="",
        description=f"Webhook URL (a secret: set it from EnvVar('{WEBHOOK_ENV}')). Empty: nothing sent.",
        json_schema_extra={"dagster__is_secret": True},
    )
    timeout_s: float = Field(default=5.0, description="Timeout of one post, in seconds.")
    ui_url: str = Field(
        default="", description="Base URL of the Dagster UI, to link runs in messages (optional)."
    )

    def notifier(self) -> Notifier:
        """The webhook client for the configured URL; disabled when it is empty."""
        return Notifier(self.url, self.timeout_s)

    def run_link(self, run_id: str) -> str | None:
        """Link to a run in the Dagster UI, when the UI's URL is configured."""
        return f"{self.ui_url.rstrip('/')}/runs/{run_id}" if self.ui_url else None


def partition_label(tags: Mapping[str, str]) -> str | None:
    """The run's partition key or 'start...end' range, from its tags."""
    if tags.get(PARTITION_TAG):
        return tags[PARTITION_TAG]
    if tags.get(RANGE_START_TAG) and tags.get(RANGE_END_TAG):
        return f"{tags[RANGE_START_TAG]}...{tags[RANGE_END_TAG]}"
    return None


# ----------------------------------------------------------------------------------------------
# run failures


def build_run_failure_notifier(
    *,
    name: str = "run_failure_notifier",
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
) -> dg.SensorDefinition:
    """A run-failure sensor posting each failed run of the instance (any origin) via the webhook.

    Dagster's default watches only the sensor's own code location, which misses CLI runs (they have
    no code location origin) and runs of other locations: `monitor_all_code_locations` covers them all.
    """

    @dg.run_failure_sensor(
        name=name,
        default_status=default_status,
        monitor_all_code_locations=True,
        description="Posts every failed run (job, partition, assets, failed steps, errors) to the webhook.",
    )
    def _run_failure_notifier(context: dg.RunFailureSensorContext, webhook: WebhookResource):
        notifier = webhook.notifier()
        run = context.dagster_run
        if not notifier.enabled:
            return dg.SkipReason(f"no webhook URL configured (${WEBHOOK_ENV}): run {run.run_id} not posted")
        title, fields = run_failure_message(context, webhook)
        if not notifier.send(title, fields):
            context.log.warning(f"failure of run {run.run_id} could not be posted (see logs)")
        return None

    return _run_failure_notifier


def run_failure_message(
    context: dg.RunFailureSensorContext, webhook: WebhookResource | None = None
) -> tuple[str, dict[str, str]]:
    """(title, fields) describing a failed run and its failed steps."""
    run = context.dagster_run
    steps = context.get_step_failure_events()
    errors = []
    for ev in steps:
        err = getattr(ev.event_specific_data, "error", None)
        errors.append(f"{ev.step_key}: {_error_text(err) if err is not None else ev.message or ''}")
    error = "\n".join(errors) or (context.failure_event.message or "run failed")
    title, fields = format_run_failure(run.job_name, run.run_id, error)
    fields["partition"] = partition_label(run.tags) or "-"
    assets = run.asset_selection or context.instance.get_asset_keys_for_run(
        run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED
    )
    if assets:
        fields["assets"] = ", ".join(sorted(k.to_user_string() for k in assets)[:30])
    if run.asset_check_selection:
        fields["checks"] = ", ".join(
            sorted(f"{k.asset_key.to_user_string()}:{k.name}" for k in run.asset_check_selection)
        )
    if steps:
        fields["failed_steps"] = ", ".join(str(ev.step_key) for ev in steps)
    if webhook is not None and (link := webhook.run_link(run.run_id)):
        fields["link"] = link
    return title, fields


_WRAPPERS = {"DagsterExecutionStepExecutionError", "DagsterUserCodeExecutionError"}


def _error_text(err: Any) -> str:
    """'Cls: message' of a step's error; the user's error itself when Dagster only wrapped it."""
    while err.cls_name in _WRAPPERS and err.cause is not None:
        err = err.cause
    message = err.message.strip()
    return message if err.cls_name in message else f"{err.cls_name}: {message}"


# ----------------------------------------------------------------------------------------------
# check failures


@dataclass
class CheckCursor:
    """Asset-check execution ids seen so far: all ids <= watermark, except `pending` ones still planned."""

    watermark: int = -1
    pending: dict[int, float] = field(default_factory=dict)  # id -> creation time of a planned execution

    @classmethod
    def parse(cls, raw: str | None) -> Self:
        """Read a cursor string (empty or missing: a fresh cursor)."""
        if not raw:
            return cls()
        try:
            data = json.loads(raw)
            return cls(int(data["watermark"]), {int(k): float(v) for k, v in data.get("pending", {}).items()})
        except (ValueError, TypeError, KeyError, AttributeError):
            return cls()

    def dumps(self) -> str:
        """The cursor as a JSON string."""
        return json.dumps(
            {"watermark": self.watermark, "pending": {str(k): v for k, v in self.pending.items()}}
        )


@dataclass(frozen=True)
class CheckFailure:
    """One failed check evaluation to report."""

    key: dg.AssetCheckKey
    record_id: int
    run_id: str
    timestamp: float
    evaluation: Any  # dagster AssetCheckEvaluation


def build_check_failure_notifier(
    *,
    name: str = "check_failure_notifier",
    severities: tuple[dg.AssetCheckSeverity, ...] = (dg.AssetCheckSeverity.ERROR,),
    minimum_interval_seconds: int = 60,
    first_tick_lookback_s: float = 3600.0,
    history: int = 50,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
) -> dg.SensorDefinition:
    """A sensor posting each newly failed asset-check evaluation (of the given severities) via the webhook."""

    @dg.sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=(
            f"Posts every failed asset-check evaluation at {'/'.join(s.value for s in severities)} "
            "(asset, check, partition, figures) to the webhook."
        ),
    )
    def _check_failure_notifier(
        context: dg.SensorEvaluationContext, webhook: WebhookResource
    ) -> dg.SensorResult:
        repo = context.repository_def
        keys = sorted(repo.asset_graph.asset_check_keys, key=str) if repo is not None else []
        first_tick = context.cursor is None
        failures, cursor = new_check_failures(
            context.instance,
            keys,
            CheckCursor.parse(context.cursor),
            history=history,
            not_before=time.time() - first_tick_lookback_s if first_tick else None,
        )
        failures = [f for f in failures if f.evaluation.severity in severities]
        if not failures:
            return dg.SensorResult(
                skip_reason=dg.SkipReason(f"no new failed check evaluation among {len(keys)} checks"),
                cursor=cursor.dumps(),
            )
        notifier = webhook.notifier()
        if not notifier.enabled:
            return dg.SensorResult(
                skip_reason=dg.SkipReason(
                    f"no webhook URL configured (${WEBHOOK_ENV}): {len(failures)} check failure(s) not posted"
                ),
                cursor=cursor.dumps(),
            )
        sent = 0
        for failure in failures[:_MAX_PER_TICK]:
            title, fields = check_failure_message(context.instance, failure, webhook)
            sent += notifier.send(title, fields)
        if len(failures) > _MAX_PER_TICK:
            rest = failures[_MAX_PER_TICK:]
            sent += notifier.send(
                f"{len(rest)} more asset checks failed",
                {
                    "checks": ", ".join(
                        sorted({f"{f.key.asset_key.to_user_string()}:{f.key.name}" for f in rest})
                    )
                },
            )
        return dg.SensorResult(
            skip_reason=dg.SkipReason(
                f"posted {sent} message(s) for {len(failures)} failed check evaluation(s)"
            ),
            cursor=cursor.dumps(),
        )

    return _check_failure_notifier


def new_check_failures(
    instance: dg.DagsterInstance,
    keys: list[dg.AssetCheckKey],
    cursor: CheckCursor,
    *,
    history: int = 50,
    not_before: float | None = None,
) -> tuple[list[CheckFailure], CheckCursor]:
    """Failed evaluations not reported yet, and the advanced cursor.

    Execution ids are assigned when a check is *planned* (run start) and the row is completed later,
    so an id below the watermark can still turn into a failure: planned ids are kept as pending until
    they complete (or are a day old).
    """
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus as S

    now = time.time()
    watermark = cursor.watermark
    pending: dict[int, float] = {}
    failures: list[CheckFailure] = []
    for key in keys:
        for rec in instance.event_log_storage.get_asset_check_execution_history(key, limit=history):
            if rec.id <= cursor.watermark and rec.id not in cursor.pending:
                continue
            watermark = max(watermark, rec.id)
            if rec.status == S.PLANNED:
                if now - rec.create_timestamp < _PENDING_MAX_AGE_S:
                    pending[rec.id] = rec.create_timestamp
                continue
            ev = rec.evaluation
            if rec.status != S.FAILED or ev is None or rec.event is None:
                continue
            if not_before is not None and rec.event.timestamp < not_before:
                continue
            failures.append(CheckFailure(key, rec.id, rec.run_id, rec.event.timestamp, ev))
    failures.sort(key=lambda f: f.record_id)
    return failures, CheckCursor(watermark, pending)


def check_failure_message(
    instance: dg.DagsterInstance, failure: CheckFailure, webhook: WebhookResource | None = None
) -> tuple[str, dict[str, str]]:
    """(title, fields) for one failed evaluation: asset, partition, check and its figures."""
    ev = failure.evaluation
    meta = ev.metadata or {}
    partition = ev.partition or _text(meta.get("partition"))
    failed_parts = _text(meta.get("failed_partitions"))
    if not partition:
        run = instance.get_run_by_id(failure.run_id)
        partition = partition_label(run.tags) if run is not None else None
    figures: dict[str, Any] = {"severity": ev.severity.value}
    if failed_parts and failed_parts != "-" and failed_parts != partition:
        figures["failed_partitions"] = failed_parts
    if ev.description:
        figures["description"] = ev.description
    figures["run_id"] = failure.run_id
    for k, v in meta.items():
        if len(figures) >= _MAX_FIGURES:
            break
        if k in {"partition", "failed_partitions"}:
            continue
        if k.endswith(".unexpected_count") and _scalar(v) == 0:  # what passed is noise in an alert
            continue
        if (value := _scalar(v)) is not None:
            figures[k] = value
    if webhook is not None and (link := webhook.run_link(failure.run_id)):
        figures["link"] = link
    return format_check_failure(ev.asset_key.to_user_string(), partition, ev.check_name, figures)


def _scalar(v: Any) -> Any:
    """A metadata value that reads well in a message (numbers, booleans, short text); None otherwise."""
    if isinstance(v, dg.IntMetadataValue | dg.FloatMetadataValue | dg.BoolMetadataValue):
        return v.value
    if isinstance(v, dg.TextMetadataValue):
        return v.value if len(v.value) <= 600 else v.value[:599] + "…"
    return None


def _text(v: Any) -> str | None:
    if v is None:
        return None
    value = getattr(v, "value", v)
    return str(value) if value is not None else None


run_failure_notifier = build_run_failure_notifier()
check_failure_notifier = build_check_failure_notifier()

NOTIFICATION_SENSORS = [run_failure_notifier, check_failure_notifier]
