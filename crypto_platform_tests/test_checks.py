"""Asset checks through Dagster itself, on real market data (FTX 1m candles, replayed Binance trades).

* the GX suites are blocking: a corrupted silver / bronze partition fails its check and the downstream
  asset of the same run does not run; clean data passes and the downstream runs;
* drift against the champion's stored reference in a real MLflow registry (SQLite in tmp): no champion
  passes with a note, an ordinary day passes, a distorted day is ERROR (WARN with looser thresholds),
  a historical partition is marked as not about the newest data;
* prediction errors / rolling skill are written to the lake and the warehouse (`model_skill` judges
  the out-of-sample `gold/rolling_evaluation`: test_rolling_evaluation.py).
"""

from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pytest

from crypto_platform import tables
from crypto_platform.checks.drift import feature_drift, prediction_drift
from crypto_platform.checks.quality import bronze_trades_suite, candles_1m_suite
from crypto_platform.metadata import ABOUT_LATEST_DATA
from crypto_platform.ml import registry
from crypto_platform.ml.serving import prediction_rows
from crypto_platform.partitions import DayPartition
from crypto_platform.resources.lake import LakeResource
from crypto_platform.settings import load_universe
from crypto_platform_tests.fixtures import (
    ASSETS,
    INSTRUMENT,
    MODEL_NAME,
    PARTITIONED,
    cell,
    corrupt_candles,
    evaluation,
    forward_returns,
    ftx_candles,
    key,
    meta,
    partition_tags,
    resources,
    run_check,
    write_features,
    write_predictions,
    write_silver,
)

pytestmark = pytest.mark.slow  # every test materializes assets and checks over real data


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
# drift against the champion's reference (`drift_store`: conftest)


def test_feature_drift_without_champion_passes_with_a_note(tmp_path: Path) -> None:
    lake = LakeResource(root=str(tmp_path / "lake"))
    write_features(lake, ["2022-01-12"])
    with dg.DagsterInstance.ephemeral() as instance:
        ev = run_check(tmp_path, instance, feature_drift, f"sqlite:///{tmp_path / 'empty.db'}")
        assert ev.passed and "no 'champion' model" in ev.description
        assert meta(ev, "severity") == "SKIPPED"
        ev = run_check(tmp_path, instance, prediction_drift, f"sqlite:///{tmp_path / 'empty.db'}")
        assert ev.passed and meta(ev, "severity") == "SKIPPED"


def test_feature_drift_ok_error_warn_and_history(tmp_path: Path, drift_store: str) -> None:
    lake = LakeResource(root=str(tmp_path / "lake"))
    write_features(lake, ["2022-01-11", "2022-01-12"])
    op = feature_drift.node_def.name
    with dg.DagsterInstance.ephemeral() as instance:
        ok = run_check(tmp_path, instance, feature_drift, drift_store)  # newest 24 h: 12 January
        assert ok.passed, ok.description
        assert meta(ok, "severity") == "OK" and meta(ok, ABOUT_LATEST_DATA) is True
        assert meta(ok, "model") == f"{MODEL_NAME} v1" and meta(ok, "n_current") == 1440
        assert 0 <= meta(ok, "psi.zret_1") < 0.2

        # a distorted newest day: volatility-normalised returns three times too large
        write_features(lake, ["2022-01-13"], distort={"zret_1": 3.0, "zret_5": 3.0})
        bad = run_check(tmp_path, instance, feature_drift, drift_store)
        assert not bad.passed and bad.severity == dg.AssetCheckSeverity.ERROR
        assert meta(bad, "severity") == "ERROR" and "zret_1=ERROR" in meta(bad, "drifted")
        assert meta(bad, "psi.zret_1") >= 0.3 and meta(bad, "worst_window") == f"{INSTRUMENT} newest 24 h"
        assert "zret_1" in bad.description

        # looser ERROR thresholds: the same drift is a WARN
        loose = {"ops": {op: {"config": {"psi_error": 50.0, "ks_error": 1.0}}}}
        warn = run_check(tmp_path, instance, feature_drift, drift_store, run_config=loose)
        assert (
            not warn.passed
            and warn.severity == dg.AssetCheckSeverity.WARN
            and meta(warn, "severity") == "WARN"
        )

        # an old partition judged in a partitioned run: reported, but not about the newest data
        hist = run_check(tmp_path, instance, feature_drift, drift_store, partition_key=key("2022-01-11"))
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
        ok = run_check(tmp_path, instance, prediction_drift, drift_store, partition_key=key("2022-01-12"))
        assert meta(ok, "severity") in {"OK", "WARN"} and meta(ok, "n_current") == 1440
        assert meta(ok, "model") == f"{MODEL_NAME} v1" and meta(ok, ABOUT_LATEST_DATA) is False
        bad = run_check(tmp_path, instance, prediction_drift, drift_store)  # newest 24 h: the inflated day
        assert not bad.passed and bad.severity == dg.AssetCheckSeverity.ERROR
        assert "predicted_return/rv_60=ERROR" in meta(bad, "drifted")
        assert meta(bad, ABOUT_LATEST_DATA) is True


# ----------------------------------------------------------------------------------------------
# prediction errors and model skill


def _monitor(tmp: Path, instance) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        ASSETS,
        selection=dg.AssetSelection.assets(tables.PREDICTION_ERRORS.key, tables.PREDICTION_SKILL.key),
        instance=instance,
        resources=resources(tmp),
    )


def test_prediction_errors_and_rolling_skill(tmp_path: Path) -> None:
    lake = LakeResource(root=str(tmp_path / "lake"))
    write_silver(lake, ["2022-01-10", "2022-01-11", "2022-01-12"])
    write_predictions(lake, ["2022-01-10", "2022-01-11"], skill=0.5)
    with dg.DagsterInstance.ephemeral() as instance:
        res = _monitor(tmp_path, instance)

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


def test_monitoring_without_predictions_is_a_no_op(tmp_path: Path) -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        res = _monitor(tmp_path, instance)
        mats = res.asset_materializations_for_node("gold_prediction_errors")
        assert res.success and [m.metadata["rows"].value for m in mats] == [0, 0]
