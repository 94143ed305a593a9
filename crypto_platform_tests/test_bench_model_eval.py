"""bench.model_eval: the figures derived from what the platform recorded, and the report's rendering.

The measurement itself drives the platform on a month of FTX candles in its own temporary project
(its universe is fixed at import, so it cannot share this test process); see bench/README.md.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
from scipy import stats

from bench.model_eval import Options, render
from bench.model_eval.figures import (
    Bin,
    ControlFigures,
    DayIC,
    Evaluation,
    Fold,
    Importance,
    Result,
    SecondRun,
    SeedRow,
    Silver,
    daily_ic,
    evaluation_of,
    full_day_ics,
    metrics_of,
)
from crypto_platform.ml.evaluation import METRIC_NAMES, ForecastMetrics

MODEL = ForecastMetrics(9006, 0.0014688, 0.0022387, 0.5292, 0.5002, 8930, 0.0078, 2.27e-08, 0.0564)
ZERO = ForecastMetrics(9006, 0.0014703, 0.0022422, math.nan, 0.5, 0, 1.0, 1.0, math.nan)
MOMENTUM = ForecastMetrics(9006, 0.0021835, 0.0032034, 0.4863, 0.5001, 8856, 0.8847, 0.9954, -0.0380)


def test_daily_rank_ic_matches_scipy_per_day() -> None:
    rng = np.random.default_rng(5)
    ts = [datetime(2022, 1, 30, 22, tzinfo=UTC) + timedelta(minutes=i) for i in range(240)]
    label = rng.normal(size=240)
    holdout = pl.DataFrame(
        {
            "ts": ts,
            "prediction": label + rng.normal(size=240),
            "label": label,
            "momentum": rng.normal(size=240),
        }
    )
    days = daily_ic(holdout)
    assert [(d.day, d.n) for d in days] == [(date(2022, 1, 30), 120), (date(2022, 1, 31), 120)]
    for d, part in zip(days, (slice(0, 120), slice(120, 240)), strict=True):
        want_model = stats.spearmanr(holdout["prediction"][part], label[part]).statistic
        want_mom = stats.spearmanr(holdout["momentum"][part], label[part]).statistic
        assert (d.model, d.momentum) == pytest.approx((want_model, want_mom), rel=1e-12)
    partial, full = DayIC(date(2022, 1, 1), 299, 0.1, 0.0), DayIC(date(2022, 1, 2), 300, -0.2, 0.0)
    assert full_day_ics([partial, full]) == [-0.2]


def test_metrics_are_read_from_evaluation_rows() -> None:
    row = {"forecast": "model", **{k: float(getattr(MODEL, k)) for k in METRIC_NAMES}}
    zero = {"forecast": "zero", **{k: float(getattr(ZERO, k)) for k in METRIC_NAMES}, "rank_ic": None}
    evals = pl.DataFrame([row, zero])
    assert metrics_of(evals, "model") == MODEL
    got = metrics_of(evals, "zero")
    assert got is not None and math.isnan(got.rank_ic) and got.n_directional == 0
    assert metrics_of(evals, "champion") is None


def _evaluation() -> Evaluation:
    params = {
        "horizon": "5",
        "seed": "42",
        "n_trials": "20",
        "gap_minutes": "5",
        "num_boost_round": "10",
        "center_target": "True",
        "train_start": "2021-12-31 23:01:00+00:00",
        "train_end": "2022-01-25 23:15:00+00:00",
        "eval_window_start": "2022-01-25 23:21:00+00:00",
        "eval_window_end": "2022-02-01 05:26:00+00:00",
    }
    fold = Fold(
        1,
        "2021-12-31T23:01:00",
        "2022-01-05T22:58:00",
        7198,
        "2022-01-05T23:04",
        "2022-01-10T23:06",
        7203,
        0.0394,
    )
    reasons = ["PASS rank IC 0.05642 > 0", "PASS no current champion to beat"]
    return Evaluation(
        *(MODEL, ZERO, MOMENTUM, params, 35, 36_015, 9_006, 14, True, "champion", reasons, 10, 0.0714),
        best_params={"learning_rate": 0.15672, "num_leaves": 6},
        folds=[fold],
    )


def _result() -> Result:
    second = SecondRun(
        "2", "2022-01-25 23:21 .. 2022-02-01 05:26", "champion", "promoted to champion", MODEL, MODEL, []
    )
    controls = ControlFigures(
        same_seed=MODEL,
        shuffled_cv=0.0143,
        shuffled=ForecastMetrics(9006, 0.0015, 0.0022, 0.5032, 0.5005, 8900, 0.415, 0.01, -0.0059),
        shuffled_promote=False,
        shuffled_reasons=["FAIL rank IC -0.005876 > 0"],
        seeds=[SeedRow(1, 0.0595, MODEL, True), SeedRow(5, 0.0711, MOMENTUM, False)],
    )
    quintiles = [Bin(1, 1802, -1.19, -0.13, 1.48, 0.497), Bin(2, 1801, 0.9, 0.79, 1.23, 0.539)]
    return Result(
        options=Options(),
        generated_at=datetime(2026, 11, 23, 15, 30, tzinfo=UTC),
        python="3.11.7",
        cpus=2,
        timings={"controls (direct train calls)": 26.0, "total": 59.2},
        silver=Silver(
            45_031, datetime(2021, 12, 31, 23, 1), datetime(2022, 2, 1, 5, 31), 0, "import:x", 0, 0, 0, 33
        ),
        training_set={
            "window_days": 32.0,
            "horizon_minutes": 5,
            "rows": 45_026,
            "time_from": "2021-12-31T23:01:00",
            "time_to": "2022-02-01T05:26:00",
        },
        n_features=33,
        lookback_minutes=138,
        evaluation=_evaluation(),
        quintiles=quintiles,
        daily=[
            DayIC(date(2022, 1, 25), 39, 0.4186, -0.4243),
            DayIC(date(2022, 1, 26), 1440, 0.0086, -0.0806),
        ],
        n_distinct_forecasts=392,
        importance=[Importance("atr_14", 0.001381, 0.146, 7), Importance("ret_1", 0.0, 0.0, 0)],
        second=second,
        controls=controls,
        model_name="crypto_return_lgbm",
        version="1",
        mlflow_check="`models:/crypto_return_lgbm/1` loaded back.",
        artifacts=["gate.json", "evaluation.csv"],
    )


def test_render_reports_the_figures() -> None:
    md = render(_result())
    lines = md.splitlines()
    assert lines[0] == "# Model evaluation: 5-minute return forecaster, FTX BTC-PERP, January 2022"
    assert (
        "| model | 9,006 | 14.688 | 22.387 | 0.5292 | 0.5002 | 8,930 | 0.0078 | 2.27e-08 | 0.0564 |" in lines
    )
    assert "| zero | 9,006 | 14.703 | 22.422 | n/a | 0.5000 | 0 | 1.0000 | 1.0000 | n/a |" in lines
    assert (
        "| momentum (5 min) | 9,006 | 21.835 | 32.034 | 0.4863 | 0.5001 | 8,856 | 0.8847 | 0.9954 | -0.0380 |"
        in lines
    )
    assert "| 1 | 12-31 23:01 – 01-05 22:58 | 7,198 | 01-05 23:04 – 01-10 23:06 | 7,203 | 0.0394 |" in lines
    assert "| Q1 | 1,802 | -1.19 | -0.13 | 1.48 | 0.497 |" in lines
    assert "| 42 (gold/model) | 0.0714 | 0.0564 | 0.5292 | 0.0078 | yes |" in lines
    assert "| 5 | 0.0711 | -0.0380 | 0.4863 | 0.8847 | no |" in lines
    assert "| 2022-01-25 | 39 | 0.4186 | -0.4243 |" in lines
    assert "| 1 | `atr_14` | 0.001381 | 14.6% | 7 |" in lines
    assert "Never used (0 splits): `ret_1`." in lines
    assert "other seeds promote 1/2; holdout rank IC > 0 on 1/1 full days." in md
    assert "MAE: model 14.688 bp vs zero forecast 14.703 bp (-0.10%); RMSE 22.387 vs 22.422 bp." in md
    assert "The same call with seed 42 reproduces gold/model's holdout rank IC (0.0564 vs 0.0564)." in md
    assert (
        "best trial #10 with mean CV rank IC 0.0714. Best parameters: learning_rate=0.1567, num_leaves=6;"
        in md
    )
    # top minus bottom quintile: 0.79 - (-0.13) bp, s.e. sqrt(1.48² + 1.23²)
    assert "is +0.92 bp (s.e. ≈ 1.92 bp) and it is monotonic across the bins" in md
    assert "the holdout is ~6.3 days" in md and "≈ 0.024." in md
    assert lines[-1] == "Timings: controls (direct train calls) 26.0 s, total 59.2 s."


def test_a_missing_baseline_row_is_named() -> None:
    row = {"forecast": "model", "model_version": 3, **{k: float(getattr(MODEL, k)) for k in METRIC_NAMES}}
    run = SimpleNamespace(evals=pl.DataFrame([row]), gate={})
    with pytest.raises(RuntimeError, match=r"no 'zero' row \(version \[3\]\)"):
        evaluation_of(run)
