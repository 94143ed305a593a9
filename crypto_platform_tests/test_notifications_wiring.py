"""Alerting wired into Dagster: run-failure and check-failure sensors posting to a local webhook.

The webhook is a real HTTP server on 127.0.0.1 recording every request; the failures come from a real
run (a corrupted silver partition failing the blocking candle suite, so the features never run).
Without a URL (resource empty, CRYPTO_WEBHOOK_URL unset) the receiver sees zero requests.
"""

import warnings
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from crypto_platform import tables
from crypto_platform.automation.notifications import (
    NOTIFICATION_SENSORS,
    WebhookResource,
    build_check_failure_notifier,
    check_failure_notifier,
    run_failure_notifier,
)
from crypto_platform.checks.quality import candles_1m_suite
from crypto_platform.definitions import build_resources
from crypto_platform.platform_settings import PlatformSettings, SettingsWarning
from crypto_platform.resources.lake import LakeResource
from crypto_platform_tests.fixtures import (
    ASSETS,
    CHECKS,
    WebhookReceiver,
    cell,
    corrupt_candles,
    key,
    recorded_connections,
    resources,
    write_silver,
)

BAD_DAY = "2022-01-11"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory: pytest.TempPathFactory):
    """An instance holding one real failed run: the blocking candle suite failed on a corrupted day.

    One run for the module: the notifiers only read it, each test passing its own sensor cursor."""
    tmp = tmp_path_factory.mktemp("failed_run")
    lake = LakeResource(root=str(tmp / "lake"))
    write_silver(lake, ["2022-01-10", BAD_DAY])
    bad = cell(BAD_DAY)
    lake.write_partition(corrupt_candles(lake.read_partition(tables.CANDLES_1M, bad)), tables.CANDLES_1M, bad)
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            [*ASSETS, candles_1m_suite],
            selection=dg.AssetSelection.checks(candles_1m_suite)
            | dg.AssetSelection.assets(tables.FEATURES.key),
            partition_key=key(BAD_DAY),
            instance=instance,
            resources=resources(tmp),
            raise_on_error=False,
        )
        assert not result.success
        yield instance, result


def _run_failure_context(instance, result, webhook: WebhookResource) -> dg.RunFailureSensorContext:
    return dg.build_run_status_sensor_context(
        sensor_name=run_failure_notifier.name,
        dagster_event=result.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id),
        resources={"webhook": webhook},
    ).for_run_failure()


def _definitions(tmp: Path) -> dg.Definitions:
    return dg.Definitions(
        assets=ASSETS,
        asset_checks=CHECKS,
        sensors=NOTIFICATION_SENSORS,
        resources={**resources(tmp), "webhook": WebhookResource()},
    )


def _check_tick(instance, tmp: Path, webhook: WebhookResource, cursor: str | None = None, sensor=None):
    ctx = dg.build_sensor_context(
        instance=instance, cursor=cursor, definitions=_definitions(tmp), resources={"webhook": webhook}
    )
    result = (sensor or check_failure_notifier)(ctx)
    assert isinstance(result, dg.SensorResult)
    return result


@pytest.mark.slow
def test_run_failure_is_posted_with_job_partition_and_error(failed_run, receiver: WebhookReceiver) -> None:
    instance, result = failed_run
    webhook = WebhookResource(url=receiver.url, ui_url="http://dagster.local:3000")
    run_failure_notifier(_run_failure_context(instance, result, webhook))
    assert len(receiver.bodies) == 1
    text = receiver.bodies[0]["text"]
    assert text.startswith("Run failed: __ephemeral_asset_job__")
    assert f"run_id: {result.run_id}" in text
    assert f"partition: {key(BAD_DAY)}" in text
    assert "blocking asset check failed" in text and "candles_1m_suite" in text
    assert "gold/features" in text  # the selected assets
    assert f"link: http://dagster.local:3000/runs/{result.run_id}" in text
    assert receiver.bodies[0]["blocks"][0]["text"]["text"].startswith("Run failed")


@pytest.mark.slow
def test_check_failure_is_posted_once_with_asset_partition_and_figures(
    failed_run, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    instance, _ = failed_run
    webhook = WebhookResource(url=receiver.url)
    first = _check_tick(instance, tmp_path, webhook)
    assert len(receiver.bodies) == 1, first.skip_reason
    text = receiver.bodies[0]["text"]
    assert text.startswith("Check failed: silver/candles_1m / candles_1m_suite")
    assert f"partition: {key(BAD_DAY)}" in text
    assert "severity: ERROR" in text
    assert "high_ge_low.unexpected_count: 1" in text and "minute_unique.unexpected_count: 2" in text
    assert "failed_expectations:" in text

    # the next tick has nothing new to say
    second = _check_tick(instance, tmp_path, webhook, first.cursor)
    assert len(receiver.bodies) == 1
    assert "no new failed check evaluation" in second.skip_reason.skip_message


@pytest.mark.slow
def test_warn_failures_are_posted_only_when_asked(
    failed_run, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    instance, _ = failed_run
    webhook = WebhookResource(url=receiver.url)
    only_warn = build_check_failure_notifier(name="warn_only", severities=(dg.AssetCheckSeverity.WARN,))
    result = _check_tick(instance, tmp_path, webhook, sensor=only_warn)
    assert receiver.bodies == [] and "no new failed check evaluation" in result.skip_reason.skip_message


@pytest.mark.slow
def test_nothing_is_sent_without_a_webhook_url(failed_run, receiver: WebhookReceiver, tmp_path: Path) -> None:
    instance, result = failed_run
    off = WebhookResource()
    with recorded_connections() as attempts:
        skipped = run_failure_notifier(_run_failure_context(instance, result, off))
        tick = _check_tick(instance, tmp_path, off)
    assert attempts == []  # no connection anywhere (any host, any port), not just none to the receiver
    assert isinstance(skipped, dg.SkipReason) and "no webhook URL" in skipped.skip_message
    assert "not posted" in tick.skip_reason.skip_message
    assert receiver.bodies == []

    # the cursor moved on: enabling the webhook later does not replay the old failure
    _check_tick(instance, tmp_path, WebhookResource(url=receiver.url), tick.cursor)
    assert receiver.bodies == []


@pytest.mark.slow
@pytest.mark.parametrize("var", ["CRYPTO_WEBHOOK_URL", "CRYPTO_PLATFORM_WEBHOOK_URL"])
def test_webhook_url_from_the_environment(
    failed_run, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, var: str
) -> None:
    """The code location's webhook resource posts to $CRYPTO_WEBHOOK_URL (or, deprecated, the old name)."""
    instance, result = failed_run
    monkeypatch.setenv(var, receiver.url)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        webhook = build_resources(PlatformSettings.from_env())["webhook"]
    deprecated = [str(w.message) for w in caught if issubclass(w.category, SettingsWarning)]
    old = var != "CRYPTO_WEBHOOK_URL"
    assert [m.split(":")[0] for m in deprecated] == ([f"{var} is deprecated"] if old else [])
    assert all("rename it to CRYPTO_WEBHOOK_URL" in m for m in deprecated)
    run_failure_notifier(_run_failure_context(instance, result, webhook))
    _check_tick(instance, tmp_path, webhook)
    assert [b["text"].split("\n")[0] for b in receiver.bodies] == [
        "Run failed: __ephemeral_asset_job__",
        "Check failed: silver/candles_1m / candles_1m_suite",
    ]


def test_notification_sensors_default_to_running() -> None:
    for sensor in NOTIFICATION_SENSORS:
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
