"""The live sensor, evaluated with Dagster's sensor harness on a real (ephemeral) instance.

The runs it requests are executed for real (the code location's assets and resources on a temp
lake, a real MLflow champion in a temp store), so each tick sees what the previous runs did. Time is
a controllable clock shared by the sensor and the synthetic exchange: the simulated "today" is a
fixed past day, so the test does not depend on the wall clock (nor on running near midnight).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import polars as pl
import pytest

from crypto_platform import tables
from crypto_platform.automation.live import (
    LIVE_TAG,
    TRIGGER_TAG,
    UNQUALIFIED_TAG,
    LiveCursor,
    LiveSettings,
    build_live_sensor,
    is_abandoned,
    partition_need,
)
from crypto_platform.checks.freshness import CHECK_NAME, evaluations
from crypto_platform.definitions import defs
from crypto_platform.fetch_plan import is_settled
from crypto_platform.ml import registry
from crypto_platform.ml.evaluation import skill_gate
from crypto_platform.ml.training import train
from crypto_platform.partitions import DayPartition, multi_key
from crypto_platform.platform_settings import PlatformSettings
from crypto_platform.raw_manifest import RawManifest
from crypto_platform.resources.lake import LakeResource
from crypto_platform.resources.mlflow import MlflowResource
from crypto_platform.resources.sources import TradeSourcesResource
from crypto_platform.resources.warehouse import WarehouseResource
from crypto_platform.settings import SettingsError, load_universe
from crypto_platform.sources.factory import build_source
from crypto_platform.transforms.features import FEATURE_COLUMNS
from crypto_platform_tests.fixtures import HORIZON, planted_frame

DAY = date(2024, 3, 4)  # the simulated "today"
BTC, ETH = "sim.BTC-USDT", "sim.ETH-USDT"  # the live instruments of the test universe (the others replay)
MODEL_NAME = "live_test_model"


class Clock:
    """Wall clock of the simulated world: the sensor's `now` and the synthetic exchange's."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def set(self, day: date, hh: int, mm: int, ss: int) -> None:
        self.now = datetime(day.year, day.month, day.day, hh, mm, ss, tzinfo=UTC)


CLOCK = Clock(datetime(2024, 3, 4, 12, 0, 20, tzinfo=UTC))


def key(inst: str, day: date = DAY) -> str:
    return multi_key(day, inst)


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real MLflow champion (tiny LightGBM on planted data with the live feature columns)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    frame = planted_frame(1500)
    result = train(
        frame,
        FEATURE_COLUMNS,
        horizon=HORIZON,
        n_trials=1,
        n_folds=2,
        holdout_fraction=0.25,
        seed=3,
        max_rounds=20,
    )
    decision = skill_gate(result.evaluation.model, result.evaluation.momentum, None)
    assert decision.promote, decision.reasons
    registry.log_and_register(
        result,
        tracking_uri=uri,
        model_name=MODEL_NAME,
        feature_cols=FEATURE_COLUMNS,
        reference_features=frame.head(50),
        input_example=frame.head(5),
        decision=decision,
    )
    return uri


class World:
    """A temp lake + ephemeral instance; ticks the sensor and executes what it requests."""

    def __init__(self, tmp: Path, instance: dg.DagsterInstance, mlflow_uri: str) -> None:
        self.instance = instance
        self.lake = LakeResource(root=str(tmp / "lake"))
        self.fixed = {
            "lake": self.lake,
            "warehouse": WarehouseResource(path=str(tmp / "warehouse.duckdb")),
            "mlflow_registry": MlflowResource(tracking_uri=mlflow_uri, model_name=MODEL_NAME),
        }
        self.assets = list(defs.assets or [])
        self.sensor = build_live_sensor(PlatformSettings(), clock=CLOCK)
        self.cursor: str | None = None

    @property
    def resources(self) -> dict:
        """The run's resources; raw/trades and the synthetic exchange take 'now' from the test clock."""
        return {**self.fixed, "trade_sources": TradeSourcesResource(now=CLOCK.now.isoformat())}

    def tick(self, cursor: str | None = "keep") -> dg.SensorResult:
        ctx = dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursor if cursor == "keep" else cursor,
            definitions=defs,
            resources={"lake": self.lake},
        )
        result = self.sensor(ctx)
        assert isinstance(result, dg.SensorResult)
        self.cursor = result.cursor
        return result

    def run(self, request: dg.RunRequest) -> None:
        selection = dg.AssetSelection.assets(*request.asset_selection).without_checks()
        if request.asset_check_keys:
            selection = selection | dg.AssetSelection.checks(*request.asset_check_keys)
        result = dg.materialize(
            [*self.assets, *(defs.asset_checks or [])],
            selection=selection,
            partition_key=request.partition_key,
            run_config=request.run_config,
            tags=request.tags,
            resources=self.resources,
            instance=self.instance,
        )
        assert result.success

    def fetch_raw_only(self, partition: str) -> None:
        """Someone materializes raw/trades by hand (e.g. from the UI): downstream becomes stale."""
        dg.materialize(
            self.assets,
            selection=[tables.RAW_TRADES.key],
            partition_key=partition,
            resources=self.resources,
            instance=self.instance,
        )

    def bronze(self, partition: str) -> pl.DataFrame:
        from crypto_platform.partitions import parse_key

        return self.lake.read_partition(tables.BRONZE_TRADES, parse_key(partition))


def requested(result: dg.SensorResult) -> dict[str, str]:
    return {r.partition_key: r.tags[TRIGGER_TAG] for r in result.run_requests or []}


@pytest.fixture
def world(tmp_path: Path, mlflow_uri: str):
    with dg.DagsterInstance.ephemeral() as instance:
        yield World(tmp_path, instance, mlflow_uri)


@pytest.mark.slow
def test_sensor_requests_new_and_changed_partitions_and_nothing_else(world: World) -> None:
    CLOCK.set(DAY, 12, 0, 20)
    first = world.tick()
    assert requested(first) == {key(BTC): "new", key(ETH): "new"}  # replay instruments are never live
    req = first.run_requests[0]
    assert set(req.asset_selection) == {
        dg.AssetKey(k)
        for k in (
            ["raw", "trades"],
            ["bronze", "trades"],
            ["bronze", "trade_rejects"],
            ["silver", "candles_1m"],
            ["silver", "candles_5m"],
            ["silver", "candles_1h"],
            ["gold", "features"],
            ["gold", "predictions"],
        )
    }
    assert req.run_key == f"live:{key(BTC)}@2024-03-04T12:00" and req.tags[LIVE_TAG] == "true"
    # the blocking data-quality gates run with the assets; drift checks do not (monitoring job)
    assert {(c.asset_key.to_user_string(), c.name) for c in req.asset_check_keys} == {
        ("bronze/trades", "bronze_trades_suite"),
        ("silver/candles_1m", "candles_1m_suite"),
    }
    assert "gold__predictions" not in req.run_config["ops"]  # champion only, unless explicitly allowed
    for r in first.run_requests:
        world.run(r)

    gate = dg.AssetCheckKey(dg.AssetKey(["silver", "candles_1m"]), "candles_1m_suite")
    executions = world.instance.event_log_storage.get_asset_check_execution_history(gate, limit=5)
    assert len(executions) == 2 and all(e.evaluation.passed for e in executions)

    # Nothing changed: same minute, with the cursor and without it (the state says up to date).
    assert not world.tick().run_requests
    assert not world.tick(cursor=None).run_requests

    # A minute later: BTC has a new minute to fetch; ETH's raw was fetched by hand in the meantime,
    # so it is not behind on time but its downstream layers are stale ("changed").
    CLOCK.set(DAY, 12, 1, 2)
    world.fetch_raw_only(key(ETH))
    CLOCK.set(DAY, 12, 1, 5)
    second = world.tick()
    assert requested(second) == {key(BTC): "new", key(ETH): "changed"}
    for r in second.run_requests:
        world.run(r)
    assert not world.tick().run_requests
    inst = load_universe().instrument(BTC)
    part = DayPartition(inst, DAY)
    preds = world.lake.read_partition(tables.PREDICTIONS, part)
    assert preds["ts"].max() == datetime(2024, 3, 4, 12, 0, tzinfo=UTC)  # 12:01 is still open at 12:01:05
    # ... and the published 12:00 bar is complete: exactly the exchange's trades of that minute
    candles = world.lake.read_partition(tables.CANDLES_1M, part)
    bar = candles.filter(pl.col("ts") == datetime(2024, 3, 4, 12, 0, tzinfo=UTC))
    minute = datetime(2024, 3, 4, 12, 0, tzinfo=UTC)
    tape = build_source(inst, now=lambda: part.end).fetch(inst, minute, minute + timedelta(minutes=1)).trades
    assert bar["trade_count"].to_list() == [tape.height] and tape.height > 0
    assert candles["ts"].max() == minute


@pytest.mark.slow
def test_no_duplicate_request_while_a_run_for_the_partition_is_in_progress(world: World) -> None:
    CLOCK.set(DAY, 9, 30, 10)
    for r in world.tick().run_requests:
        world.run(r)
    CLOCK.set(DAY, 9, 31, 10)
    busy = world.instance.add_run(
        dg.DagsterRun(
            job_name="__ASSET_JOB", status=dg.DagsterRunStatus.STARTED, tags={"dagster/partition": key(BTC)}
        )
    )
    created = world.instance.add_run(  # created by a sensor/UI, not yet submitted to the queue
        dg.DagsterRun(
            job_name="__ASSET_JOB",
            status=dg.DagsterRunStatus.NOT_STARTED,
            tags={"dagster/partition": key(ETH)},
        )
    )
    assert not world.tick().run_requests  # both partitions are behind, both have a run under way
    world.instance.report_run_failed(busy)
    assert requested(world.tick()) == {key(BTC): "new"}  # the cursor did not mark BTC: requested now
    assert not world.tick().run_requests  # ... and only once per minute
    world.instance.report_run_canceled(created)
    # a single-run backfill over a range holding ETH's partition blocks it too
    backfill = world.instance.add_run(
        dg.DagsterRun(
            job_name="__ASSET_JOB",
            status=dg.DagsterRunStatus.STARTED,
            tags={
                "dagster/asset_partition_range_start": key(BTC, DAY - timedelta(days=3)),
                "dagster/asset_partition_range_end": key(ETH),
            },
        )
    )
    assert not world.tick().run_requests
    world.instance.report_run_failed(backfill)
    assert requested(world.tick()) == {key(ETH): "new"}


@pytest.mark.slow
def test_restart_resumes_from_the_cursor_without_flooding(world: World) -> None:
    CLOCK.set(DAY, 12, 0, 20)
    for r in world.tick().run_requests:
        world.run(r)
    saved = world.cursor
    assert LiveCursor.parse(saved).evaluated_at == CLOCK.now

    # Restarted daemon, same minute: it resumes from the stored cursor; no repeat.
    assert not world.tick(cursor=saved).run_requests

    # The daemon was down for three hours: one run per partition catches up, not 180.
    CLOCK.set(DAY, 15, 0, 30)
    catch_up = world.tick(cursor=saved)
    assert requested(catch_up) == {key(BTC): "new", key(ETH): "new"}
    for r in catch_up.run_requests:
        world.run(r)
    manifest = world.lake.read_manifest(tables.RAW_TRADES, DayPartition(load_universe().instrument(BTC), DAY))
    # whole minutes: 00:00-12:00, then (overlap) 11:58-15:00 in one fetch
    assert [(f"{b.covered_from:%H:%M}", f"{b.covered_to:%H:%M}") for b in manifest.batches] == [
        ("00:00", "12:00"),
        ("11:58", "15:00"),
    ]

    # Down over midnight: yesterday's tail is finished first; the new day has no whole minute yet.
    nxt = DAY + timedelta(days=1)
    CLOCK.set(nxt, 0, 0, 40)
    tail = world.tick()
    assert requested(tail) == {key(BTC): "day tail", key(ETH): "day tail"}
    for r in tail.run_requests:
        world.run(r)
    CLOCK.set(nxt, 0, 1, 10)
    new_day = world.tick()
    assert requested(new_day) == {key(BTC, nxt): "new", key(ETH, nxt): "new"}  # yesterday is complete
    for r in new_day.run_requests:
        world.run(r)

    # No loss, no duplicate across the overlapping fetches: bronze equals the exchange's tape.
    inst = load_universe().instrument(BTC)
    part = DayPartition(inst, DAY)
    tape = (
        build_source(inst, now=lambda: part.end + timedelta(hours=1)).fetch(inst, part.start, part.end).trades
    )
    bronze = world.bronze(key(BTC))
    assert bronze.height == tape.height > 40_000
    assert bronze["trade_id"].n_unique() == bronze.height
    assert set(bronze["trade_id"]) == set(tape["trade_id"])

    # Down for days: only today (and unfinished yesterday, if it was live) — never older days.
    later = DAY + timedelta(days=5)
    CLOCK.set(later, 10, 0, 5)
    assert requested(world.tick()) == {key(BTC, later): "new", key(ETH, later): "new"}


@pytest.mark.slow
def test_freshness_evaluations_measure_the_data_lag(world: World) -> None:
    CLOCK.set(DAY, 12, 0, 20)
    for r in world.tick().run_requests:
        world.run(r)
    max_lag = PlatformSettings().freshness_max_lag_seconds  # 180 s
    evals = {
        e.asset_key.to_user_string(): e
        for e in evaluations(world.lake, CLOCK.now + timedelta(seconds=40), max_lag)
    }
    assert set(evals) == {"silver/candles_1m", "gold/predictions"}
    e = evals["gold/predictions"]
    assert e.check_name == CHECK_NAME and e.passed
    # the run at 12:00:20 published whole minutes only: the newest bar is 11:59, ending at 12:00
    part = DayPartition(load_universe().instrument(BTC), DAY)
    newest = world.lake.partition_max(tables.CANDLES_1M, part, "ts")
    assert newest == datetime(2024, 3, 4, 11, 59, tzinfo=UTC)
    yesterday = DayPartition(part.instrument, DAY - timedelta(days=1))
    assert world.lake.partition_max(tables.CANDLES_1M, yesterday, "ts") is None  # never written
    assert e.metadata["lag_by_instrument"].value == {BTC: 60.0, ETH: 60.0}
    late = evaluations(world.lake, CLOCK.now + timedelta(minutes=10), max_lag)
    assert not any(e.passed for e in late)


def _live(env: dict[str, str]) -> LiveSettings:
    return LiveSettings.from_settings(PlatformSettings.from_env(env))


def test_settings_are_explicit() -> None:
    assert _live({}) == LiveSettings()
    plain = _live({})
    assert "gold__predictions" not in plain.run_config()["ops"]
    allowed = _live({"CRYPTO_ALLOW_UNQUALIFIED_MODEL": "true"})
    assert allowed.run_config()["ops"]["gold__predictions"] == {"config": {"allow_unqualified_model": True}}
    from crypto_platform.automation.live import run_request

    assert run_request("k", "t", "new", allowed).tags[UNQUALIFIED_TAG] == "allowed"
    assert UNQUALIFIED_TAG not in run_request("k", "t", "new", plain).tags
    with pytest.raises(SettingsError, match="CRYPTO_ALLOW_UNQUALIFIED_MODEL"):
        _live({"CRYPTO_ALLOW_UNQUALIFIED_MODEL": "maybe"})
    features_only = _live({"CRYPTO_LIVE_PREDICTIONS": "false", "CRYPTO_LIVE_OVERLAP_SECONDS": "30"})
    assert dg.AssetKey(["gold", "predictions"]) not in features_only.selection()
    assert features_only.run_config() == {"ops": {"raw__trades": {"config": {"overlap_seconds": 30}}}}


def test_yesterday_settles_overlap_after_midnight() -> None:
    inst = load_universe().instrument(BTC)
    part = DayPartition(inst, DAY)
    settings = LiveSettings(overlap_seconds=120)

    def manifest(covered_to: datetime, written_at: datetime) -> RawManifest:
        return RawManifest.from_json(
            {
                "batches": [
                    {
                        "name": "b",
                        "covered_from": part.start.isoformat(),
                        "covered_to": covered_to.isoformat(),
                        "written_at": written_at.isoformat(),
                    }
                ]
            }
        )

    today = DAY + timedelta(days=1)
    at = part.end + timedelta(seconds=30)
    unfinished = manifest(part.end - timedelta(seconds=20), at)
    assert partition_need(part, unfinished, at, settings, today=today)[0] == "day tail"
    complete = manifest(part.end, at)
    assert not is_settled(complete, part, settings.overlap)
    assert partition_need(part, complete, at, settings, today=today)[0] is None  # waits for the overlap
    later = part.end + timedelta(minutes=3)
    assert partition_need(part, complete, later, settings, today=today)[0] == "settle"
    settled = manifest(part.end, later)
    assert is_settled(settled, part, settings.overlap)
    assert partition_need(part, settled, later, settings, today=today)[0] is None
    assert (
        partition_need(part, RawManifest(), later, settings, today=today)[0] is None
    )  # never live: not ours


def test_abandoned_runs_do_not_block_forever() -> None:
    now = datetime(2024, 3, 4, 12, tzinfo=UTC)

    class Rec:
        def __init__(self, status, started):
            self.dagster_run = SimpleNamespace(status=status)
            self.start_time = started
            self.create_timestamp = now

    old = (now - timedelta(hours=2)).timestamp()
    assert is_abandoned(Rec(dg.DagsterRunStatus.STARTED, old), now, timedelta(minutes=30))
    assert not is_abandoned(
        Rec(dg.DagsterRunStatus.STARTED, now.timestamp() - 60), now, timedelta(minutes=30)
    )
    assert not is_abandoned(Rec(dg.DagsterRunStatus.QUEUED, old), now, timedelta(minutes=30))
