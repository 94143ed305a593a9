"""PSI / KS against independent computations and known cases; drift reports on real features; the
Dagster `feature_drift` check on Kraken features against a champion whose reference is FTX January."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
from scipy import stats

from crypto_platform import tables
from crypto_platform.checks.drift import feature_drift as feature_drift_check
from crypto_platform.monitoring.drift import (
    DRIFT_FEATURES,
    INFO_FEATURES,
    DriftThresholds,
    Severity,
    drift_report,
    feature_drift,
    ks,
    prediction_drift,
    psi,
    quantile_edges,
    worst,
)
from crypto_platform.resources.lake import LakeResource
from crypto_platform.settings import load_universe
from crypto_platform.transforms.features import FEATURE_COLUMNS, build_features
from crypto_platform.transforms.ohlcv_import import read_ftx_csv, read_kraken_ohlcvt
from crypto_platform_tests.fixtures import cell, meta, mlflow_store, register_champion, run_check


def numpy_psi(reference: np.ndarray, current: np.ndarray, bins: int = 10, eps: float = 1e-4) -> float:
    """Independent PSI: np.histogram over the reference deciles, padded outer edges."""
    inner = np.quantile(reference, np.arange(1, bins) / bins)
    lo = min(reference.min(), current.min()) - 1.0
    hi = max(reference.max(), current.max()) + 1.0
    edges = np.concatenate([[lo], inner, [hi]])
    r = np.histogram(reference, edges)[0] / len(reference)
    c = np.histogram(current, edges)[0] / len(current)
    r, c = np.maximum(r, eps), np.maximum(c, eps)
    return float(np.sum((c - r) * np.log(c / r)))


def ecdf_ks(a: np.ndarray, b: np.ndarray) -> float:
    """Independent two-sample KS statistic: the largest gap between the two empirical CDFs."""
    grid = np.concatenate([a, b])
    fa = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    fb = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.max(np.abs(fa - fb)))


# ----------------------------------------------------------------------------------------------
# statistics


def test_psi_identical_samples_is_zero() -> None:
    x = np.random.default_rng(1).standard_normal(5000)
    assert psi(x, x) == 0.0
    assert ks(x, x)[0] == 0.0


def test_psi_matches_numpy_histogram() -> None:
    rng = np.random.default_rng(2)
    ref, cur = rng.standard_normal(20_000), rng.normal(0.5, 1.2, 5_000)
    assert psi(ref, cur) == pytest.approx(numpy_psi(ref, cur), rel=1e-12)
    assert psi(ref, cur, bins=20) == pytest.approx(numpy_psi(ref, cur, bins=20), rel=1e-12)


def test_psi_of_shifted_normal_matches_theory() -> None:
    # population PSI over the N(0,1) deciles for N(0.5, 1): exact bin probabilities from the normal CDF
    edges = np.concatenate([[-np.inf], stats.norm.ppf(np.arange(1, 10) / 10), [np.inf]])
    p = np.diff(stats.norm.cdf(edges))
    q = np.diff(stats.norm.cdf(edges, loc=0.5))
    expected = float(np.sum((q - p) * np.log(q / p)))
    rng = np.random.default_rng(3)
    got = psi(rng.standard_normal(200_000), rng.normal(0.5, 1.0, 200_000))
    assert expected > 0.2
    assert got == pytest.approx(expected, abs=0.01)
    same = psi(rng.standard_normal(200_000), rng.standard_normal(200_000))
    assert same < 0.001


def test_psi_epsilon_and_point_mass() -> None:
    ref = np.zeros(1000)  # a point mass: one edge at 0, bins (-inf, 0] and (0, inf)
    cur = np.concatenate([np.zeros(950), np.ones(50)])
    assert list(quantile_edges(ref)) == [0.0]
    expected = (0.95 - 1.0) * np.log(0.95 / 1.0) + (0.05 - 1e-4) * np.log(0.05 / 1e-4)
    assert psi(ref, cur) == pytest.approx(expected, rel=1e-12)
    # entirely outside the reference: finite thanks to epsilon, and large
    far = psi(np.random.default_rng(4).standard_normal(1000), np.full(100, 50.0))
    assert np.isfinite(far) and far > 5


def test_ks_matches_scipy_and_ecdf() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal(3000), rng.standard_t(3, 2000)
    d, p = ks(a, b)
    ref = stats.ks_2samp(a, b)
    assert d == pytest.approx(ref.statistic, abs=1e-15) and p == pytest.approx(ref.pvalue, rel=1e-12)
    assert d == pytest.approx(ecdf_ks(a, b), abs=1e-12)


def test_nulls_and_non_finite_values_are_dropped() -> None:
    rng = np.random.default_rng(6)
    ref, cur = rng.standard_normal(2000), rng.normal(0.3, 1, 1000)
    noisy = pl.Series("x", [*cur.tolist(), None, float("nan"), float("inf")])
    fd = feature_drift(pl.Series("x", ref), noisy)
    assert fd.n_current == 1000 and fd.null_share_current == pytest.approx(3 / 1003)
    assert fd.psi == pytest.approx(psi(ref, cur)) and fd.ks == pytest.approx(ks(ref, cur)[0])


# ----------------------------------------------------------------------------------------------
# reports


def test_thresholds_and_severity() -> None:
    t = DriftThresholds(psi_warn=0.1, psi_error=0.25, ks_warn=0.1, ks_error=0.2)
    assert t.classify(0.05, 0.05) is Severity.OK
    assert t.classify(0.1, 0.0) is Severity.WARN  # inclusive
    assert t.classify(0.0, 0.2) is Severity.ERROR
    assert t.classify(None, None) is Severity.OK
    assert worst([Severity.OK, Severity.ERROR, Severity.WARN]) is Severity.ERROR
    assert worst([]) is Severity.OK
    with pytest.raises(ValueError):
        DriftThresholds(psi_warn=0.3, psi_error=0.2)


def test_drift_report_on_known_samples() -> None:
    rng = np.random.default_rng(7)
    n = 5000
    ref = pl.DataFrame({c: rng.standard_normal(n) for c in "abc"})
    cur = pl.DataFrame(
        {
            "a": rng.standard_normal(n),  # unchanged
            "b": rng.normal(2.0, 1.0, n),  # shifted: ERROR
            "c": rng.normal(5.0, 1.0, n),  # shifted, but informational only
        }
    )
    r = drift_report(ref, cur, ["a", "b"], info_features=["c"])
    assert r.severity is Severity.ERROR
    assert r.feature("a").severity is Severity.OK and r.feature("a").psi < 0.01
    assert r.feature("b").severity is Severity.ERROR and r.feature("b").psi > 1
    assert not r.feature("c").monitored and r.feature("c").severity is Severity.OK and r.feature("c").psi > 1
    assert [f.feature for f in r.drifted] == ["b"]
    meta = r.to_metadata()
    assert meta["severity"] == "ERROR" and meta["drifted"] == "b=ERROR"
    assert meta["psi.b"] == pytest.approx(round(r.feature("b").psi, 4))
    assert "b ERROR" in r.summary()

    only_info = drift_report(ref, cur, ["a"], info_features=["b", "c"])
    assert only_info.severity is Severity.OK

    with pytest.raises(ValueError, match="missing"):
        drift_report(ref, cur, ["a", "zz"])


def test_too_few_values_are_not_judged() -> None:
    rng = np.random.default_rng(8)
    ref = pl.DataFrame({"a": rng.standard_normal(5000)})
    cur = pl.DataFrame({"a": rng.normal(10, 1, 100)})
    r = drift_report(ref, cur, ["a"], min_rows=360)
    assert r.severity is Severity.OK and r.feature("a").psi is None
    assert "not judged" in (r.feature("a").note or "")
    assert drift_report(ref, cur, ["a"], min_rows=50).severity is Severity.ERROR


def test_prediction_drift_removes_volatility_scale() -> None:
    rng = np.random.default_rng(9)
    n = 5000
    z_ref, z_cur = rng.standard_normal(n), rng.standard_normal(n)
    vol_ref, vol_cur = np.full(n, 0.001), np.full(n, 0.003)  # volatility tripled, model unchanged
    ref = pl.DataFrame({"predicted_return": z_ref * vol_ref, "rv_60": vol_ref})
    cur = pl.DataFrame({"predicted_return": z_cur * vol_cur, "rv_60": vol_cur})
    assert prediction_drift(ref, cur).severity is Severity.ERROR
    scaled = prediction_drift(ref, cur, scale_column="rv_60")
    assert scaled.severity is Severity.OK
    assert scaled.features[0].feature == "predicted_return/rv_60"


# ----------------------------------------------------------------------------------------------
# real features


def test_drift_feature_lists_match_the_feature_set() -> None:
    assert set(DRIFT_FEATURES) <= set(FEATURE_COLUMNS)
    assert set(INFO_FEATURES) <= set(FEATURE_COLUMNS)
    assert not set(DRIFT_FEATURES) & set(INFO_FEATURES)


@pytest.fixture(scope="module")
def ftx_features(shared_data: Path) -> pl.DataFrame:
    candles = read_ftx_csv(shared_data / "candles" / "ftx_btcperp_1m_2022-01.csv")
    return build_features(candles).with_columns(pl.col("ts").dt.date().alias("day"))


def test_reference_against_itself_is_ok(ftx_features: pl.DataFrame) -> None:
    jan = ftx_features.filter(pl.col("ts").dt.month() == 1)
    r = drift_report(jan, jan, info_features=INFO_FEATURES)
    assert r.severity is Severity.OK
    assert all((f.psi or 0.0) == 0.0 and (f.ks or 0.0) == 0.0 for f in r.features)


def test_ordinary_day_does_not_alarm_but_naive_volatility_does(ftx_features: pl.DataFrame) -> None:
    day = date(2022, 1, 22)  # the day after the 21 January sell-off
    ref = ftx_features.filter((pl.col("day") < day) & (pl.col("day") >= day - timedelta(days=7)))
    cur = ftx_features.filter(pl.col("day") == day)
    assert drift_report(ref, cur).severity is not Severity.ERROR
    naive = drift_report(ref, cur, ["rv_60", "atr_14"])
    assert naive.severity is Severity.ERROR  # volatility level changed: not drift by our definition


def test_other_market_regime_fires(ftx_features: pl.DataFrame, shared_data: Path) -> None:
    path = shared_data / "candles" / "kraken_2023q1" / "XBTUSDC_1.csv"
    kraken = read_kraken_ohlcvt(path, symbol="BTC/USDC")
    k = build_features(kraken)
    jan = ftx_features.filter(pl.col("ts").dt.month() == 1)
    r = drift_report(jan, k.filter(pl.col("ts").dt.month() == 2))
    assert r.severity is Severity.ERROR
    assert "zret_1" in {f.feature for f in r.drifted}


# ----------------------------------------------------------------------------------------------
# the Dagster check itself: FTX January champion, Kraken window


@pytest.mark.slow
def test_feature_drift_check_fails_with_error_on_kraken_against_the_ftx_january_champion(
    tmp_path: Path, shared_data: Path
) -> None:
    """The `feature_drift` asset check (real MLflow champion, real lake) on a different market."""
    universe = load_universe()
    [ftx_inst] = [i for i in universe.instruments if i.exchange == "ftx"]
    [kraken_inst] = [i for i in universe.instruments if i.exchange == "kraken"]
    ftx = build_features(
        read_ftx_csv(
            shared_data / "candles" / "ftx_btcperp_1m_2022-01.csv",
            exchange=ftx_inst.exchange,
            symbol=ftx_inst.symbol,
        )
    )
    kraken = build_features(
        read_kraken_ohlcvt(
            shared_data / "candles" / "kraken_2023q1" / "XBTUSDC_1.csv",
            exchange=kraken_inst.exchange,
            symbol=kraken_inst.symbol,
        )
    )
    store = mlflow_store(tmp_path)
    register_champion(store, ftx.filter(pl.col("ts").dt.month() == 1))  # reference: FTX January 2022

    lake = LakeResource(root=str(tmp_path / "lake"))
    cells = [(ftx, cell("2022-01-20", ftx_inst.key))]
    cells += [(kraken, cell(d, kraken_inst.key)) for d in ("2023-02-01", "2023-02-02")]
    for frame, part in cells:
        day = frame.filter((pl.col("ts") >= part.start) & (pl.col("ts") < part.end))
        lake.write_partition(day, tables.FEATURES, part)

    with dg.DagsterInstance.ephemeral() as instance:
        # a day of the reference itself: the check passes
        own = run_check(tmp_path, instance, feature_drift_check, store, partition_key=cells[0][1].key)
        assert own.passed and meta(own, "severity") == "OK", own.description

        # the hourly, unpartitioned run: the newest 24 h of every instrument; Kraken is ERROR
        ev = run_check(tmp_path, instance, feature_drift_check, store)
        assert not ev.passed and ev.severity == dg.AssetCheckSeverity.ERROR, ev.description
        assert meta(ev, "severity") == "ERROR"
        assert kraken_inst.key in meta(ev, "worst_window")
        assert "zret_1=ERROR" in meta(ev, "drifted")
        # what it detects is mostly illiquidity: the empty-minute share is far from the reference's
        assert meta(ev, "psi.empty_frac_60") > 1.0
        assert "pooled reference" in meta(ev, "notes")  # no Kraken rows in an FTX reference
