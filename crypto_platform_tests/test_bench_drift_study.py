"""bench.drift_study: alarm rates, the sections' figures on ten days of real candles, and the report."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

import duckdb
import polars as pl
import pytest

from bench.drift_study import render
from bench.drift_study.data import DEFAULT, FTX_FILE, KRAKEN_FILE, LIQUID_EMPTY_FRAC, full_days, with_features
from bench.drift_study.gx import GxTiming
from bench.drift_study.kraken import Flatness, KrakenCheck, KrakenFeature, flatness
from bench.drift_study.measurement import (
    Candidate,
    Candidates,
    DefaultRow,
    GridRow,
    Inputs,
    PredictionDrift,
    Result,
    SelfCheck,
    SkillCheck,
    false_alarms,
    inputs,
    self_check,
)
from bench.drift_study.prediction import Detection, PredictionCalibration, PredictionDay
from bench.drift_study.skill import SkillDay, SkillSummary
from bench.drift_study.stats import FeatureRow, Stat, Study
from crypto_platform.monitoring.drift import DriftThresholds, Severity
from crypto_platform.monitoring.drift_calibration import Calibration
from crypto_platform.transforms.ohlcv_import import read_ftx_csv, read_kraken_ohlcvt

D = [date(2022, 1, d) for d in range(10, 14)]


def test_alarm_rates_are_shares_of_days_with_any_feature_over_a_threshold() -> None:
    s = Study(
        D,
        [
            Stat(D[0], "a", 0.35, 0.05),  # a: PSI error on day 0
            Stat(D[0], "b", 0.25, 0.05),
            Stat(D[1], "a", 0.05, 0.16),  # a: D warn on day 1
            Stat(D[2], "b", 0.21, 0.21),  # b: error (both) on day 2
            Stat(D[3], "a", 0.01, 0.01),
        ],
    )
    assert s.rate(["a"], 0.3, None) == 0.25
    assert s.rate(["a", "b"], 0.2, None) == 0.5
    assert s.rate(["a", "b"], None, 0.15) == 0.5
    assert s.rate(["c"], 0.0, 0.0) == 0.0
    assert s.warn_error(["a", "b"], DEFAULT) == (0.75, 0.5)  # WARN PSI .2 / D .15; ERROR PSI .3 / D .2
    (a,) = s.per_feature(["a", "c"], DEFAULT)
    assert (a.feature, a.psi_median, a.psi_max, a.ks_max) == ("a", 0.05, 0.35, 0.16)
    assert (a.psi_over_01, a.psi_over_error, a.ks_over_warn) == (0.25, 0.25, 0.25)
    assert math.isnan(Study([], []).rate(["a"], 0.1, None))


def test_full_days_need_a_complete_history() -> None:
    minutes = [datetime(2022, 1, 1, tzinfo=UTC) + timedelta(minutes=i) for i in range(4 * 1440 - 1)]
    df = pl.DataFrame({"ts": minutes}).with_columns(pl.col("ts").dt.date().alias("day"))
    assert full_days(df, history=0) == [date(2022, 1, d) for d in (1, 2, 3)]  # the 4th misses a minute
    assert full_days(df, history=2) == [date(2022, 1, 3)]


@pytest.fixture(scope="module")
def ten_days() -> Inputs:
    """FTX 1-10 January 2022 and Kraken 1-10 January 2023, real candles."""
    ftx = read_ftx_csv(FTX_FILE).filter(pl.col("ts") < datetime(2022, 1, 11, tzinfo=UTC))
    kraken = read_kraken_ohlcvt(KRAKEN_FILE, symbol="BTC/USDC")
    kraken = kraken.filter(pl.col("ts") < datetime(2023, 1, 11, tzinfo=UTC))
    return inputs(with_features(ftx, kraken))


def test_false_alarm_rates_on_real_days_match_a_duckdb_count(ten_days: Inputs) -> None:
    fa = false_alarms(ten_days)
    assert fa.jan_study.days == ten_days.jan == [date(2022, 1, d) for d in (8, 9, 10)]
    con = duckdb.connect()
    con.register("stats", pl.DataFrame([s.__dict__ for s in fa.jan_study.stats]).to_arrow())
    chosen = ten_days.chosen
    (n_fired,) = con.execute(
        "select count(distinct day) from stats where list_contains(?, feature) and (psi >= ? or ks >= ?)",
        [chosen, DEFAULT.psi_warn, DEFAULT.ks_warn],
    ).fetchone()
    chosen_row = next(r for r in fa.defaults if r.feature_set == "**chosen: drift.DRIFT_FEATURES**")
    assert chosen_row.ftx[0] == n_fired / len(ten_days.jan)
    naive = next(g for g in fa.grid if g.feature_set == "naive: all features" and g.market.startswith("FTX"))
    assert len(naive.rates) == 6 and all(0.0 <= x <= 1.0 for pair in naive.rates for x in pair)
    # a superset of features alarms at least as often
    assert naive.rates[0][0] >= fa.jan_study.rate(chosen, 0.1, None)


def test_reference_against_itself_is_ok(ten_days: Inputs) -> None:
    sc = self_check(ten_days)
    assert sc.severity == "OK" and sc.max_statistic < 1e-12


def test_flatness_matches_duckdb(ten_days: Inputs) -> None:
    k_liquid = ten_days.kraken_f.filter(pl.col("empty_frac_60") <= LIQUID_EMPTY_FRAC)
    fl = flatness(ten_days, k_liquid)
    con = duckdb.connect()
    con.register("kf", ten_days.kraken_f.select("ts", "zret_1", "empty_frac_60", "stoch_15").to_arrow())
    con.register("kc", ten_days.kraken.select("ts", "is_empty").to_arrow())
    liquid, zero = con.execute(
        "select count(*) filter (where empty_frac_60 <= ?), avg((zret_1 = 0)::int) from kf",
        [LIQUID_EMPTY_FRAC],
    ).fetchone()
    (mid,) = con.execute(
        "select avg((abs(stoch_15 - 0.5) <= 1e-9)::int) from kc join kf using (ts) where kc.is_empty"
    ).fetchone()
    (empty,) = con.execute("select avg(is_empty::int) from kc").fetchone()
    assert fl.k_liquid_rows == liquid and fl.k_liquid_share == liquid / ten_days.kraken_f.height
    assert (fl.k_zero, fl.stoch_mid_empty, fl.k_empty) == pytest.approx((zero, mid, empty), rel=1e-12)
    assert fl.ftx_empty == 0.0  # FTX has no empty minutes


def _result() -> Result:
    flat = Flatness(0.001, 0.6, 0.75, 0.2, 25_924, 0.02, 0.0, 0.56)
    kraken = KrakenCheck(
        *("ERROR", 1.34, "WARN", 0.21, 90, 88, 90, 60, 30, 5),
        features=[KrakenFeature("zret_1", "alarm", "ERROR", 1.34, 0.3, 80, 90, "WARN", 0.21, None, "")],
        flat=flat,
    )
    cands = [
        Candidate(
            "textbook PSI 0.1 / 0.25, D 0.1 / 0.2", False, (0.5, 0.0), (0.36, 0.1), 1.0, [(0.9, 0.5)] * 3
        ),
        Candidate(
            "PSI 0.2 / 0.3, D 0.15 / 0.2",
            True,
            (0.0, 0.0),
            (0.06, 0.01),
            0.9,
            [(0.4, 0.2), (1.0, 1.0), (0, 0)],
        ),
    ]
    skill_day = SkillDay(date(2022, 1, 20), 1435, 0.05, 0.52, False, True)
    return Result(
        runtime_s=35.2,
        features_s=0.31,
        jan_days=[date(2022, 1, 8), date(2022, 1, 31)],
        kraken_days=83,
        unjudged=["taker_buy_ratio_15"],
        zret60=0.38,
        grid=[GridRow("naive: all features", "FTX Jan 2022", [(1.0, 1.0)] * 6)],
        defaults=[
            DefaultRow("naive: all features", (1.0, 1.0), (1.0, 1.0)),
            DefaultRow("chosen", (0, 0), (0.06, 0.01)),
        ],
        jan_features=[FeatureRow("zret_1", "alarm", 0.05, 0.12, 0.04, 0.0, 0.03, 0.06, 0.0)],
        kraken_features=[],
        self_check=SelfCheck("OK", 0.0, 0, 0),
        kraken=kraken,
        candidates=Candidates(cands, 12, (0.5, 0.25)),
        predictions=[PredictionDrift("raw `predicted_return`", 0.35, 1.2, 0.8, 0.5)],
        skill=SkillCheck(
            [SkillSummary("model, holdout 50%", 13, 0.05, -0.01, 1, 0.52, 1, 1)],
            ["x"],
            [skill_day],
            1,
            13,
            3,
            13,
        ),
        calibrated=PredictionCalibration(
            "trained 12-31 23:01 – 01-16 14:08",
            Calibration(DriftThresholds(0.31, 0.94, 0.15, 0.2), 16, 0.31, 0.75, 0.14, 0.16, "calibrated"),
            [
                PredictionDay(date(2022, 1, 23), 0.05, 0.52, True, 0.4, 0.13, Severity.ERROR, Severity.WARN),
                PredictionDay(date(2022, 1, 24), 0.04, 0.51, True, 0.1, 0.05, Severity.OK, Severity.OK),
            ],
            [("2022-01-06", 0.37, 0.13), ("2022-01-16", 0.75, 0.16)],
            [Detection("forecast + 0.5 reference SD", 0.9, 0.85, 1.0)],
        ),
        gx_cold_s=3.21,
        gx=[GxTiming("validate_candles, one FTX day", 1440, 0.0123, True)],
    )


def test_render_reports_the_figures() -> None:
    md = render(_result())
    lines = md.splitlines()
    assert lines[0] == "# Monitoring: what drift means here, thresholds, measured false alarms"
    assert "Generated by `uv run --frozen python -m bench.drift_study` in 35 s (features" in lines
    assert "| naive: all features | FTX Jan 2022 | 100% / 100% | 100% / 100% | 100% / 100% |" in md
    assert "| `zret_1` | alarm | 0.050 | 0.120 | 4% | 0% | 0.030 | 0.060 | 0% |" in lines
    assert "| `zret_1` | alarm | ERROR | 1.340 | 0.300 | 80 / 90 | WARN | 0.210 | - |  |" in lines
    assert (
        "| **PSI 0.2 / 0.3, D 0.15 / 0.2** (default) | 0% / 0% | 6% / 1% | 90% | 40% / 20% | 100% / 100% |"
        in md
    )
    assert "| raw `predicted_return` | 0.350 | 1.200 | 80% | 50% |" in lines
    assert "| model, holdout 50% | 13 | 0.0500 | -0.0100 | 1 | 0.520 | 1 | **1 / 13** (8%) |" in lines
    assert "| 2022-01-20 | 1,435 | 0.0500 | 0.520 | ok |" in lines
    assert "| first call: import GX, build context + suites |  | 3.21 s |  |" in lines
    assert "| validate_candles, one FTX day | 1,440 | 12 ms | pass |" in lines
    assert "naive PSI/KS on all features is ERROR on\n  100% of January days." in md
    assert "WARN on\n0%, ERROR on 0% of 2 days" in md
    assert "The\ntextbook PSI 0.1 / 0.25 would WARN on 36% of the illiquid market's days" in md
    assert "(default) still" not in md and "still flags the regime change on 90% of days" in md
    assert "~31% (rule of three, 95%, exact for 0 firings)" in md  # (1 + 3) / 13
    assert "feature thresholds ERROR on 1 / 2 (50%), ≥ WARN on 1;\ncalibrated ERROR on 0 / 2 (0%)" in md
    assert "| 2022-01-23 | 0.0500 | 0.520 | yes | 0.400 | 0.130 | ERROR | WARN |" in lines
    assert "| forecast + 0.5 reference SD | 90% | 85% | 100% |" in lines
    assert "with the feature thresholds\n2 of the\n2 training days would be ERROR" in md
    assert md.endswith("| validate_candles, one FTX day | 1,440 | 12 ms | pass |\n")
