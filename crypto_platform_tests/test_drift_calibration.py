"""Prediction-drift thresholds calibrated on the reference's day-to-day variation (exact figures vs scipy)."""

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from scipy import stats

from crypto_platform.monitoring.drift import DriftThresholds, Severity, prediction_drift, psi
from crypto_platform.monitoring.drift_calibration import calibrate, day_to_day


def _smooth_days(days: int, seed: int, *, shift: float = 0.0) -> pl.DataFrame:
    """Minute forecasts of an AR(1) process (phi 0.995: smooth within a day, like a model's output)."""
    rng = np.random.default_rng(seed)
    n = days * 1440
    x = np.zeros(n)
    for i in range(1, n):
        x[i] = 0.995 * x[i - 1] + rng.normal(0, 0.1)
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    return pl.DataFrame(
        {"ts": [t0 + timedelta(minutes=i) for i in range(n)], "predicted_return": x + shift, "rv_60": 1.0}
    )


def test_each_reference_day_is_compared_with_the_rest() -> None:
    ref = _smooth_days(6, 1)
    days = day_to_day(ref, "predicted_return")
    assert days["cell"].to_list() == [f"2024-01-0{d}" for d in range(1, 7)]
    x = ref["predicted_return"].to_numpy()
    for k, row in enumerate(days.iter_rows(named=True)):
        own, rest = x[k * 1440 : (k + 1) * 1440], np.concatenate([x[: k * 1440], x[(k + 1) * 1440 :]])
        assert row["n"] == 1440
        assert row["ks"] == pytest.approx(stats.ks_2samp(rest, own).statistic, abs=1e-12)
        assert row["psi"] == pytest.approx(psi(rest, own), abs=1e-12)


def test_calibrated_thresholds_stop_false_alarms_and_still_catch_a_shift() -> None:
    ref = _smooth_days(10, 1)
    base = DriftThresholds()
    cal = calibrate(ref, "predicted_return", base)
    days = day_to_day(ref, "predicted_return")
    t = cal.thresholds
    assert cal.cells == 10 and cal.ks_max == pytest.approx(days["ks"].max())
    assert t.ks_error == pytest.approx(max(base.ks_error, 1.25 * days["ks"].max()))
    assert t.psi_error == pytest.approx(max(base.psi_error, 1.25 * days["psi"].max()))
    assert t.psi_warn == pytest.approx(max(base.psi_warn, float(np.quantile(days["psi"], 0.9))))
    # smooth forecasts: the feature thresholds call ordinary days of the same process drift
    fresh = [_smooth_days(1, seed) for seed in range(2, 12)]
    default = [prediction_drift(ref, d, scale_column="rv_60").severity for d in fresh]
    judged = [
        prediction_drift(
            ref, d, scale_column="rv_60", psi_warn=t.psi_warn, psi_error=t.psi_error,
            ks_warn=t.ks_warn, ks_error=t.ks_error,
        ).severity
        for d in fresh
    ]  # fmt: skip
    assert sum(s is Severity.ERROR for s in default) > sum(s is Severity.ERROR for s in judged)
    assert sum(s is Severity.ERROR for s in judged) <= 1
    sd = float(ref["predicted_return"].std())  # type: ignore[arg-type]
    moved = _smooth_days(1, 99, shift=3 * sd)
    assert prediction_drift(
        ref, moved, scale_column="rv_60", psi_warn=t.psi_warn, psi_error=t.psi_error,
        ks_warn=t.ks_warn, ks_error=t.ks_error,
    ).severity is Severity.ERROR  # fmt: skip


def test_too_few_reference_days_keep_the_defaults() -> None:
    cal = calibrate(_smooth_days(3, 1), "predicted_return")
    assert cal.thresholds == DriftThresholds() and cal.cells == 3 and "default thresholds" in cal.note
    with pytest.raises(ValueError, match="lacks columns"):
        calibrate(_smooth_days(1, 1).drop("ts"), "predicted_return")
