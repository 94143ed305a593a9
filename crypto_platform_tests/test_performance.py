"""Prediction errors on real FTX closes, rolling skill vs independent formulas, skill_lost on plants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy import stats

from crypto_platform.monitoring.performance import (
    ERRORS,
    prediction_errors,
    rolling_skill,
    skill_lost,
)

H = 5
START = datetime(2022, 1, 10, tzinfo=UTC)


@pytest.fixture(scope="module")
def closes(shared_data: Path) -> pl.DataFrame:
    """Three days of FTX BTC-PERP closes: (exchange, symbol, ts, close)."""
    raw = pl.read_csv(shared_data / "candles" / "ftx_btcperp_1m_2022-01.csv")
    ts = pl.col("timestamp").str.to_datetime("%Y-%m-%d %H:%M:%S%.f", time_unit="us", time_zone="UTC")
    return (
        raw.with_columns(ts.alias("ts"))
        .filter((pl.col("ts") >= START) & (pl.col("ts") < START + timedelta(days=3)))
        .select(pl.lit("ftx").alias("exchange"), pl.lit("BTC/USD:USD").alias("symbol"), "ts", "close")
    )


def forward_returns(closes: pl.DataFrame, h: int = H) -> np.ndarray:
    c = closes["close"].to_numpy()
    out = np.full(len(c), np.nan)
    out[:-h] = np.log(c[h:] / c[:-h])
    return out


def planted(closes: pl.DataFrame, signal: float, seed: int, version: str = "m1", h: int = H) -> pl.DataFrame:
    """Predictions = signal * realised forward return + noise of the realised return's scale."""
    rng = np.random.default_rng(seed)
    fwd = np.nan_to_num(forward_returns(closes, h))
    pred = signal * fwd + rng.normal(0.0, fwd.std(), len(fwd))
    return closes.select("symbol", "ts").with_columns(
        pl.lit(h, pl.Int64).alias("horizon"),
        pl.Series("predicted_return", pred),
        pl.lit(version).alias("model_version"),
    )


def test_errors_match_numpy_forward_returns(closes: pl.DataFrame) -> None:
    preds = planted(closes, 0.5, 0)
    e = prediction_errors(preds, closes, H)
    assert list(e.columns) == list(ERRORS)
    assert e.height == closes.height - H  # the last H predictions have not matured
    fwd = forward_returns(closes)[:-H]
    np.testing.assert_allclose(e["realised_return"].to_numpy(), fwd, rtol=0, atol=1e-15)
    p = preds["predicted_return"].to_numpy()[:-H]
    np.testing.assert_allclose(e["error"].to_numpy(), p - fwd, atol=1e-15)
    np.testing.assert_allclose(e["baseline_abs_error"].to_numpy(), np.abs(fwd), atol=0)
    # hit: same sign; null where the realised return is exactly 0 (unchanged close)
    zero = fwd == 0
    assert zero.any()
    assert e["hit"].is_null().to_numpy()[zero].all()
    assert (e["hit"].to_numpy()[~zero] == (np.sign(p) == np.sign(fwd))[~zero]).all()


def test_only_matured_predictions_with_a_future_bar(closes: pl.DataFrame) -> None:
    gap_start = START + timedelta(hours=6)
    gappy = closes.filter((pl.col("ts") < gap_start) | (pl.col("ts") >= gap_start + timedelta(minutes=10)))
    preds = pl.concat([planted(closes, 0.5, 0), planted(closes, 0.5, 0, h=15)])  # two horizons
    e = prediction_errors(preds, gappy, H)
    assert set(e["horizon"].to_list()) == {H}
    # no row made inside the gap, none whose t+5 falls in it, none in the last 5 minutes
    t = e["ts"]
    in_gap = (t >= gap_start) & (t < gap_start + timedelta(minutes=10))
    future_in_gap = (t + timedelta(minutes=H) >= gap_start) & (
        t + timedelta(minutes=H) < gap_start + timedelta(minutes=10)
    )
    assert not (in_gap | future_in_gap).any()
    assert e.height == gappy.height - H - H  # 5 bars before the gap lose their future, and the last 5
    # predictions carrying an exchange are joined on it too
    other = preds.filter(pl.col("horizon") == H).with_columns(pl.lit("kraken").alias("exchange"))
    assert prediction_errors(other, closes, H).height == 0
    with pytest.raises(ValueError, match="horizon"):
        prediction_errors(preds, closes, 0)


def test_rolling_skill_matches_independent_formulas(closes: pl.DataFrame) -> None:
    e = prediction_errors(planted(closes, 0.5, 1), closes, H)
    r = rolling_skill(e, window_minutes=240, every_minutes=60)
    assert r.columns == [
        "model_version",
        "window_end",
        "n",
        "mae",
        "baseline_mae",
        "mae_skill",
        "rank_ic",
        "hit_rate",
    ]
    end = START + timedelta(hours=12)
    row = r.filter(pl.col("window_end") == end).row(0, named=True)
    w = e.filter((pl.col("ts") > end - timedelta(minutes=240)) & (pl.col("ts") <= end))
    assert row["n"] == w.height == 240
    assert row["mae"] == pytest.approx(np.mean(np.abs(w["error"].to_numpy())), rel=1e-12)
    assert row["baseline_mae"] == pytest.approx(np.mean(np.abs(w["realised_return"].to_numpy())), rel=1e-12)
    assert row["mae_skill"] == pytest.approx(1 - row["mae"] / row["baseline_mae"], rel=1e-12)
    rho = stats.spearmanr(w["predicted_return"].to_numpy(), w["realised_return"].to_numpy()).statistic
    assert row["rank_ic"] == pytest.approx(rho, rel=1e-9)
    hits = w["hit"].drop_nulls()
    assert row["hit_rate"] == pytest.approx(hits.sum() / hits.len())
    assert r.filter(pl.col("window_end") == end + timedelta(hours=1))["n"].item() == 240


def test_skill_lost_on_planted_models(closes: pl.DataFrame) -> None:
    verdicts_good, verdicts_random = [], []
    for seed in range(20):
        good = prediction_errors(planted(closes, 0.3, seed), closes, H)
        rand = prediction_errors(planted(closes, 0.0, seed), closes, H)
        verdicts_good.append(skill_lost(good, min_rows=500, window_minutes=1440))
        verdicts_random.append(skill_lost(rand, min_rows=500, window_minutes=1440))
    assert not any(v.lost for v in verdicts_good)
    assert all(v.rank_ic > 0.1 and v.hit_rate > 0.52 and v.n == 1440 for v in verdicts_good)
    # random forecasts: IC ~ 0 and hit rate ~ 50%; lost unless both land above by chance (~1 in 4 by
    # symmetry; 13 of these 20 seeds)
    lost = [v.lost for v in verdicts_random]
    assert sum(lost) > len(lost) / 2
    assert all(abs(v.rank_ic) < 0.08 and abs(v.hit_rate - 0.5) < 0.04 for v in verdicts_random)
    anti = skill_lost(prediction_errors(planted(closes, -0.3, 0), closes, H), min_rows=500)
    assert anti.lost and len(anti.reasons) == 2 and anti.rank_ic < 0 and anti.hit_rate < 0.5
    meta = anti.to_metadata()
    assert meta["lost"] is True and "rank IC" in str(meta["reasons"])


def test_skill_lost_guards(closes: pl.DataFrame) -> None:
    e = prediction_errors(planted(closes, 0.3, 0), closes, H)
    few = skill_lost(e, min_rows=500, window_minutes=60)
    assert few.n == 60 and not few.lost and not few.sufficient
    both = pl.concat([e, e.with_columns(pl.lit("m2").alias("model_version"))])
    with pytest.raises(ValueError, match="model versions"):
        skill_lost(both)
    assert skill_lost(both, model_version="m2").n == e.height
    flat = e.with_columns(pl.lit(0.0).alias("predicted_return"), pl.lit(None, pl.Boolean).alias("hit"))
    v = skill_lost(flat, min_rows=100)
    assert v.lost and v.rank_ic is None and v.hit_rate is None
    empty = skill_lost(e.clear())
    assert not empty.lost and empty.n == 0 and not empty.sufficient
