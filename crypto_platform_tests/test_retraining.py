"""Retraining automation on a real instance: failing skill / drift checks -> exactly one training run.

Check evaluations come from real runs of the checks (Dagster's harness, ephemeral instance); the
sensor is ticked with `build_sensor_context`, passing each tick's cursor on to the next.
"""

import uuid
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from crypto_platform.assets.rolling_evaluation import model_skill
from crypto_platform.automation.jobs import JOBS
from crypto_platform.automation.retraining import (
    TRIGGER_CHECKS_TAG,
    TRIGGER_RUN_TAG,
    build_retraining_sensor,
    build_schedules,
    monitoring_job,
    rolling_evaluation_job,
)
from crypto_platform.checks.drift import feature_drift, prediction_drift
from crypto_platform.checks.quality import QUALITY_CHECKS
from crypto_platform.platform_settings import PlatformSettings
from crypto_platform.resources.lake import LakeResource
from crypto_platform.settings import load_universe
from crypto_platform_tests.fixtures import (
    ASSETS,
    CHECKS,
    evaluation,
    resources,
    run_check,
    write_features,
    write_predictions,
    write_scores,
    write_silver,
)

SKILL = "gold/rolling_evaluation:model_skill"
DAYS = ["2022-01-10", "2022-01-11"]
COOLDOWN_6H = PlatformSettings(retrain_cooldown_hours=6)
NO_COOLDOWN = PlatformSettings(retrain_cooldown_hours=0)


def _monitor(tmp: Path, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    """model_skill on the newest scored out-of-sample day (check-only, as the monitoring job runs it)."""
    return dg.materialize(
        [*ASSETS, model_skill],
        selection=dg.AssetSelection.checks(model_skill),
        instance=instance,
        resources=resources(tmp),
    )


def _tick(sensor: dg.SensorDefinition, instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
    result = sensor(dg.build_sensor_context(instance=instance, cursor=cursor))
    assert isinstance(result, dg.SensorResult)
    return result


def _skip(result: dg.SensorResult) -> str:
    assert not result.run_requests
    assert result.skip_reason is not None
    return result.skip_reason.skip_message or ""


@pytest.fixture
def lake(tmp_path: Path) -> LakeResource:
    lake = LakeResource(root=str(tmp_path / "lake"))
    write_silver(lake, [*DAYS, "2022-01-12"])
    return lake


@pytest.mark.slow
def test_lost_skill_requests_exactly_one_training_run_within_the_cooldown(tmp_path: Path, lake) -> None:
    sensor = build_retraining_sensor(COOLDOWN_6H)
    assert sensor.job_name == "training_job"
    with dg.DagsterInstance.ephemeral() as instance:
        assert "no evaluations yet" in _skip(_tick(sensor, instance, None))

        write_scores(lake, DAYS, skill=0.5)  # a skilled model: nothing to do
        assert evaluation(_monitor(tmp_path, instance), "model_skill").passed
        assert f"{SKILL} passed" in _skip(_tick(sensor, instance, None))

        write_scores(lake, DAYS, skill=-0.5)  # the model now points the wrong way
        run = _monitor(tmp_path, instance)
        assert not evaluation(run, "model_skill").passed

        first = _tick(sensor, instance, None)
        assert len(first.run_requests) == 1
        request = first.run_requests[0]
        assert request.job_name in (None, "training_job")
        assert request.tags[TRIGGER_CHECKS_TAG] == SKILL and request.tags[TRIGGER_RUN_TAG] == run.run_id
        assert request.run_key and SKILL in request.run_key

        # the next tick: the same failure has been acted on
        second = _tick(sensor, instance, first.cursor)
        assert "predate the last training" in _skip(second)

        # a fresh failing evaluation inside the cooldown: still no second run
        _monitor(tmp_path, instance)
        third = _tick(sensor, instance, second.cursor)
        assert "cooldown" in _skip(third) and SKILL in third.skip_reason.skip_message

        # once the cooldown is over (here: a sensor without one), the new evidence triggers one run
        again = _tick(build_retraining_sensor(NO_COOLDOWN), instance, third.cursor)
        assert len(again.run_requests) == 1 and again.run_requests[0].run_key != request.run_key


@pytest.mark.slow
def test_training_run_in_flight_or_recent_blocks_a_request(tmp_path: Path, lake) -> None:
    sensor = build_retraining_sensor(COOLDOWN_6H)
    write_scores(lake, DAYS, skill=-0.5)
    with dg.DagsterInstance.ephemeral() as instance:
        _monitor(tmp_path, instance)
        running = instance.add_run(
            dg.DagsterRun(
                job_name="training_job", run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.STARTED
            )
        )
        assert f"{running.run_id} is already started" in _skip(_tick(sensor, instance, None))
        instance.report_run_canceled(running)
        # a training run created after the failure (here the running one) counts as the last training
        assert "predate the last training" in _skip(_tick(sensor, instance, None))


@pytest.mark.slow
def test_drift_error_triggers_but_warn_and_history_do_not(tmp_path: Path, lake, drift_store: str) -> None:
    store = drift_store  # champion with 3..9 January as its drift reference (conftest)
    write_features(lake, ["2022-01-11"])
    write_features(lake, ["2022-01-12"], distort={"zret_1": 3.0})
    sensor = build_retraining_sensor(COOLDOWN_6H)
    loose = {"ops": {feature_drift.node_def.name: {"config": {"psi_error": 50.0, "ks_error": 1.0}}}}
    with dg.DagsterInstance.ephemeral() as instance:
        warn = run_check(tmp_path, instance, feature_drift, store, run_config=loose)
        assert warn.severity == dg.AssetCheckSeverity.WARN and not warn.passed
        assert "failed with WARN" in _skip(_tick(sensor, instance, None))

        error = run_check(tmp_path, instance, feature_drift, store)
        assert error.severity == dg.AssetCheckSeverity.ERROR and not error.passed
        hist = run_check(tmp_path, instance, feature_drift, store, partition_key="2022-01-11|sim.BTC-USDT")
        assert hist.passed and hist.metadata["about_latest_data"].value is False  # newer, but about history

        result = _tick(sensor, instance, None)
        assert len(result.run_requests) == 1
        assert result.run_requests[0].tags[TRIGGER_CHECKS_TAG] == "gold/features:feature_drift"

        # a new drift ERROR within the cooldown: the next tick requests no second training run
        again = run_check(tmp_path, instance, feature_drift, store)
        assert again.severity == dg.AssetCheckSeverity.ERROR and not again.passed
        within = _tick(sensor, instance, result.cursor)
        assert "cooldown" in _skip(within) and "gold/features:feature_drift" in _skip(within)
        # the same evidence once the cooldown is over (a sensor without one): one new request
        after = _tick(build_retraining_sensor(NO_COOLDOWN), instance, within.cursor)
        assert len(after.run_requests) == 1
        assert after.run_requests[0].run_key != result.run_requests[0].run_key


def test_schedules_jobs_and_default_status(tmp_path: Path) -> None:
    defaults = PlatformSettings.from_env({})
    daily_retraining_schedule, hourly_monitoring_schedule, rolling = build_schedules(defaults)
    assert daily_retraining_schedule.job_name == "training_job"
    assert daily_retraining_schedule.cron_schedule == "30 2 * * *"
    assert hourly_monitoring_schedule.job_name == "monitoring_job"
    assert hourly_monitoring_schedule.execution_timezone == "UTC"
    for schedule in build_schedules(defaults):
        assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert build_retraining_sensor(defaults).default_status == dg.DefaultSensorStatus.STOPPED
    running = PlatformSettings.from_env({"CRYPTO_AUTOMATION": "running"})
    assert {s.default_status for s in build_schedules(running)} == {dg.DefaultScheduleStatus.RUNNING}
    assert build_retraining_sensor(running).default_status == dg.DefaultSensorStatus.RUNNING
    slower = PlatformSettings.from_env({"CRYPTO_RETRAIN_COOLDOWN_HOURS": "1.5"})
    assert "at most once per 1.5 h" in (build_retraining_sensor(slower).description or "")

    defs = dg.Definitions(
        assets=ASSETS,
        asset_checks=CHECKS,
        jobs=[*JOBS, monitoring_job, rolling_evaluation_job],
        resources=resources(tmp_path),
        schedules=build_schedules(defaults),
        sensors=[build_retraining_sensor(defaults)],
    )
    assert set(QUALITY_CHECKS) <= set(CHECKS)
    job = defs.resolve_job_def("monitoring_job")
    ops = set(job.graph.node_dict)
    assert {
        "gold_prediction_errors",
        model_skill.node_def.name,
        feature_drift.node_def.name,
        prediction_drift.node_def.name,
    } == ops
    with dg.build_schedule_context(scheduled_execution_time=None) as ctx:
        tick = daily_retraining_schedule.evaluate_tick(ctx)
    # every tick asks for exactly one training run (no skip, no run key that would dedupe tomorrow's)
    assert tick.skip_message is None
    assert [(r.run_key, r.run_config) for r in tick.run_requests or []] == [(None, {})]
    # yesterday's out-of-sample score, one run per live instrument of the (test) universe
    assert (rolling.cron_schedule, rolling.job_name) == ("15 1 * * *", "rolling_evaluation_job")
    at = datetime(2024, 3, 2, 1, 15, tzinfo=UTC)
    with dg.build_schedule_context(
        scheduled_execution_time=at, repository_def=defs.get_repository_def()
    ) as ctx:
        requests = rolling.evaluate_tick(ctx).run_requests or []
    live = [i.key for i in load_universe().instruments if i.is_live]
    assert [r.partition_key for r in requests] == [f"2024-03-01|{k}" for k in live] and len(live) >= 2
    job = defs.resolve_job_def("rolling_evaluation_job")
    assert {"gold__labels", "gold__rolling_evaluation"} <= set(job.graph.node_dict)


@pytest.mark.slow
def test_hourly_monitoring_job_runs_end_to_end_before_any_champion(tmp_path: Path, lake) -> None:
    write_predictions(lake, DAYS, skill=0.5)
    write_features(lake, DAYS)
    defs = dg.Definitions(
        assets=ASSETS,
        asset_checks=CHECKS,
        jobs=[monitoring_job],
        resources=resources(tmp_path),
    )
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("monitoring_job").execute_in_process(instance=instance)
        assert result.success
        evs = {e.check_name: e for e in result.get_asset_check_evaluations()}
        assert set(evs) == {"model_skill", "feature_drift", "prediction_drift"}
        assert evs["model_skill"].passed
        assert evs["feature_drift"].passed and "no 'champion'" in evs["feature_drift"].description
