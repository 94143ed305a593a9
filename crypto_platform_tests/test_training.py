"""Training, evaluation and the skill gate: planted predictability is found and promoted, noise is not."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import polars as pl
import pytest
from scipy import stats

from crypto_platform.ml.evaluation import (
    ForecastMetrics,
    evaluate,
    forecast_metrics,
    skill_gate,
)
from crypto_platform.ml.training import TrainResult, predict, train
from crypto_platform.transforms.features import FEATURE_COLUMNS
from crypto_platform_tests.fixtures import FAST, HORIZON, planted_frame


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    return planted_frame()


@pytest.fixture(scope="module")
def planted(frame: pl.DataFrame) -> TrainResult:
    return train(frame, FEATURE_COLUMNS, horizon=HORIZON, **FAST)


@pytest.mark.slow
def test_planted_predictability_is_found_and_promoted(planted: TrainResult) -> None:
    ev = planted.evaluation
    assert ev.model.rank_ic > 0.2
    assert ev.model.rank_ic > ev.momentum.rank_ic
    assert ev.model.hit_rate > 0.55 and ev.model.hit_p_value < 1e-6
    top = ev.importance["feature"].head(3).to_list()
    assert any(f.startswith("taker_buy_ratio") for f in top), top
    decision = skill_gate(ev.model, ev.momentum, None)
    assert decision.promote, decision.reasons
    assert all(r.startswith("PASS") for r in decision.reasons)


@pytest.mark.slow
def test_shuffled_labels_are_not_promoted(frame: pl.DataFrame) -> None:
    shuffled = frame.with_columns(pl.col("label").shuffle(seed=99))
    result = train(shuffled, FEATURE_COLUMNS, horizon=HORIZON, **FAST)
    ev = result.evaluation
    decision = skill_gate(ev.model, ev.momentum, None)
    assert not decision.promote, decision.reasons
    assert any(r.startswith("FAIL") for r in decision.reasons)
    # a real forecast (not a constant, whose rank IC is undefined) with no rank correlation to speak of
    assert result.holdout["prediction"].n_unique() > 100
    assert math.isfinite(ev.model.rank_ic) and abs(ev.model.rank_ic) < 0.1


@pytest.mark.slow
def test_train_result_shape_and_purged_time_split(planted: TrainResult, frame: pl.DataFrame) -> None:
    gap = timedelta(minutes=planted.gap_minutes)
    assert planted.gap_minutes >= HORIZON
    assert planted.holdout_start - planted.train_end > gap  # development labels end before holdout
    assert len(planted.cv_scores) == len(planted.folds) == FAST["n_folds"]
    for fold in planted.folds:
        assert fold["val_start"] - fold["train_end"] > gap
        assert fold["train_start"] == planted.train_start
    assert [f["val_start"] for f in planted.folds] == sorted(f["val_start"] for f in planted.folds)
    assert planted.n_trials == FAST["n_trials"]
    assert planted.best_value == pytest.approx(float(np.mean(planted.cv_scores)))
    assert {"learning_rate", "num_leaves", "num_threads"} <= set(planted.best_params)
    assert planted.holdout.columns == ["exchange", "symbol", "ts", "label", "prediction", "momentum"]
    assert planted.holdout.height == planted.n_holdout
    hold = frame.filter(pl.col("ts") >= planted.holdout_start)
    assert np.allclose(
        predict(planted.booster, hold, planted.feature_cols), planted.holdout["prediction"].to_numpy()
    )
    # no training row within the gap before the holdout
    n_between = frame.filter(
        (pl.col("ts") > planted.train_end) & (pl.col("ts") < planted.holdout_start)
    ).height
    assert n_between == 2 * planted.gap_minutes  # two instruments x gap minutes purged


@pytest.mark.slow
def test_same_seed_same_model(frame: pl.DataFrame) -> None:
    small = frame.head(6000)
    a = train(small, FEATURE_COLUMNS, horizon=HORIZON, n_trials=3, n_folds=2, seed=1)
    b = train(small, FEATURE_COLUMNS, horizon=HORIZON, n_trials=3, n_folds=2, seed=1)
    assert a.best_params == b.best_params
    assert a.holdout["prediction"].equals(b.holdout["prediction"])


def test_forecast_metrics_against_hand_computation() -> None:
    real = np.array([0.01, -0.02, 0.0, 0.03, -0.01, 0.02])
    pred = np.array([0.02, -0.01, 0.01, -0.01, 0.0, 0.01])
    m = forecast_metrics(pred, real)
    assert m.n == 6
    assert m.mae == pytest.approx(np.mean(np.abs(pred - real)))
    assert m.rmse == pytest.approx(np.sqrt(np.mean((pred - real) ** 2)))
    # directional rows: both non-zero -> indices 0, 1, 3, 5 ; hits at 0, 1, 5
    assert m.n_directional == 4 and m.hit_rate == pytest.approx(0.75)
    assert m.hit_p_value == pytest.approx(stats.binomtest(3, 4, 0.5, alternative="greater").pvalue)
    assert m.rank_ic == pytest.approx(stats.spearmanr(pred, real).statistic)
    # a forecast that always says "up" in a rising window: high hit rate, no skill
    drift_real = np.r_[np.full(60, 0.01), np.full(40, -0.01)]
    always_up = forecast_metrics(np.full(100, 0.001), drift_real)
    assert always_up.hit_rate == pytest.approx(0.6) and always_up.hit_rate_null == pytest.approx(0.6)
    assert always_up.hit_p_value > 0.5
    zero = forecast_metrics(np.zeros(6), real)
    assert math.isnan(zero.rank_ic) and math.isnan(zero.hit_rate) and zero.hit_p_value == 1.0
    # overlapping labels shrink the effective sample: a weaker p-value than the naive one
    big_real = np.random.default_rng(0).normal(size=2000)
    big_pred = big_real + np.random.default_rng(1).normal(scale=8, size=2000)
    adj = forecast_metrics(big_pred, big_real, overlap=5)
    assert adj.hit_p_value > adj.hit_p_value_naive


@pytest.mark.slow
def test_evaluate_uses_both_baselines(planted: TrainResult) -> None:
    hold = planted.holdout.rename({"momentum": "mom"})
    rep = evaluate(hold, hold["prediction"].to_numpy(), horizon=HORIZON, momentum_col="mom")
    assert rep.model == planted.evaluation.model
    assert rep.zero.mae == pytest.approx(float(hold["label"].abs().mean()))
    assert rep.momentum.rank_ic == pytest.approx(stats.spearmanr(hold["mom"], hold["label"]).statistic)
    table = rep.table()
    assert table["forecast"].to_list() == ["model", "zero", "momentum"]
    assert rep.window_start == planted.holdout_start and rep.window_end == planted.holdout_end


def _metrics(ic: float, hit: float, p: float) -> ForecastMetrics:
    return ForecastMetrics(
        n=1000,
        mae=0.001,
        rmse=0.002,
        hit_rate=hit,
        hit_rate_null=0.5,
        n_directional=900,
        hit_p_value=p,
        hit_p_value_naive=p,
        rank_ic=ic,
    )


def test_skill_gate_rules() -> None:
    good, momentum = _metrics(0.05, 0.53, 0.01), _metrics(0.01, 0.5, 0.5)
    assert skill_gate(good, momentum, None).promote
    assert not skill_gate(_metrics(-0.01, 0.53, 0.01), momentum, None).promote  # IC not > 0
    assert not skill_gate(good, _metrics(0.06, 0.52, 0.01), None).promote  # momentum better
    assert not skill_gate(_metrics(0.05, 0.51, 0.2), momentum, None).promote  # hit rate not significant
    assert not skill_gate(good, momentum, _metrics(0.07, 0.55, 0.001)).promote  # champion better
    beats = skill_gate(good, momentum, _metrics(0.03, 0.55, 0.001))
    assert beats.promote and "champion" in beats.reasons[-1]
    by_mae = skill_gate(good, momentum, _metrics(0.07, 0.55, 0.001), primary="mae")
    assert not by_mae.promote  # equal MAE is not better
    with pytest.raises(ValueError, match="primary"):
        skill_gate(good, momentum, None, primary="sharpe")  # type: ignore[arg-type]


def test_an_incomparable_champion_is_not_beaten_unless_replacing_it_is_allowed() -> None:
    good, momentum = _metrics(0.05, 0.53, 0.01), _metrics(0.01, 0.5, 0.5)
    why = "v3 forecasts 15-minute returns, this model 5-minute ones"
    kept = skill_gate(good, momentum, None, incomparable_champion=why)
    assert not kept.promote
    assert kept.reasons[-1].startswith("FAIL current champion not comparable (v3 forecasts 15-minute")
    assert "replace_incomparable_champion" in kept.reasons[-1]
    assert all(r.startswith("PASS") for r in kept.reasons[:-1])  # only the champion check fails
    replaced = skill_gate(good, momentum, None, incomparable_champion=why, replace_incomparable=True)
    assert replaced.promote and replaced.reasons[-1].startswith("PASS current champion not comparable")
    # the flag never rescues a model without skill, and a comparable champion is still to be beaten
    weak = _metrics(-0.01, 0.53, 0.01)
    assert not skill_gate(weak, momentum, None, incomparable_champion=why, replace_incomparable=True).promote
    better = _metrics(0.07, 0.55, 0.001)
    assert not skill_gate(good, momentum, better, replace_incomparable=True).promote


def test_too_little_data_or_missing_momentum_is_a_clear_error(frame: pl.DataFrame) -> None:
    with pytest.raises(ValueError, match="too few"):
        train(frame.head(300), FEATURE_COLUMNS, horizon=HORIZON, n_trials=1)
    with pytest.raises(ValueError, match="momentum"):
        train(frame, FEATURE_COLUMNS, horizon=7, n_trials=1)


@pytest.mark.slow
def test_calibration_bins_are_equal_count_by_rank_even_with_tied_forecasts(planted: TrainResult) -> None:
    from crypto_platform.ml.calibration import bins_markdown, calibration_png, rank_bins

    # A shallow model's forecast takes few values; bins by value would be lopsided or missing.
    hold = planted.holdout.with_columns((pl.col("prediction") * 1e4).round(0) / 1e4)
    assert hold["prediction"].n_unique() < hold.height / 10
    bins = rank_bins(hold, 10, overlap=HORIZON)
    sizes = bins["n"].to_list()
    assert bins["bin"].to_list() == list(range(1, 11)) and sum(sizes) == hold.height
    assert max(sizes) - min(sizes) <= 1
    assert bins["predicted_bp"].is_sorted()  # bins follow the forecast's order
    first = hold.sort("prediction", maintain_order=True).head(sizes[0])
    assert bins["realized_bp"][0] == pytest.approx(first["label"].mean() * 1e4)
    naive = rank_bins(hold, 10)["realized_se_bp"]
    assert bins["realized_se_bp"].to_numpy() == pytest.approx(naive.to_numpy() * math.sqrt(HORIZON))
    table = bins_markdown(bins, label="decile")
    assert table.count("\n| D") == 10 and "| D01 |" in table and "| D10 |" in table
    png = calibration_png(hold, bins)
    assert png is not None and png.startswith(b"\x89PNG") and len(png) < 100_000
    with pytest.raises(ValueError, match="too few"):
        rank_bins(hold.head(5), 10)
