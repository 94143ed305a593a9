"""Baselines (reversal chosen on training, ridge), the paired HAC test, the gate against the best one."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from scipy import stats

from crypto_platform.ml.baselines import fit_reversal, fit_ridge
from crypto_platform.ml.evaluation import evaluate, skill_gate
from crypto_platform.ml.significance import hac_mean_test, observation_scores, paired_test

HORIZON = 5
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def ma_frame(theta: float, n: int = 20_000, *, seed: int = 1, gamma: float = 0.0) -> pl.DataFrame:
    """One instrument whose 1-minute log return is r_t = e_t - theta * e_(t-5) + gamma * c_(t-1).

    theta > 0 plants a reversal of the last 5 minutes' shocks (corr(ret_5, next 5-minute return) =
    -theta / (1 + theta^2) = -0.4 for 0.5; ret_1: -0.18, ret_15: -0.34); c is a signal known one
    minute ahead (column `signal`). Past returns ret_k and the 5-minute forward label as in gold.
    """
    rng = np.random.default_rng(seed)
    e = rng.normal(0, 1e-3, n + 5)
    c = rng.normal(0, 1e-3, n + 1)
    r = e[5:] - theta * e[:-5] + gamma * c[:-1]
    log_price = np.cumsum(r)
    df = pl.DataFrame(
        {
            "exchange": "sim",
            "symbol": "X/USD",
            "ts": pl.datetime_range(T0, T0 + timedelta(minutes=n - 1), "1m", eager=True, time_zone="UTC"),
            "lp": log_price,
            "signal": c[1:],
        }
    )
    return (
        df.with_columns(
            *[(pl.col("lp") - pl.col("lp").shift(k)).alias(f"ret_{k}") for k in (1, 5, 15)],
            (pl.col("lp").shift(-HORIZON) - pl.col("lp")).alias("label"),
        )
        .drop_nulls("label")
        .drop("lp")
    )


def test_reversal_sign_and_lookback_are_chosen_on_the_training_window() -> None:
    df = ma_frame(0.5)
    train, held = df.head(df.height // 2), df.tail(df.height // 2)
    rev = fit_reversal(train)
    assert (rev.sign, rev.lookback, rev.column) == (-1, 5, "ret_5")
    assert rev.describe().startswith("reversal: -ret_5 (training rank IC 0.39")
    real = train["label"].to_numpy()
    for (sign, k), ic in rev.candidates.items():  # every candidate scored like scipy does it
        past = train[f"ret_{k}"].fill_null(0.0).to_numpy()
        assert ic == pytest.approx(stats.spearmanr(sign * past, real).statistic, abs=1e-12)
    assert set(rev.candidates) == {(s, k) for s in (-1, 1) for k in (1, 5, 15)}
    assert rev.train_rank_ic == max(rev.candidates.values())
    # theory: Pearson -0.4 for ret_5, so Spearman ~ (6/pi) asin(0.2) = 0.384; ret_15 ~ 0.32, ret_1 ~ 0.17
    assert rev.train_rank_ic == pytest.approx(6 / math.pi * math.asin(0.2), abs=0.02)
    assert rev.candidates[(-1, 15)] < rev.train_rank_ic - 0.04
    np.testing.assert_array_equal(rev.predict(held), -held["ret_5"].to_numpy())

    # planted continuation: the same lookback with the other sign
    cont = fit_reversal(ma_frame(-0.5).head(df.height // 2))
    assert (cont.sign, cont.lookback) == (1, 5) and cont.describe().startswith("continuation: +ret_5")


def test_reversal_is_not_rechosen_on_the_evaluation_window() -> None:
    train = ma_frame(0.5, 10_000)  # reversal while training ...
    later = ma_frame(-0.5, 10_000, seed=2)  # ... continuation afterwards
    rev = fit_reversal(train)
    assert (rev.sign, rev.lookback) == (-1, 5)
    ev = evaluate(
        later,
        later["signal"].to_numpy(),
        horizon=HORIZON,
        momentum_col="ret_5",
        baselines={"reversal": rev.predict(later)},
        specs={"reversal": rev.describe()},
    )
    # scored as chosen: the reversal now loses exactly what momentum (= +ret_5) gains
    assert ev.baselines["reversal"].rank_ic == pytest.approx(-ev.momentum.rank_ic, abs=1e-12)
    assert ev.baselines["reversal"].rank_ic < -0.3
    with pytest.raises(ValueError, match=r"lacks columns \['ret_15'\]"):
        fit_reversal(train.drop("ret_15"))


def test_ridge_matches_the_closed_form_solution() -> None:
    rng = np.random.default_rng(7)
    n = 400
    x = rng.normal(size=(n, 3)) * [1.0, 5.0, 0.01] + [0.0, 2.0, -1.0]
    y = x @ [0.3, -0.1, 20.0] + rng.normal(scale=0.5, size=n)
    x_null = x.copy()
    x_null[::17, 1] = np.nan  # missing values are imputed with the training mean
    train = pl.DataFrame(
        {
            "a": x_null[:, 0],
            "b": x_null[:, 1],
            "c": x_null[:, 2],
            "const": np.full(n, 3.0),
            "empty": [None] * n,
            "label": y,
        },
        schema_overrides={"empty": pl.Float64},
    ).with_columns(pl.col("b").fill_nan(None))
    cols = ["a", "b", "const", "c", "empty"]
    alpha, q = 0.3, 0.01
    ridge = fit_ridge(train, cols, alpha=alpha, clip_quantile=q, center_target=False)
    assert ridge.features == ["a", "b", "c"] and ridge.dropped == ["const", "empty"]
    assert ridge.describe() == (
        "ridge (alpha 0.3) on 3 standardized features; dropped (null or constant in training): const, empty"
    )

    # independent closed form: standardize (population std over non-null), impute 0, clip, centre,
    # and solve the augmented least-squares system [Z; sqrt(n alpha) I] b = [y; 0]
    raw = x_null
    mean, sd = np.nanmean(raw, axis=0), np.nanstd(raw, axis=0)
    z = np.nan_to_num((raw - mean) / sd, nan=0.0)
    lo, hi = np.quantile(y, [q, 1 - q])
    yc = np.clip(y, lo, hi)
    aug_x = np.vstack([z, math.sqrt(n * alpha) * np.eye(3)])
    aug_y = np.r_[yc - yc.mean(), np.zeros(3)]
    coef = np.linalg.lstsq(aug_x, aug_y, rcond=None)[0]
    np.testing.assert_allclose(ridge.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(ridge.scale, sd, rtol=1e-12)
    np.testing.assert_allclose(ridge.coef, coef, rtol=1e-9)
    assert ridge.intercept == pytest.approx(yc.mean(), rel=1e-12)
    new = pl.DataFrame({"a": [1.0, None], "b": [2.0, 3.0], "c": [-1.0, -0.99], "const": [9.0, 9.0]})
    zn = np.nan_to_num((np.array([[1.0, 2.0, -1.0], [np.nan, 3.0, -0.99]]) - mean) / sd, nan=0.0)
    np.testing.assert_allclose(ridge.predict(new), yc.mean() + zn @ coef, rtol=1e-12)
    # centred like the LightGBM model by default: no fitted drift
    assert fit_ridge(train, cols, alpha=alpha, clip_quantile=q).intercept == 0.0
    with pytest.raises(ValueError, match="null or constant"):
        fit_ridge(train, ["const", "empty"])


def test_hac_test_against_a_hand_computation() -> None:
    d = np.array([1.0, 2.0, 0.0, 3.0, -1.0])
    # mean 1; deviations 0, 1, -1, 2, -2; sum of squares 10; lag-1 cross products 0 - 1 - 2 - 4 = -7;
    # lag-2 cross products 0*(-1) + 1*2 + (-1)*(-2) = 4
    mean, se, p = hac_mean_test(d, lag=1, kernel="bartlett")
    assert mean == 1.0
    assert se == pytest.approx(math.sqrt(10 + 2 * 0.5 * -7) / 5, rel=1e-12)  # Bartlett weight 1 - 1/2
    assert p == pytest.approx(stats.norm.sf(1 / (math.sqrt(3) / 5)), rel=1e-12)
    assert hac_mean_test(d, lag=0)[1] == pytest.approx(math.sqrt(10) / 5, rel=1e-12)
    assert hac_mean_test(d, lag=2, kernel="bartlett")[1] == pytest.approx(
        math.sqrt(10 + 2 * (2 / 3 * -7 + 1 / 3 * 4)) / 5, rel=1e-12
    )
    # Hansen-Hodrick (equal weights): lag 1 would be 10 - 14 < 0, so Bartlett's; lag 2 on another series
    assert hac_mean_test(d, lag=1)[1] == pytest.approx(math.sqrt(3) / 5, rel=1e-12)
    d2 = np.array([1.0, 3.0, 2.0, 0.0, -1.0, 1.0])  # mean 1; deviations 0, 2, 1, -1, -2, 0
    # squares 10; lag 1: 0 + 2 - 1 + 2 + 0 = 3; lag 2: 0 - 2 - 2 + 0 = -4 -> 10 + 2 * (3 - 4) = 8
    mean2, se2, p2 = hac_mean_test(d2, lag=2)
    assert (mean2, se2) == (1.0, pytest.approx(math.sqrt(8) / 6, rel=1e-12))
    assert p2 == pytest.approx(stats.norm.sf(6 / math.sqrt(8)), rel=1e-12)
    # rows at one time are one observation: per-time sums of deviations 1, 1, -2
    _, se_t, _ = hac_mean_test(d, np.array([0, 0, 1, 1, 2]), lag=1, kernel="bartlett")
    assert se_t == pytest.approx(math.sqrt(1 + 1 + 4 + 2 * 0.5 * (1 * 1 + 1 * -2)) / 5, rel=1e-12)
    assert hac_mean_test(d, np.array([0, 0, 1, 1, 2]), lag=1)[1] == pytest.approx(
        math.sqrt(6 + 2 * (1 - 2)) / 5, rel=1e-12
    )
    with pytest.raises(ValueError, match="kernel"):
        hac_mean_test(d, lag=1, kernel="parzen")  # type: ignore[arg-type]


def test_observation_scores_average_to_the_metrics() -> None:
    rng = np.random.default_rng(3)
    real = np.round(rng.normal(size=300), 1)  # ties and exact zeros
    pred = np.round(real + rng.normal(scale=2, size=300), 1)
    assert observation_scores(pred, real, "rank_ic").mean() == pytest.approx(
        stats.spearmanr(pred, real).statistic, abs=1e-12
    )
    assert np.all(observation_scores(np.zeros(300), real, "rank_ic") == 0)
    moved = real != 0
    hits = (np.sign(pred) == np.sign(real))[moved & (pred != 0)]
    no_call = (moved & (pred == 0)).sum()
    assert np.nanmean(observation_scores(pred, real, "hit_rate")) == pytest.approx(
        (hits.sum() + 0.5 * no_call) / moved.sum(), abs=1e-12
    )
    assert -observation_scores(pred, real, "mae").mean() == pytest.approx(np.abs(pred - real).mean())
    t = paired_test(pred, np.zeros(300), real, np.arange(300), metric="mae", lag=0)
    assert t.advantage == pytest.approx(np.abs(real).mean() - np.abs(pred - real).mean(), abs=1e-12)


def _gate_on(model: np.ndarray, train: pl.DataFrame, held: pl.DataFrame):
    rev = fit_reversal(train)
    ev = evaluate(
        held,
        model,
        horizon=HORIZON,
        momentum_col="ret_5",
        baselines={"reversal": rev.predict(held)},
        specs={"reversal": rev.describe()},
    )
    best = ev.best_baseline("rank_ic")
    return ev, best, skill_gate(ev.model, ev.momentum, None, baselines=best)


def test_gate_rejects_a_model_that_only_matches_the_reversal_and_accepts_one_that_beats_it() -> None:
    df = ma_frame(0.5, gamma=0.5)
    train, held = df.head(df.height // 2), df.tail(df.height // 2)
    real = held["label"].to_numpy()

    # the reversal itself, barely perturbed: high IC, significant hit rate, but no edge over the baseline
    copy = -held["ret_5"].to_numpy() + np.random.default_rng(0).normal(scale=1e-7, size=held.height)
    ev, best, decision = _gate_on(copy, train, held)
    assert best.baseline == "reversal" and best.spec.startswith("reversal: -ret_5")
    assert ev.model.rank_ic > 0.3 and ev.model.hit_p_value < 1e-6  # the old gate would promote it
    assert not decision.promote
    assert [r[:4] for r in decision.reasons] == ["PASS", "FAIL", "PASS", "PASS"]
    assert (
        decision.reasons[1].startswith("FAIL rank_ic ")
        and "best baseline, reversal (reversal: -ret_5" in (decision.reasons[1])
    )
    assert abs(best.advantage) < 0.01 and best.p_value > 0.05

    # planted extra signal (known one minute ahead): beats the reversal significantly
    better = -held["ret_5"].to_numpy() + 2.0 * held["signal"].to_numpy()
    ev, best, decision = _gate_on(better, train, held)
    assert decision.promote, decision.reasons
    assert best.baseline == "reversal"
    reversal_ic = stats.spearmanr(-held["ret_5"].to_numpy(), real).statistic
    model_ic = stats.spearmanr(better, real).statistic
    assert best.advantage == pytest.approx(model_ic - reversal_ic, abs=1e-12) and best.advantage > 0.03
    assert best.p_value < 1e-4 and best.lag == HORIZON - 1 and best.n_times == held.height
    assert f"by {best.advantage:.4g}: one-sided HAC p {best.p_value:.4g} < 0.05" in decision.reasons[1]

    # one row per baseline, with the model's advantage over each on the primary metric
    table = ev.table()
    assert table["forecast"].to_list() == ["model", "zero", "momentum", "reversal"]
    row = table.filter(pl.col("forecast") == "zero").row(0, named=True)
    assert row["model_advantage"] == pytest.approx(model_ic, abs=1e-12)  # a constant ranks nothing: IC 0
    assert table["model_advantage"][0] is None and table["spec"][1] == "0 (no move)"
    with pytest.raises(ValueError, match="primary metric"):
        skill_gate(ev.model, ev.momentum, None, "mae", baselines=best)


def test_train_fits_the_baselines_on_the_development_span_only() -> None:
    from crypto_platform.ml.training import train
    from crypto_platform.transforms.features import FEATURE_COLUMNS
    from crypto_platform_tests.fixtures import FAST, planted_frame

    frame = planted_frame(3000)
    result = train(frame, FEATURE_COLUMNS, horizon=HORIZON, **FAST)
    ev = result.evaluation
    assert list(ev.forecasts()) == ["model", "zero", "momentum", "reversal", "ridge"]
    dev = frame.filter(pl.col("ts") <= result.train_end)
    hold = frame.filter(pl.col("ts") >= result.holdout_start)
    # both the model and ridge see the features usable on the development span (empty_frac_60 is 0 there)
    assert list(result.dropped_features) == ["empty_frac_60"]
    rev, ridge = fit_reversal(dev), fit_ridge(dev, result.feature_cols)
    assert ev.specs["reversal"] == rev.describe() and ev.specs["ridge"] == ridge.describe()
    real = hold["label"].to_numpy()
    assert ev.baselines["reversal"].rank_ic == pytest.approx(
        stats.spearmanr(rev.predict(hold), real).statistic, abs=1e-12
    )
    assert ev.baselines["ridge"].mae == pytest.approx(np.abs(ridge.predict(hold) - real).mean(), rel=1e-12)
    assert set(ev.tests) == {"rank_ic", "hit_rate", "mae", "rmse"}
    best = ev.best_baseline("mae")
    assert best.baseline_value == min(m.mae for k, m in ev.forecasts().items() if k != "model")
    assert ev.table("mae")["advantage_metric"].to_list() == [None, "mae", "mae", "mae", "mae"]
