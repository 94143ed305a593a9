"""Honest training inputs: unusable features are dropped and reported, a model is fed exactly the
features it learned from, the evaluation window can be set by dates, and the CV optimism is measured."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from crypto_platform.ml.feature_availability import (
    FeatureSelection,
    MissingFeatureError,
    model_features,
    usable_features,
)
from crypto_platform.ml.mlflow_logging import run_metrics, run_tags
from crypto_platform.ml.reporting import estimate_markdown, features_markdown
from crypto_platform.ml.splits import EvalWindowError, evaluation_split
from crypto_platform.ml.training import TrainResult, predict, train
from crypto_platform.transforms.features import FEATURE_COLUMNS
from crypto_platform_tests.fixtures import HORIZON, mlflow_store, planted_frame

T0 = datetime(2024, 5, 1, tzinfo=UTC)
SMALL = {"n_trials": 2, "n_folds": 2, "seed": 3, "max_rounds": 40}


def _minutes(n: int, **cols: list) -> pl.DataFrame:
    return pl.DataFrame({"ts": [T0 + timedelta(minutes=i) for i in range(n)], **cols})


def test_null_nan_and_constant_features_are_dropped_with_the_reason() -> None:
    frame = _minutes(
        4,
        a=[1.0, 2.0, None, 4.0],
        nulls=[None, None, None, None],
        nans=[float("nan")] * 4,
        zero=[0.0, 0.0, None, 0.0],
        two=[2.0, 2.0, 2.0, 2.0],
        b=[0.0, 0.0, 0.0, 1e-9],
    )
    sel = usable_features(frame, ["a", "nulls", "nans", "zero", "two", "b"])
    assert sel.used == ["a", "b"]  # a column that varies by 1e-9 still varies
    assert sel.dropped == {
        "nulls": "null on all 4 training rows (the inputs do not support it)",
        "nans": "null on all 4 training rows (the inputs do not support it)",
        "zero": "constant 0 on all 3 non-null training rows",
        "two": "constant 2 on all 4 non-null training rows",
    }
    assert sel.table().rows() == [(k, v) for k, v in sel.dropped.items()]
    with pytest.raises(ValueError, match=r"every candidate feature is null or constant"):
        usable_features(frame, ["nulls", "two"])
    with pytest.raises(ValueError, match=r"lacks feature columns \['nope'\]"):
        usable_features(frame, ["a", "nope"])


def test_model_features_selects_the_learned_columns_in_order_and_names_a_missing_one() -> None:
    frame = _minutes(2, a=[1, 2], b=[3.0, 4.0], extra=[9.0, 9.0])
    got = model_features(frame, ["b", "a"])
    assert got.columns == ["b", "a"] and got.rows() == [(3.0, 1.0), (4.0, 2.0)]
    assert got.schema["a"] == pl.Float64
    with pytest.raises(
        MissingFeatureError, match=r"model v7 learned from features \['c'\] that the input lacks"
    ):
        model_features(frame, ["a", "c"], model="model v7")
    with pytest.raises(MissingFeatureError, match="records no feature list"):
        model_features(frame, [])


def _labelled(n: int) -> pl.DataFrame:
    return _minutes(n, label=[0.001 * (i % 7 - 3) for i in range(n)])


def test_eval_dates_give_the_window_and_everything_before_it_minus_the_purge() -> None:
    data = _labelled(600)  # 2024-05-01 00:00 .. 09:59
    gap = timedelta(minutes=5)
    dev, window = evaluation_split(
        data, gap=gap, holdout_fraction=0.2, eval_from="2024-05-01T08:00", eval_to="2024-05-01T09:00"
    )
    assert window["ts"].min() == T0 + timedelta(hours=8) and window["ts"].max() == T0 + timedelta(minutes=539)
    assert window.height == 60
    assert dev["ts"].max() == T0 + timedelta(minutes=474) and dev.height == 475  # 08:00 - 5 min, exclusive
    # the rows after eval_to are neither evaluated nor trained on
    assert dev.height + window.height + 5 + 60 == data.height
    # without dates: the final 20% of bar times
    dev_f, hold_f = evaluation_split(data, gap=gap, holdout_fraction=0.2)
    assert hold_f["ts"].min() == T0 + timedelta(minutes=480) and hold_f.height == 120
    assert dev_f.height == 475
    # a date (midnight UTC) works as well as a datetime
    _, day = evaluation_split(_labelled(3 * 1440), gap=gap, holdout_fraction=0.2, eval_from="2024-05-03")
    assert day["ts"].min() == datetime(2024, 5, 3, tzinfo=UTC) and day.height == 1440


@pytest.mark.parametrize(
    ("eval_from", "eval_to", "problem"),
    [
        ("2024-05-02", None, r"eval_from 2024-05-02 00:00:00\+00:00 is after the data's bars"),
        ("2024-05-01T08:00", "2024-05-01T07:00", r"eval_to .* is not after eval_from"),
        ("2024-04-01", "2024-04-02", r"eval_to 2024-04-02 .* is before the data's bars"),
        ("2024-05-01T00:30", None, r"eval_from .* overlaps the training data: it leaves 25 bar times"),
        (None, "2024-05-01T08:00", r"eval_to .* is set without eval_from"),
        ("May 1st", None, r"eval_from 'May 1st' is not a date"),
    ],
)
def test_bad_eval_dates_are_a_clear_error_naming_the_field(eval_from, eval_to, problem) -> None:
    with pytest.raises(EvalWindowError, match=problem):
        evaluation_split(
            _labelled(600),
            gap=timedelta(minutes=5),
            holdout_fraction=0.2,
            eval_from=eval_from,
            eval_to=eval_to,
            min_dev_times=150,
        )


@pytest.fixture(scope="module")
def without_flow() -> tuple[pl.DataFrame, TrainResult]:
    """The planted frame with the order-flow features null (an OHLCV-only instrument), eval by dates."""
    frame = planted_frame(3000).with_columns(
        pl.lit(None, pl.Float64).alias(c) for c in ["taker_buy_ratio_5", "taker_buy_ratio_15"]
    )
    start = frame["ts"].min() + timedelta(minutes=2200)
    return frame, train(frame, FEATURE_COLUMNS, horizon=HORIZON, eval_from=start, **SMALL)


def test_training_learns_only_usable_features_and_says_why_the_others_were_dropped(
    without_flow: tuple[pl.DataFrame, TrainResult],
) -> None:
    frame, result = without_flow
    dev = frame.filter(pl.col("ts") < result.holdout_start - timedelta(minutes=HORIZON))
    # 2 instruments x 2195 minutes; empty_frac_60 is null in each one's first 59 minutes (warm-up)
    assert dev.height == 4390 and dev["empty_frac_60"].drop_nulls().len() == 4272
    assert result.dropped_features == {
        "taker_buy_ratio_5": "null on all 4390 training rows (the inputs do not support it)",
        "taker_buy_ratio_15": "null on all 4390 training rows (the inputs do not support it)",
        "empty_frac_60": "constant 0 on all 4272 non-null training rows",
    }
    assert result.feature_cols == [c for c in FEATURE_COLUMNS if c not in result.dropped_features]
    assert result.booster.feature_name() == result.feature_cols
    assert result.evaluation.importance["feature"].sort().to_list() == sorted(result.feature_cols)
    # eval_from: the holdout starts exactly there, the development span ends a horizon before
    assert result.holdout_start == frame["ts"].min() + timedelta(minutes=2200)
    assert result.train_end == result.holdout_start - timedelta(minutes=HORIZON + 1)
    # garbage in a column the model never learned from changes nothing
    noisy = frame.with_columns(pl.lit(1e9).alias("taker_buy_ratio_5"))
    np.testing.assert_array_equal(
        predict(result.booster, noisy, result.feature_cols),
        predict(result.booster, frame, result.feature_cols),
    )
    md = features_markdown(result)
    assert f"learned from {len(result.feature_cols)} features" in md
    assert "| taker_buy_ratio_5 | null on all 4390 training rows (the inputs do not support it) |" in md
    assert FeatureSelection(result.feature_cols, result.dropped_features).table().height == 3


def test_optimism_is_the_selected_cv_score_minus_the_untouched_holdout(
    without_flow: tuple[pl.DataFrame, TrainResult],
) -> None:
    _, result = without_flow
    cv, oos = float(np.mean(result.cv_scores)), result.evaluation.model.rank_ic
    assert result.best_value == pytest.approx(cv, abs=1e-12)
    assert result.optimism == pytest.approx(cv - oos, abs=1e-12)
    metrics = run_metrics(result, decision=_decision())
    assert metrics["optimism_rank_ic"] == pytest.approx(cv - oos, abs=1e-12)
    assert metrics["n_dropped_features"] == 3.0
    tags = run_tags(result)
    assert tags["optimism"].startswith(f"{cv - oos:+.4f} rank IC: mean CV {cv:.4f}")
    assert tags["dropped_features"] == "taker_buy_ratio_5, taker_buy_ratio_15, empty_frac_60"
    assert f"**{cv - oos:+.4f}**" in estimate_markdown(result)


def _decision():
    from crypto_platform.ml.evaluation import GateDecision

    return GateDecision(promote=False, reasons=["FAIL for the test"])


@pytest.mark.slow
def test_a_registered_model_is_never_fed_a_feature_it_did_not_learn(
    without_flow: tuple[pl.DataFrame, TrainResult], tmp_path
) -> None:
    from crypto_platform.ml import registry

    frame, result = without_flow
    store = mlflow_store(tmp_path)
    info = registry.log_and_register(
        result,
        tracking_uri=store,
        model_name="flowless",
        feature_cols=FEATURE_COLUMNS,
        reference_features=frame.head(100),
        input_example=frame.head(3),
        decision=_decision(),
    )
    assert info.feature_cols == result.feature_cols and "taker_buy_ratio_5" not in info.feature_cols
    assert info.tags["dropped_features"].startswith('{"taker_buy_ratio_5": "null on all 4390')
    assert info.tags["optimism"] == run_tags(result)["optimism"]
    model = registry.load_alias(store, "flowless", "challenger")
    rows = frame.tail(40)
    expected = predict(result.booster, rows, result.feature_cols)
    np.testing.assert_allclose(
        model.predict(rows.with_columns(pl.lit(1e9).alias("taker_buy_ratio_5"))), expected
    )
    np.testing.assert_allclose(model.predict(rows.drop("taker_buy_ratio_5", "taker_buy_ratio_15")), expected)
    with pytest.raises(
        MissingFeatureError, match=r"version 1 \('challenger'\) learned from features \['rsi_14'\]"
    ):
        model.predict(rows.drop("rsi_14"))
