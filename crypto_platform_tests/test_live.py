"""The live sensor, evaluated with Dagster's sensor harness on a real (ephemeral) instance.

The runs it requests are executed for real (the code location's assets and resources on a temp
lake, a real MLflow champion in a temp store), so each tick sees what the previous runs did. Time is
a controllable clock shared by the sensor and the synthetic exchange: the simulated "today" is a
fixed past day, so the test does not depend on the wall clock (nor on running near midnight).
"""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import polars as pl
import pytest

from crypto_platform import tables
from crypto_platform.automation.live import (
    EXCHANGE_TAG,
    LIVE_TAG,
    RANGE_END_TAG,
    RANGE_START_TAG,
    TRIGGER_TAG,
    UNQUALIFIED_TAG,
    LiveCursor,
    LiveSettings,
    build_live_sensor,
    group_runs,
    is_abandoned,
    partition_need,
    shard_runs,
)
from crypto_platform.checks.freshness import CHECK_NAME, evaluations
from crypto_platform.definitions import defs
from crypto_platform.fetch_plan import is_settled
from crypto_platform.ml import registry
from crypto_platform.ml.evaluation import skill_gate
from crypto_platform.ml.training import train
from crypto_platform.partitions import DayPartition, multi_key, trade_partitions
from crypto_platform.platform_settings import PlatformSettings
from crypto_platform.raw_manifest import RawManifest
from crypto_platform.resources.lake import LakeResource
from crypto_platform.resources.mlflow import MlflowResource
from crypto_platform.resources.sources import TradeSourcesResource
from crypto_platform.resources.warehouse import WarehouseResource
from crypto_platform.settings import Instrument, SettingsError, load_universe
from crypto_platform.sources.factory import build_source
from crypto_platform.transforms.features import FEATURE_COLUMNS
from crypto_platform_tests.fixtures import HORIZON, mlflow_store, planted_frame

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
    uri = mlflow_store(tmp_path_factory.mktemp("mlflow"))
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

    def run(self, request: dg.RunRequest, expect_success: bool = True) -> bool:
        selection = dg.AssetSelection.assets(*request.asset_selection).without_checks()
        if request.asset_check_keys:
            selection = selection | dg.AssetSelection.checks(*request.asset_check_keys)
        result = dg.materialize(
            [*self.assets, *(defs.asset_checks or [])],
            selection=selection,
            partition_key=request.partition_key,  # None for a range: its tags say which
            run_config=request.run_config,
            tags=request.tags,
            resources=self.resources,
            instance=self.instance,
            raise_on_error=False,
        )
        assert result.success or not expect_success, request.tags
        return result.success

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


def covered(request: dg.RunRequest) -> list[str]:
    """The partition keys a run request covers: its key, or every key of its range."""
    if request.partition_key:
        return [request.partition_key]
    rng = dg.PartitionKeyRange(request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG])
    return list(trade_partitions.get_partition_keys_in_range(rng))


def requested(result: dg.SensorResult) -> dict[str, str]:
    """partition -> trigger of the run covering it (several partitions of a run share its trigger)."""
    return {k: r.tags[TRIGGER_TAG] for r in result.run_requests or [] for k in covered(r)}


@pytest.fixture
def world(tmp_path: Path, mlflow_uri: str):
    with dg.DagsterInstance.ephemeral() as instance:
        yield World(tmp_path, instance, mlflow_uri)


@pytest.fixture(scope="module")
def noon(tmp_path_factory: pytest.TempPathFactory, mlflow_uri: str) -> tuple[Path, str | None, list]:
    """The first tick at 12:00:20 and the runs it requested, executed once for the module: the folder
    (lake), the sensor's cursor, and the instance's runs (snapshots, event logs), from which `noon_world`
    rebuilds that state for each test that starts from there (test_sensor_requests... asserts that
    tick and its run itself)."""
    root = tmp_path_factory.mktemp("noon")
    with dg.DagsterInstance.ephemeral() as instance:
        world = World(root, instance, mlflow_uri)
        CLOCK.set(DAY, 12, 0, 20)
        for r in world.tick().run_requests:
            world.run(r)
        store = instance.run_storage
        runs = [  # oldest first, each with its job and execution plan snapshots and its event log
            (
                run,
                store.get_job_snapshot(run.job_snapshot_id),
                store.get_execution_plan_snapshot(run.execution_plan_snapshot_id),
                instance.all_logs(run.run_id),
            )
            for run in reversed(instance.get_runs())
        ]
    return root, world.cursor, runs


@pytest.fixture
def noon_world(tmp_path: Path, noon: tuple[Path, str | None, list], mlflow_uri: str):
    """A world as the first tick at 12:00:20 and its runs left it, the clock at 12:00:20: a copy of
    `noon`'s lake (a fresh warehouse), its cursor, and a fresh ephemeral instance that received those
    runs and every event they logged through Dagster's own `handle_new_event` (run storage, asset and
    check records updated as when the runs executed)."""
    root, cursor, runs = noon
    shutil.copytree(root, tmp_path, dirs_exist_ok=True, ignore=shutil.ignore_patterns("warehouse.duckdb*"))
    CLOCK.set(DAY, 12, 0, 20)
    with dg.DagsterInstance.ephemeral() as instance:
        for run, job_snap, plan_snap, events in runs:
            instance.run_storage.add_job_snapshot(job_snap)  # content-addressed: the run's own ids
            instance.run_storage.add_execution_plan_snapshot(plan_snap)
            instance.add_run(run.with_status(dg.DagsterRunStatus.NOT_STARTED))
            for entry in events:
                instance.handle_new_event(entry)
        assert [r.status for r in instance.get_runs()] == [run.status for run, *_ in reversed(runs)]
        world = World(tmp_path, instance, mlflow_uri)
        world.cursor = cursor
        yield world


@pytest.mark.slow
def test_sensor_requests_new_and_changed_partitions_and_nothing_else(world: World) -> None:
    CLOCK.set(DAY, 12, 0, 20)
    first = world.tick()
    assert requested(first) == {key(BTC): "new", key(ETH): "new"}  # replay instruments are never live
    [req] = first.run_requests  # one run for the exchange's due partitions, a range over both
    assert req.partition_key is None and covered(req) == [key(BTC), key(ETH)]
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
    assert req.run_key == f"live:{key(BTC)}..{key(ETH)}@2024-03-04T12:00" and req.tags[LIVE_TAG] == "true"
    assert req.tags[EXCHANGE_TAG] == "sim"
    # the blocking data-quality gates run with the assets; drift checks do not (monitoring job)
    assert {(c.asset_key.to_user_string(), c.name) for c in req.asset_check_keys} == {
        ("bronze/trades", "bronze_trades_suite"),
        ("silver/candles_1m", "candles_1m_suite"),
    }
    assert "gold__predictions" not in req.run_config["ops"]  # champion only, unless explicitly allowed
    # the request as the sensor daemon resolves it against the code location: still the one range
    daemon_ctx = dg.build_sensor_context(
        instance=world.instance, definitions=defs, resources={"lake": world.lake}
    )
    [resolved] = world.sensor.evaluate_tick(daemon_ctx).run_requests
    assert resolved.partition_key is None and covered(resolved) == covered(req)
    assert resolved.tags[EXCHANGE_TAG] == "sim" and resolved.run_key == req.run_key
    for r in first.run_requests:
        world.run(r)

    gate = dg.AssetCheckKey(dg.AssetKey(["silver", "candles_1m"]), "candles_1m_suite")
    executions = world.instance.event_log_storage.get_asset_check_execution_history(gate, limit=5)
    # one run, so one execution of the gate, over both partitions of the run
    [execution] = executions
    assert execution.evaluation.passed and execution.evaluation.metadata["partitions"].value == 2

    # Nothing changed: same minute, with the cursor and without it (the state says up to date).
    assert not world.tick().run_requests
    assert not world.tick(cursor=None).run_requests

    # A minute later: BTC has a new minute to fetch; ETH's raw was fetched by hand in the meantime,
    # so it is not behind on time but its downstream layers are stale ("changed").
    CLOCK.set(DAY, 12, 1, 2)
    world.fetch_raw_only(key(ETH))
    CLOCK.set(DAY, 12, 1, 5)
    second = world.tick()
    # one run again; its trigger names both reasons (the tick log has them per partition)
    assert requested(second) == {key(BTC): "changed,new", key(ETH): "changed,new"}
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
def test_restart_resumes_from_the_cursor_without_flooding(noon_world: World) -> None:
    world = noon_world  # the first tick at 12:00:20 and its runs, done
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
def test_freshness_evaluations_measure_the_data_lag(noon_world: World) -> None:
    world = noon_world  # the first tick at 12:00:20 and its runs, done
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

    one = [DayPartition(load_universe().instrument(BTC), DAY)]
    assert run_request(one, "t", ["new"], allowed).tags[UNQUALIFIED_TAG] == "allowed"
    assert UNQUALIFIED_TAG not in run_request(one, "t", ["new"], plain).tags
    with pytest.raises(SettingsError, match="CRYPTO_ALLOW_UNQUALIFIED_MODEL"):
        _live({"CRYPTO_ALLOW_UNQUALIFIED_MODEL": "maybe"})
    features_only = _live({"CRYPTO_LIVE_PREDICTIONS": "false", "CRYPTO_LIVE_OVERLAP_SECONDS": "30"})
    assert dg.AssetKey(["gold", "predictions"]) not in features_only.selection()
    gates = ("bronze__trades_bronze_trades_suite", "silver__candles_1m_candles_1m_suite")
    assert features_only.run_config() == {
        "ops": {
            "raw__trades": {"config": {"overlap_seconds": 30}},
            **{op: {"config": {"engine": "contract"}} for op in gates},  # the quality gates, in polars
        }
    }
    gx = _live({"CRYPTO_LIVE_QUALITY_ENGINE": "great_expectations"}).run_config()["ops"]
    assert {op: gx[op] for op in gates} == {op: {"config": {"engine": "great_expectations"}} for op in gates}
    assert not set(gates) & set(_live({"CRYPTO_LIVE_CHECKS": "none"}).run_config()["ops"])


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


def _runs_of(
    due: list[tuple[DayPartition, str]], order: list[str], split: frozenset[str] = frozenset()
) -> list[list[str]]:
    """group_runs as partition keys (sorted), each run checked against Dagster's own range expansion: a run
    over a rectangle of `order` covers exactly its partitions."""
    grid = dg.MultiPartitionsDefinition(
        {
            "date": dg.DailyPartitionsDefinition(start_date="2024-01-01", end_offset=1),
            "instrument": dg.StaticPartitionsDefinition(order),
        }
    )
    runs = []
    for rect, reasons in group_runs(due, set(split), order):
        assert len(reasons) == len(rect) and len({p.instrument.exchange for p in rect}) == 1
        rng = dg.PartitionKeyRange(rect[0].key, rect[-1].key)
        assert sorted(str(k) for k in grid.get_partition_keys_in_range(rng)) == sorted(p.key for p in rect)
        runs.append([p.key for p in rect])
    covered = [k for run in runs for k in run]
    assert sorted(covered) == sorted(p.key for p, _ in due)  # every due partition once, nothing else
    return sorted(runs)


def test_runs_are_one_rectangle_per_exchange_or_the_fewest_that_cover_exactly_the_due() -> None:
    a_btc, a_eth, a_xrp = (Instrument("a", s) for s in ("BTC/USDT", "ETH/USDT", "XRP/USDT"))
    b_btc, b_eth = Instrument("b", "BTC/USDT"), Instrument("b", "ETH/USDT")
    d0, d1 = DAY - timedelta(days=1), DAY

    def due(*cells: tuple[Instrument, date]) -> list[tuple[DayPartition, str]]:
        return [(DayPartition(i, d), "new") for i, d in cells]

    grouped = [i.key for i in (a_btc, a_eth, a_xrp, b_btc, b_eth)]  # each exchange's instruments together
    both = due((a_btc, d1), (b_eth, d1), (a_xrp, d1), (b_btc, d1), (a_eth, d1))
    assert _runs_of(both, grouped) == [
        [key(a_btc.key), key(a_eth.key), key(a_xrp.key)],
        [key(b_btc.key), key(b_eth.key)],
    ]
    # not every instrument of the exchange due: the due ones only (a gap splits the range)
    assert _runs_of(due((a_btc, d1), (a_xrp, d1)), grouped) == [[key(a_btc.key)], [key(a_xrp.key)]]
    # the same instruments due on consecutive days: one rectangle over both days
    two_days = due((a_btc, d0), (a_eth, d0), (a_btc, d1), (a_eth, d1))
    assert _runs_of(two_days, grouped) == [
        [key(a_btc.key, d0), key(a_eth.key, d0), key(a_btc.key), key(a_eth.key)]
    ]
    # yesterday's tail of one instrument and today's new minute of two: not a rectangle, one run per day
    tail = due((a_btc, d0), (a_btc, d1), (a_eth, d1))
    assert _runs_of(tail, grouped) == [[key(a_btc.key, d0)], [key(a_btc.key), key(a_eth.key)]]
    # exchanges interleaved in the instruments file: a range can only span adjacent instruments
    mixed = [i.key for i in (a_btc, b_btc, a_eth, a_xrp, b_eth)]
    assert _runs_of(both, mixed) == [
        [key(a_btc.key)],
        [key(a_eth.key), key(a_xrp.key)],
        [key(b_btc.key)],
        [key(b_eth.key)],
    ]
    # after a failed run, a split partition runs alone and the others of its exchange stay together
    split = frozenset({key(a_eth.key)})
    assert _runs_of(both, grouped, split) == [
        [key(a_btc.key)],
        [key(a_eth.key)],
        [key(a_xrp.key)],
        [key(b_btc.key), key(b_eth.key)],
    ]


@pytest.mark.slow
def test_a_failing_instrument_does_not_block_the_others(noon_world: World) -> None:
    world = noon_world  # the first tick at 12:00:20 and its runs, done
    eth = DayPartition(load_universe().instrument(ETH), DAY)
    btc = DayPartition(load_universe().instrument(BTC), DAY)
    [batch] = world.lake.read_manifest(tables.RAW_TRADES, eth).batches
    path = world.lake.partition_path(tables.RAW_TRADES, eth) / f"{batch.name}.parquet"
    good = path.read_bytes()
    path.write_bytes(b"not parquet")  # ETH's committed data is now unreadable

    # Minute 12:01: one run for both, which fails as a whole (ETH's step fails; BTC's downstream skipped)
    CLOCK.set(DAY, 12, 1, 5)
    [together] = world.tick().run_requests
    assert covered(together) == [key(BTC), key(ETH)]
    assert not world.run(together, expect_success=False)
    # The next tick, same minute: each partition of the failed run in a run of its own, at once
    CLOCK.set(DAY, 12, 1, 20)
    alone = world.tick().run_requests
    assert sorted(covered(r)[0] for r in alone) == [key(BTC), key(ETH)] and all(
        r.partition_key for r in alone
    )
    # BTC's raw was fetched before ETH's step failed: current, but its downstream is not ("retry")
    assert requested(SimpleNamespace(run_requests=alone)) == {key(BTC): "retry", key(ETH): "new"}
    outcome = {r.partition_key: world.run(r, expect_success=False) for r in alone}
    assert outcome == {key(BTC): True, key(ETH): False}  # the bad instrument fails only its partition
    assert world.lake.partition_max(tables.PREDICTIONS, btc, "ts") == datetime(2024, 3, 4, 12, 0, tzinfo=UTC)
    assert not world.tick().run_requests  # both requested this minute: nothing more until 12:02

    # 12:02: BTC's last run succeeded, ETH's failed: ETH stays alone (retried once a minute)
    CLOCK.set(DAY, 12, 2, 5)
    runs = world.tick().run_requests
    assert sorted(r.partition_key for r in runs) == [key(BTC), key(ETH)]
    path.write_bytes(good)  # repaired
    assert all(world.run(r) for r in runs)
    assert world.lake.partition_max(tables.PREDICTIONS, eth, "ts") == datetime(2024, 3, 4, 12, 1, tzinfo=UTC)
    # ... and once ETH's own run succeeded, the exchange is one run again
    CLOCK.set(DAY, 12, 3, 5)
    [again] = world.tick().run_requests
    assert covered(again) == [key(BTC), key(ETH)]


@pytest.mark.slow
def test_live_runs_gate_with_the_contract_and_the_gx_suites_run_on_the_cadence(world: World) -> None:
    from crypto_platform.automation.quality_cadence import build_quality_schedule, quality_suites_job

    CLOCK.set(DAY, 12, 0, 20)
    [live] = world.tick().run_requests
    engines = {op: cfg["config"]["engine"] for op, cfg in live.run_config["ops"].items() if "suite" in op}
    assert engines == {
        "bronze__trades_bronze_trades_suite": "contract",
        "silver__candles_1m_candles_1m_suite": "contract",
    }
    assert world.run(live)
    bronze_gate = dg.AssetCheckKey(tables.BRONZE_TRADES.key, "bronze_trades_suite")

    def last_engine() -> dict:
        [ev] = world.instance.event_log_storage.get_asset_check_execution_history(bronze_gate, limit=1)
        return {
            k: p.get("engine", "great_expectations")
            for k, p in ev.evaluation.metadata["suite_parameters"].value.items()
        }

    assert last_engine() == {key(BTC): "polars contract", key(ETH): "polars contract"}

    # the cadence: one check-only run over the live partitions holding trades (yesterday has none)
    schedule = build_quality_schedule(PlatformSettings())
    ctx = dg.build_schedule_context(
        instance=world.instance, scheduled_execution_time=CLOCK.now, resources={"lake": world.lake}
    )
    [cadence] = schedule.evaluate_tick(ctx).run_requests
    assert covered(cadence) == [key(BTC), key(ETH)] and cadence.tags["crypto/read_only"] == "true"
    result = quality_suites_job.resolve(asset_graph=defs.resolve_asset_graph()).execute_in_process(
        instance=world.instance, tags=cadence.tags, resources=world.resources
    )
    assert result.success
    assert last_engine() == {key(BTC): "great_expectations", key(ETH): "great_expectations"}
    # the next minute: the live run as usual (the cadence run is read-only: it holds no partition), its
    # contract validating only the tick's delta on top of what the cadence's GX suite proved
    CLOCK.set(DAY, 12, 1, 5)
    [tick] = world.tick().run_requests
    assert covered(tick) == [key(BTC), key(ETH)]
    assert world.run(tick)
    [ev] = world.instance.event_log_storage.get_asset_check_execution_history(bronze_gate, limit=1)
    meta = ev.evaluation.metadata
    assert meta["validation_mode"].value == "incremental"
    assert 0 < meta["rows_validated"].value < meta["row_count"].value


@pytest.mark.slow
def test_a_run_stopped_by_a_restart_is_retried_together_not_split(noon_world: World) -> None:
    from dagster._core.test_utils import create_run_for_test

    world = noon_world  # the first tick at 12:00:20 and its runs, done
    CLOCK.set(DAY, 12, 1, 5)
    [together] = world.tick().run_requests
    # dagster dev was stopped while it ran: its worker recorded the failure as an unexpected termination
    stopped = {**together.tags, "dagster/failure_reason": "UNEXPECTED_TERMINATION"}
    create_run_for_test(world.instance, status=dg.DagsterRunStatus.FAILURE, tags=stopped)
    CLOCK.set(DAY, 12, 1, 20)
    [again] = world.tick().run_requests  # at once, one run for the exchange: nobody's data was bad
    assert covered(again) == [key(BTC), key(ETH)] and again.partition_key is None
    assert world.run(again)
    # a failure of the data (a failed step) still isolates the partitions (the failing-instrument test)
    CLOCK.set(DAY, 12, 2, 5)
    [nxt] = world.tick().run_requests
    create_run_for_test(
        world.instance,
        status=dg.DagsterRunStatus.FAILURE,
        tags={**nxt.tags, "dagster/failure_reason": "STEP_FAILURE"},
    )
    CLOCK.set(DAY, 12, 2, 20)
    assert sorted(r.partition_key for r in world.tick().run_requests) == [key(BTC), key(ETH)]


@pytest.mark.slow
def test_a_run_that_outlives_a_restart_is_waited_for_and_not_redone(noon_world: World) -> None:
    """Detached run workers (dagster.yaml) keep executing while dagster dev restarts: the restarted
    sensor neither duplicates nor retries the surviving run, and requests the minute that closed
    meanwhile as soon as the survivor is done."""
    from dagster._core.test_utils import create_run_for_test

    world = noon_world  # the first tick at 12:00:20 and its runs, done
    CLOCK.set(DAY, 12, 1, 5)
    [in_flight] = world.tick().run_requests
    saved = world.cursor
    # dagster dev stops; the run's detached worker goes on (the instance shows it STARTED) and
    # writes 12:01 while dagster dev is down
    survivor = create_run_for_test(world.instance, status=dg.DagsterRunStatus.STARTED, tags=in_flight.tags)
    CLOCK.set(DAY, 12, 1, 30)
    assert world.run(in_flight)
    CLOCK.set(DAY, 12, 2, 5)  # dagster dev is back: its first tick, from the stored cursor
    restarted = world.tick(cursor=saved)
    assert not restarted.run_requests  # 12:02 is due, but the survivor still holds both partitions
    assert restarted.skip_reason.skip_message == "2 partition(s) behind but already requested or in progress"
    world.instance.delete_run(survivor.run_id)  # it finished (its SUCCESS run is the one above)
    CLOCK.set(DAY, 12, 2, 10)
    [nxt] = world.tick().run_requests  # at once, one run, nothing redone: only 12:02 is fetched
    assert covered(nxt) == [key(BTC), key(ETH)] and nxt.tags[TRIGGER_TAG] == "new"
    assert world.run(nxt)
    manifest = world.lake.read_manifest(tables.RAW_TRADES, DayPartition(load_universe().instrument(BTC), DAY))
    assert [f"{b.covered_to:%H:%M}" for b in manifest.batches] == ["12:00", "12:01", "12:02"]


def test_shards_cut_an_exchange_into_at_most_n_runs_over_consecutive_instruments() -> None:
    a = [Instrument("a", f"X{i}/USDT") for i in range(5)]
    b = [Instrument("b", f"X{i}/USDT") for i in range(2)]
    order = [i.key for i in (*a, *b)]
    grid = dg.MultiPartitionsDefinition(
        {
            "date": dg.DailyPartitionsDefinition(start_date="2024-01-01", end_offset=1),
            "instrument": dg.StaticPartitionsDefinition(order),
        }
    )
    due = [(DayPartition(i, DAY), "new") for i in (*b, *a)]

    def runs(shards: int, split: frozenset[str] = frozenset()) -> list[tuple[int, list[str]]]:
        out = []
        for rect, reasons, slot in shard_runs(due, set(split), order, shards):
            rng = dg.PartitionKeyRange(rect[0].key, rect[-1].key)  # a run is a range Dagster expands exactly
            assert sorted(str(k) for k in grid.get_partition_keys_in_range(rng)) == sorted(
                p.key for p in rect
            )
            assert reasons == ["new"] * len(rect) and len({p.instrument.exchange for p in rect}) == 1
            out.append((slot, [p.instrument.key for p in rect]))
        assert sorted(k for _, keys in out for k in keys) == sorted(order)  # every due partition once
        return sorted(out)

    ka, kb = [i.key for i in a], [i.key for i in b]
    assert runs(2) == [(0, ka[:2]), (0, kb[:1]), (1, ka[2:]), (1, kb[1:])]
    assert runs(3) == [(0, ka[:1]), (0, kb[:1]), (1, ka[1:3]), (1, kb[1:]), (2, ka[3:])]
    # one shard: one run per exchange, exactly group_runs
    assert [(r, rs) for r, rs, _ in shard_runs(due, set(), order, 1)] == group_runs(due, set(), order)
    assert runs(1) == [(0, ka), (0, kb)]
    # a partition split out after a failure runs alone; the exchange's others are still sharded
    alone = key(a[1].key)
    assert (
        runs(2, frozenset({alone}))
        == [
            (0, ka[:1]),
            (0, ka[1:2]),
            (0, ka[2:3]),  # [a0, a2] is not a range: two runs in slot 0
            (0, kb[:1]),
            (1, ka[3:]),
            (1, kb[1:]),
        ]
    )


def test_sharded_ticks_request_one_run_per_slot_each_with_its_share_of_the_rate_limit(tmp_path: Path) -> None:
    sensor = build_live_sensor(PlatformSettings(live_shards=2), clock=CLOCK)
    CLOCK.set(DAY, 12, 0, 20)
    with dg.DagsterInstance.ephemeral() as instance:

        def tick(cursor: str | None) -> dg.SensorResult:
            ctx = dg.build_sensor_context(
                instance=instance,
                cursor=cursor,
                definitions=defs,
                resources={"lake": LakeResource(root=str(tmp_path / "lake"))},
            )
            result = sensor(ctx)
            assert isinstance(result, dg.SensorResult)
            return result

        first = tick(None)
        reqs = sorted(first.run_requests or [], key=lambda r: r.tags[EXCHANGE_TAG])
        assert [(r.tags[EXCHANGE_TAG], covered(r)) for r in reqs] == [
            ("sim#0", [key(BTC)]),
            ("sim#1", [key(ETH)]),
        ]
        raw = tables.RAW_TRADES.key.to_python_identifier()
        assert all(r.run_config["ops"][raw]["config"]["exchange_runs"] == 2 for r in reqs)
        assert not tick(first.cursor).run_requests  # the same minute: nothing again
    default = LiveSettings().run_config()["ops"][raw]["config"]
    assert "exchange_runs" not in default  # one shard: raw/trades' own default (1)
