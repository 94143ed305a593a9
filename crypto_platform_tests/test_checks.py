"""Asset checks through Dagster itself, on real market data (FTX 1m candles, replayed Binance trades).

* the GX suites are blocking: a corrupted silver / bronze partition fails its check and the downstream
  asset of the same run does not run; clean data passes and the downstream runs;
* drift against the champion's stored reference in a real MLflow registry (SQLite in tmp): no champion
  passes with a note, an ordinary day passes, a distorted day is ERROR (WARN with looser thresholds),
  a historical partition is marked as not about the newest data;
* prediction errors / rolling skill are written to the lake and the warehouse, and `model_skill`
  fails with ERROR on forecasts that point the wrong way.
"""

import functools
import math
from datetime import date, timedelta
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pytest

from crypto_platform import tables
from crypto_platform.assets import gold, ingest, monitoring, silver
from crypto_platform.assets.monitoring import model_skill
from crypto_platform.checks.drift import feature_drift, prediction_drift
from crypto_platform.checks.quality import bronze_trades_suite, candles_1m_suite
from crypto_platform.metadata import ABOUT_LATEST_DATA
from crypto_platform.ml import registry
from crypto_platform.ml.serving import prediction_rows
from crypto_platform.partitions import DayPartition
from crypto_platform.resources.lake import LakeResource
from crypto_platform.resources.mlflow import MlflowResource
from crypto_platform.resources.sources import TradeSourcesResource
from crypto_platform.resources.warehouse import WarehouseResource
from crypto_platform.settings import load_universe
from crypto_platform.transforms.features import FEATURE_COLUMNS, INDEX_COLUMNS, build_features
from crypto_platform.transforms.ohlcv_import import read_ftx_csv, split_by_day
from crypto_platform_tests.conftest import SHARED_DATA

FTX_FILE = SHARED_DATA / "candles" / "ftx_btcperp_1m_2022-01.csv"
INSTRUMENT = "sim.BTC-USDT"  # the FTX BTC-PERP bars stand in for the test universe's sim BTC/USDT
MODEL_NAME = "monitoring_test_model"
HORIZON = 5

ASSETS = [*dg.load_assets_from_modules([ingest, silver, gold, monitoring])]
# check-only runs of a partition need assets sharing one PartitionsDefinition
PARTITIONED = [a for a in ASSETS if a.partitions_def is not None]
CHECKS = [bronze_trades_suite, candles_1m_suite, feature_drift, prediction_drift, model_skill]


# ----------------------------------------------------------------------------------------------
# fixtures shared with test_retraining / test_notifications_wiring


@functools.cache
def ftx_candles() -> pl.DataFrame:
    """FTX BTC-PERP 1-minute bars of January 2022 as silver candles of the sim BTC/USDT instrument."""
    return read_ftx_csv(FTX_FILE, exchange="sim", symbol="BTC/USDT")


@functools.cache
def ftx_features() -> pl.DataFrame:
    return build_features(ftx_candles())


def cell(day: str, instrument: str = INSTRUMENT) -> DayPartition:
    return DayPartition(load_universe().instrument(instrument), date.fromisoformat(day))


def key(day: str, instrument: str = INSTRUMENT) -> str:
    return cell(day, instrument).key


def days_between(first: str, last: str) -> list[str]:
    d0, d1 = date.fromisoformat(first), date.fromisoformat(last)
    return [(d0 + timedelta(days=i)).isoformat() for i in range((d1 - d0).days + 1)]


def resources(tmp: Path, store: str | None = None, **extra) -> dict:
    return {
        "lake": LakeResource(root=str(tmp / "lake")),
        "warehouse": WarehouseResource(path=str(tmp / "warehouse.duckdb")),
        "trade_sources": TradeSourcesResource(),
        "mlflow_registry": MlflowResource(
            tracking_uri=store or f"sqlite:///{tmp / 'mlflow' / 'mlflow.db'}", model_name=MODEL_NAME
        ),
        **extra,
    }


def write_silver(lake: LakeResource, days: list[str]) -> None:
    by_day = split_by_day(ftx_candles())
    for d in days:
        lake.write_partition(by_day[date.fromisoformat(d)], tables.CANDLES_1M, cell(d))


def write_features(lake: LakeResource, days: list[str], distort: dict[str, float] | None = None) -> None:
    feats = ftx_features()
    for d in days:
        part = cell(d)
        df = feats.filter((pl.col("ts") >= part.start) & (pl.col("ts") < part.end))
        if distort:
            df = df.with_columns([(pl.col(c) * f).alias(c) for c, f in distort.items()])
        lake.write_partition(df, tables.FEATURES, part)


def forward_returns(day: str) -> pl.DataFrame:
    """exchange, symbol, ts, close and the realised 5-minute forward log return of one FTX day."""
    candles = ftx_candles().sort("ts")
    fwd = candles.with_columns((pl.col("close").shift(-HORIZON) / pl.col("close")).log().alias("fwd"))
    part = cell(day)
    return fwd.filter((pl.col("ts") >= part.start) & (pl.col("ts") < part.end))


def write_predictions(
    lake: LakeResource, days: list[str], *, skill: float, version: int = 1, seed: int = 0
) -> None:
    """Forecasts correlated with the realised return (skill > 0), against it (< 0), in the real schema."""
    rng = np.random.default_rng(seed)
    info = SimpleNamespace(horizon=HORIZON, name=MODEL_NAME, version=str(version))
    for d in days:
        day = forward_returns(d)
        realised = day["fwd"].fill_null(0.0).to_numpy()
        noise = rng.normal(0.0, float(np.nanstd(realised)) or 1e-4, len(realised))
        pred = skill * realised + noise * (1 - abs(skill))
        rows = prediction_rows(
            day.select(INDEX_COLUMNS), day.select(*INDEX_COLUMNS, "close"), pred, info, True
        )
        lake.write_partition(rows, tables.PREDICTIONS, cell(d))


def register_champion(store: str, reference: pl.DataFrame) -> registry.ModelVersionInfo:
    """A small real LightGBM model, promoted to champion, with `reference` as its drift reference."""
    from crypto_platform.ml.evaluation import skill_gate
    from crypto_platform.ml.training import train
    from crypto_platform_tests.test_training import FAST, planted_frame

    frame = planted_frame(3000)
    result = train(frame, FEATURE_COLUMNS, horizon=HORIZON, **{**FAST, "n_trials": 2, "max_rounds": 60})
    decision = skill_gate(result.evaluation.model, result.evaluation.momentum, None)
    assert decision.promote, decision.reasons
    return registry.log_and_register(
        result,
        tracking_uri=store,
        model_name=MODEL_NAME,
        feature_cols=FEATURE_COLUMNS,
        reference_features=reference,
        input_example=frame.head(5),
        decision=decision,
    )


def partition_tags(partition_key: str) -> dict[str, str]:
    """Tags of a one-partition run (what `partition_key=` sets; accepted only for asset selections)."""
    return {"dagster/partition": partition_key}


def evaluation(result: dg.ExecuteInProcessResult, check_name: str):
    [ev] = [e for e in result.get_asset_check_evaluations() if e.check_name == check_name]
    return ev


def meta(ev, name: str):
    return ev.metadata[name].value


def corrupt_candles(df: pl.DataFrame) -> pl.DataFrame:
    """A high below its low on minute 100, and minute 200 twice."""
    idx = pl.int_range(pl.len())
    bad = df.with_columns(
        pl.when(idx == 100).then(pl.col("low") - 5.0).otherwise(pl.col("high")).alias("high")
    )
    return pl.concat([bad, bad.slice(200, 1)]).sort("ts")


# ----------------------------------------------------------------------------------------------
# blocking quality checks


def test_corrupted_silver_partition_fails_blocking_check_and_features_do_not_run(tmp_path: Path) -> None:
    lake = LakeResource(root=str(tmp_path / "lake"))
    write_silver(lake, ["2022-01-09", "2022-01-10", "2022-01-11"])
    bad = cell("2022-01-11")
    lake.write_partition(corrupt_candles(lake.read_partition(tables.CANDLES_1M, bad)), tables.CANDLES_1M, bad)
    selection = dg.AssetSelection.checks(candles_1m_suite) | dg.AssetSelection.assets(tables.FEATURES.key)

    with dg.DagsterInstance.ephemeral() as instance:
        # a single run over the range 10..11 January: the check validates both days
        result = dg.materialize(
            [*ASSETS, candles_1m_suite],
            selection=selection,
            instance=instance,
            resources=resources(tmp_path),
            tags={
                "dagster/asset_partition_range_start": key("2022-01-10"),
                "dagster/asset_partition_range_end": key("2022-01-11"),
            },
            raise_on_error=False,
        )
        assert not result.success
        ev = evaluation(result, "candles_1m_suite")
        assert not ev.passed and ev.severity == dg.AssetCheckSeverity.ERROR and ev.blocking
        assert meta(ev, "partitions") == 2
        assert meta(ev, "failed_partitions") == bad.key
        assert meta(ev, "high_ge_low.unexpected_count") == 1
        assert meta(ev, "minute_unique.unexpected_count") == 2  # both rows of the doubled minute
        assert meta(ev, "row_count") == 2 * 1440 + 1
        assert bad.key in meta(ev, "high_ge_low.examples")
        assert "high_ge_low" in ev.description and "minute_unique" in ev.description

        # the downstream asset never ran: no step, no materialization, no lake file (for either day)
        features_node = ASSETS_BY_KEY[tables.FEATURES.key].node_def.name
        assert not result.is_node_success(features_node)
        assert not result.asset_materializations_for_node(features_node)
        assert instance.get_latest_materialization_event(tables.FEATURES.key) is None
        assert lake.scan_table(tables.FEATURES) is None

        # clean data: the same selection passes and the features are built
        ok = dg.materialize(
            [*ASSETS, candles_1m_suite],
            selection=selection,
            instance=instance,
            resources=resources(tmp_path),
            partition_key=key("2022-01-10"),
        )
        ev = evaluation(ok, "candles_1m_suite")
        assert (
            ev.passed and meta(ev, "partition") == key("2022-01-10") and meta(ev, "failed_partitions") == "-"
        )
        assert meta(ev, "non_empty_share.observed") is not None
        assert lake.read_partition(tables.FEATURES, cell("2022-01-10")).height == 1440


def test_corrupted_silver_refuses_gold_even_when_the_check_is_not_selected(tmp_path: Path) -> None:
    """The documented `--select 'key:gold/features or key:gold/labels'` path skips the blocking check:
    the gold assets' own precondition refuses the corrupted partition, naming it and what is wrong."""
    lake = LakeResource(root=str(tmp_path / "lake"))
    write_silver(lake, ["2022-01-10", "2022-01-11", "2022-01-12"])
    bad = cell("2022-01-11")
    lake.write_partition(corrupt_candles(lake.read_partition(tables.CANDLES_1M, bad)), tables.CANDLES_1M, bad)
    labels = tables.LABELS.key
    for asset, day in [
        (tables.FEATURES.key, "2022-01-11"),
        (tables.FEATURES.key, "2022-01-12"),
        (labels, "2022-01-10"),
    ]:
        # features of the 12th read the 11th as history; labels of the 10th read the 11th for t+h
        result = dg.materialize(
            ASSETS,
            selection=dg.AssetSelection.assets(asset),
            resources=resources(tmp_path),
            partition_key=key(day),
            raise_on_error=False,
        )
        assert not result.success
        [failure] = [e for e in result.all_events if e.is_step_failure]
        message = failure.step_failure_data.error.message
        assert f"silver/candles_1m {bad} is corrupted" in message
        assert "duplicated minute (2)" in message and "low > high (1)" in message
        assert "'ts': '2022-01-11 01:40:00+00:00'" in message  # the example row: minute 100 of the day
        assert not result.get_asset_materialization_events()
        assert lake.scan_table(tables.by_key(asset)) is None

    # the clean neighbour that does not need the bad day is still built
    ok = dg.materialize(
        ASSETS,
        selection=dg.AssetSelection.assets(tables.FEATURES.key),
        resources=resources(tmp_path),
        partition_key=key("2022-01-10"),
    )
    assert ok.success and lake.read_partition(tables.FEATURES, cell("2022-01-10")).height == 1440


def test_min_non_empty_share_is_configurable(tmp_path: Path) -> None:
    lake = LakeResource(root=str(tmp_path / "lake"))
    write_silver(lake, ["2022-01-10"])
    part = cell("2022-01-10")
    thin = lake.read_partition(tables.CANDLES_1M, part).with_columns(
        (pl.int_range(pl.len()) % 10 != 0).alias("is_empty")  # only 10% of minutes traded
    )
    lake.write_partition(thin, tables.CANDLES_1M, part)
    op = candles_1m_suite.node_def.name
    with dg.DagsterInstance.ephemeral() as instance:

        def run(share):
            res = dg.materialize(
                [*PARTITIONED, candles_1m_suite],
                selection=dg.AssetSelection.checks(candles_1m_suite),
                instance=instance,
                resources=resources(tmp_path),
                tags=partition_tags(part.key),
                raise_on_error=False,
                run_config={"ops": {op: {"config": {"min_non_empty_share": share}}}},
            )
            return evaluation(res, "candles_1m_suite")

        strict = run(0.5)
        assert not strict.passed and "non_empty_share" in meta(strict, "failed_expectations")
        assert meta(strict, "non_empty_share.unexpected_count") == 1296
        assert run(0.05).passed
        assert run(None).passed  # liquidity floor disabled


def test_corrupted_bronze_partition_fails_blocking_check_and_candles_do_not_run(tmp_path: Path) -> None:
    part_key = "2024-01-01|binance.BTC-USDT"  # real Binance trades replayed from ../shared
    lake = LakeResource(root=str(tmp_path / "lake"))
    ingest_sel = dg.AssetSelection.groups("raw", "bronze") | dg.AssetSelection.assets(tables.CANDLES_1M.key)
    with dg.DagsterInstance.ephemeral() as instance:
        ok = dg.materialize(
            [*ASSETS, bronze_trades_suite],
            selection=ingest_sel,
            partition_key=part_key,
            instance=instance,
            resources=resources(tmp_path),
        )
        ev = evaluation(ok, "bronze_trades_suite")
        assert ev.passed and meta(ev, "row_count") == 16_702
        part = DayPartition(load_universe().instrument("binance.BTC-USDT"), date(2024, 1, 1))
        before = lake.read_partition(tables.CANDLES_1M, part)
        assert before.height == 31

        # a check-only run without a partition validates the cells of the latest materialization
        alone = dg.materialize(
            [*ASSETS, candles_1m_suite],
            selection=dg.AssetSelection.checks(candles_1m_suite),
            instance=instance,
            resources=resources(tmp_path),
        )
        ev = evaluation(alone, "candles_1m_suite")
        assert ev.passed and meta(ev, "partition") == part_key and meta(ev, "row_count") == 31

        trades = lake.read_partition(tables.BRONZE_TRADES, part)
        idx = pl.int_range(pl.len())
        broken = trades.with_columns(pl.when(idx == 7).then(-1.0).otherwise(pl.col("price")).alias("price"))
        lake.write_partition(pl.concat([broken, broken.slice(9, 1)]), tables.BRONZE_TRADES, part)
        silver_mtime = (lake.partition_path(tables.CANDLES_1M, part) / "part.parquet").stat().st_mtime_ns

        bad = dg.materialize(
            [*ASSETS, bronze_trades_suite],
            selection=dg.AssetSelection.checks(bronze_trades_suite)
            | dg.AssetSelection.assets(tables.CANDLES_1M.key),
            partition_key=part_key,
            instance=instance,
            resources=resources(tmp_path),
            raise_on_error=False,
        )
        assert not bad.success
        ev = evaluation(bad, "bronze_trades_suite")
        assert not ev.passed and ev.severity == dg.AssetCheckSeverity.ERROR
        assert meta(ev, "price_positive.unexpected_count") == 1
        assert meta(ev, "trade_id_unique.unexpected_count") == 2
        candles_node = ASSETS_BY_KEY[tables.CANDLES_1M.key].node_def.name
        assert not bad.is_node_success(candles_node)
        assert not bad.asset_materializations_for_node(candles_node)
        after = (lake.partition_path(tables.CANDLES_1M, part) / "part.parquet").stat().st_mtime_ns
        assert after == silver_mtime  # the candles were not rebuilt from the broken trades


ASSETS_BY_KEY = {k: a for a in ASSETS for k in a.keys}


# ----------------------------------------------------------------------------------------------
# drift against the champion's reference


@pytest.fixture(scope="module")
def drift_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """MLflow store whose champion's drift reference is 3..9 January 2022 (FTX features)."""
    store = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    feats = ftx_features()
    reference = feats.filter(pl.col("ts").dt.date().is_between(date(2022, 1, 3), date(2022, 1, 9)))
    register_champion(store, reference)
    return store


def _run_check(tmp: Path, instance, check, store: str, *, partition_key: str | None = None, run_config=None):
    res = dg.materialize(
        [*(PARTITIONED if partition_key else ASSETS), *CHECKS],
        selection=dg.AssetSelection.checks(check),
        instance=instance,
        resources=resources(tmp, store),
        tags=partition_tags(partition_key) if partition_key else None,
        run_config=run_config,
    )
    return evaluation(res, next(iter(check.check_keys)).name)


def test_feature_drift_without_champion_passes_with_a_note(tmp_path: Path) -> None:
    lake = LakeResource(root=str(tmp_path / "lake"))
    write_features(lake, ["2022-01-12"])
    with dg.DagsterInstance.ephemeral() as instance:
        ev = _run_check(tmp_path, instance, feature_drift, f"sqlite:///{tmp_path / 'empty.db'}")
        assert ev.passed and "no 'champion' model" in ev.description
        assert meta(ev, "severity") == "SKIPPED"
        ev = _run_check(tmp_path, instance, prediction_drift, f"sqlite:///{tmp_path / 'empty.db'}")
        assert ev.passed and meta(ev, "severity") == "SKIPPED"


def test_feature_drift_ok_error_warn_and_history(tmp_path: Path, drift_store: str) -> None:
    lake = LakeResource(root=str(tmp_path / "lake"))
    write_features(lake, ["2022-01-11", "2022-01-12"])
    op = feature_drift.node_def.name
    with dg.DagsterInstance.ephemeral() as instance:
        ok = _run_check(tmp_path, instance, feature_drift, drift_store)  # newest 24 h: 12 January
        assert ok.passed, ok.description
        assert meta(ok, "severity") == "OK" and meta(ok, ABOUT_LATEST_DATA) is True
        assert meta(ok, "model") == f"{MODEL_NAME} v1" and meta(ok, "n_current") == 1440
        assert 0 <= meta(ok, "psi.zret_1") < 0.2

        # a distorted newest day: volatility-normalised returns three times too large
        write_features(lake, ["2022-01-13"], distort={"zret_1": 3.0, "zret_5": 3.0})
        bad = _run_check(tmp_path, instance, feature_drift, drift_store)
        assert not bad.passed and bad.severity == dg.AssetCheckSeverity.ERROR
        assert meta(bad, "severity") == "ERROR" and "zret_1=ERROR" in meta(bad, "drifted")
        assert meta(bad, "psi.zret_1") >= 0.3 and meta(bad, "worst_window") == f"{INSTRUMENT} newest 24 h"
        assert "zret_1" in bad.description

        # looser ERROR thresholds: the same drift is a WARN
        loose = {"ops": {op: {"config": {"psi_error": 50.0, "ks_error": 1.0}}}}
        warn = _run_check(tmp_path, instance, feature_drift, drift_store, run_config=loose)
        assert (
            not warn.passed
            and warn.severity == dg.AssetCheckSeverity.WARN
            and meta(warn, "severity") == "WARN"
        )

        # an old partition judged in a partitioned run: reported, but not about the newest data
        hist = _run_check(tmp_path, instance, feature_drift, drift_store, partition_key=key("2022-01-11"))
        assert hist.passed and meta(hist, ABOUT_LATEST_DATA) is False
        assert meta(hist, "worst_window") == key("2022-01-11")


def test_prediction_drift_compares_with_the_models_own_forecasts(tmp_path: Path, drift_store: str) -> None:
    lake = LakeResource(root=str(tmp_path / "lake"))
    write_features(lake, ["2022-01-12", "2022-01-13"])
    model = registry.load_champion(drift_store, MODEL_NAME)
    candles = ftx_candles()
    for d, scale in [("2022-01-12", 1.0), ("2022-01-13", 25.0)]:
        feats = lake.read_partition(tables.FEATURES, cell(d))
        rows = prediction_rows(feats, candles, model.predict(feats) * scale, model.info, True)
        lake.write_partition(rows, tables.PREDICTIONS, cell(d))
    with dg.DagsterInstance.ephemeral() as instance:
        ok = _run_check(tmp_path, instance, prediction_drift, drift_store, partition_key=key("2022-01-12"))
        assert meta(ok, "severity") in {"OK", "WARN"} and meta(ok, "n_current") == 1440
        assert meta(ok, "model") == f"{MODEL_NAME} v1" and meta(ok, ABOUT_LATEST_DATA) is False
        bad = _run_check(tmp_path, instance, prediction_drift, drift_store)  # newest 24 h: the inflated day
        assert not bad.passed and bad.severity == dg.AssetCheckSeverity.ERROR
        assert "predicted_return/rv_60=ERROR" in meta(bad, "drifted")
        assert meta(bad, ABOUT_LATEST_DATA) is True


# ----------------------------------------------------------------------------------------------
# prediction errors and model skill


def _monitor(tmp: Path, instance) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [*ASSETS, model_skill],
        selection=dg.AssetSelection.assets(tables.PREDICTION_ERRORS.key, tables.PREDICTION_SKILL.key),
        instance=instance,
        resources=resources(tmp),
    )


def test_prediction_errors_rolling_skill_and_model_skill_check(tmp_path: Path) -> None:
    lake = LakeResource(root=str(tmp_path / "lake"))
    write_silver(lake, ["2022-01-10", "2022-01-11", "2022-01-12"])
    write_predictions(lake, ["2022-01-10", "2022-01-11"], skill=0.5)
    with dg.DagsterInstance.ephemeral() as instance:
        res = _monitor(tmp_path, instance)
        ev = evaluation(res, "model_skill")
        assert ev.passed, ev.description
        assert meta(ev, "lost") is False and meta(ev, "rank_ic") > 0.3 and meta(ev, "hit_rate") > 0.6
        assert meta(ev, "n") > 1000 and meta(ev, "model_version") == "1"

        errors = lake.read_partitions(tables.PREDICTION_ERRORS, [cell("2022-01-10"), cell("2022-01-11")])
        assert errors.height == 2 * 1440  # the 12th completes the last horizons of the 11th
        realised = forward_returns("2022-01-10")["fwd"].head(10).to_numpy()
        first = errors.sort("ts").head(10)
        assert np.allclose(first["realised_return"].to_numpy(), realised, rtol=1e-12)
        assert np.allclose(first["baseline_abs_error"].to_numpy(), np.abs(realised), rtol=1e-12)
        mats = {
            m.asset_key: m.metadata for m in res.asset_materializations_for_node("gold_prediction_errors")
        }
        assert mats[tables.PREDICTION_ERRORS.key]["rows"].value == 2 * 1440
        assert mats[tables.PREDICTION_ERRORS.key]["lookback_rank_ic"].value > 0.3
        assert mats[tables.PREDICTION_SKILL.key]["rank_ic"].value > 0.3
        skill = lake.read_table(tables.PREDICTION_SKILL)
        assert skill.height >= 40 and set(skill.columns) >= {
            "mae",
            "baseline_mae",
            "mae_skill",
            "rank_ic",
            "hit_rate",
        }

        con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
        assert con.execute("select count(*) from gold.prediction_errors").fetchone() == (2 * 1440,)
        assert con.execute("select count(*) from gold.prediction_skill").fetchone() == (skill.height,)
        con.close()

        # the model turns against the market: the check fails with ERROR and says why
        write_predictions(lake, ["2022-01-10", "2022-01-11"], skill=-0.5)
        bad = evaluation(_monitor(tmp_path, instance), "model_skill")
        assert not bad.passed and bad.severity == dg.AssetCheckSeverity.ERROR
        assert meta(bad, "lost") is True and meta(bad, "rank_ic") < -0.3
        assert "rank IC" in bad.description and math.isfinite(meta(bad, "mae"))


def test_monitoring_without_predictions_is_a_no_op(tmp_path: Path) -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        res = _monitor(tmp_path, instance)
        ev = evaluation(res, "model_skill")
        assert ev.passed and meta(ev, "n") == 0
