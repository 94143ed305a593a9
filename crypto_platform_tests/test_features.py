"""Gold features: strict causality, exact lookback, cross-symbol columns, null-safety, real data."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from crypto_platform.schemas import INDEX_COLUMNS
from crypto_platform.transforms.features import (
    FEATURE_COLUMNS,
    LOOKBACK_MINUTES,
    REQUIRED_COLUMNS,
    build_features,
)
from crypto_platform.transforms.ohlcv_import import read_ftx_csv
from crypto_platform_tests.fixtures import T0, synthetic_candles
from crypto_platform_tests.paths import SHARED_DATA

# every candle value the features read: the causality test perturbs all of them after t
VALUE_COLUMNS = [c for c in REQUIRED_COLUMNS if c not in INDEX_COLUMNS]


def scramble_after(candles: pl.DataFrame, cut: datetime, seed: int) -> pl.DataFrame:
    """Replace every candle after `cut` with other (shuffled and rescaled) values; earlier ones untouched."""
    before = candles.filter(pl.col("ts") <= cut)
    after = candles.filter(pl.col("ts") > cut)
    shuffled = after.select(VALUE_COLUMNS).sample(fraction=1.0, shuffle=True, seed=seed)
    scale = pl.Series(np.random.default_rng(seed).uniform(0.5, 2.0, after.height))
    rescaled = ["open", "high", "low", "close", "vwap", "volume", "quote_volume"]
    shuffled = shuffled.with_columns([(pl.col(c) * scale).alias(c) for c in rescaled])
    changed = pl.concat([after.select("exchange", "symbol", "ts", "origin"), shuffled], how="horizontal")
    return pl.concat([before, changed.select(before.columns)]).sort(["exchange", "symbol", "ts"])


def violations_of_causality(
    fn: Callable[[pl.DataFrame], pl.DataFrame], candles: pl.DataFrame, cuts: list[datetime]
) -> list[str]:
    """Columns of fn's output at ts <= cut that change when candles after cut change."""
    full = fn(candles)
    bad = []
    for k, cut in enumerate(cuts):
        other = fn(scramble_after(candles, cut, seed=k))
        left = full.filter(pl.col("ts") <= cut).sort(["exchange", "symbol", "ts"])
        right = other.filter(pl.col("ts") <= cut).sort(["exchange", "symbol", "ts"])
        for col in left.columns:
            if not left[col].equals(right[col]):  # exact, nulls equal to nulls
                bad.append(f"{col}@{cut}")
    return bad


@pytest.fixture(scope="module")
def candles() -> pl.DataFrame:
    return synthetic_candles(600)


def test_schema_and_feature_count(candles: pl.DataFrame) -> None:
    feats = build_features(candles)
    assert feats.columns == ["exchange", "symbol", "ts", *FEATURE_COLUMNS]
    assert len(FEATURE_COLUMNS) >= 15 and len(set(FEATURE_COLUMNS)) == len(FEATURE_COLUMNS)
    assert feats.height == candles.height
    assert all(feats.schema[c] == pl.Float64 for c in FEATURE_COLUMNS)
    values = feats.select(FEATURE_COLUMNS).to_numpy()
    assert not np.isinf(values).any()
    assert not np.isnan(values[~np.isnan(values)]).any()


def test_features_at_t_ignore_every_candle_after_t(candles: pl.DataFrame) -> None:
    rng = random.Random(11)
    cuts = [T0 + timedelta(minutes=rng.randrange(5, 590)) for _ in range(6)]
    assert violations_of_causality(build_features, candles, cuts) == []


def test_the_causality_check_catches_a_leak(candles: pl.DataFrame) -> None:
    """The check above has teeth: a feature that peeks one bar ahead is reported."""

    def leaky(c: pl.DataFrame) -> pl.DataFrame:
        return build_features(c).with_columns(
            c.sort(["exchange", "symbol", "ts"])["close"].shift(-1).alias("next_close")
        )

    bad = violations_of_causality(leaky, candles, [T0 + timedelta(minutes=300)])
    assert bad == [f"next_close@{T0 + timedelta(minutes=300)}"]


def test_lookback_is_sufficient_and_minimal() -> None:
    c = synthetic_candles(LOOKBACK_MINUTES + 5, empty_share=0.0)
    feats = build_features(c).filter(pl.col("symbol") == "ETH/USDT")
    first_full = feats.row(LOOKBACK_MINUTES, named=True)
    assert [k for k in FEATURE_COLUMNS if first_full[k] is None] == [], "defined after LOOKBACK_MINUTES"
    before = feats.row(LOOKBACK_MINUTES - 1, named=True)
    assert [k for k in FEATURE_COLUMNS if before[k] is None] == ["macd_hist"], "lookback is minimal"


def test_a_day_computed_with_lookback_history_matches_the_full_computation(candles: pl.DataFrame) -> None:
    day_start = T0 + timedelta(minutes=400)
    full = build_features(candles).filter(pl.col("ts") >= day_start)
    window = candles.filter(pl.col("ts") >= day_start - timedelta(minutes=LOOKBACK_MINUTES))
    part = build_features(window).filter(pl.col("ts") >= day_start)
    assert_frame_equal(full, part, rel_tol=1e-9, abs_tol=1e-12)


def test_cross_symbol_features(candles: pl.DataFrame) -> None:
    two = build_features(candles)
    btc = two.filter(pl.col("symbol") == "BTC/USDT")
    eth = two.filter(pl.col("symbol") == "ETH/USDT")
    # the market (BTC) return of the same minute is on every instrument's rows
    assert eth["mkt_ret_1"].equals(btc["ret_1"].alias("mkt_ret_1"))
    assert btc["mkt_ret_5"].equals(btc["ret_5"].alias("mkt_ret_5"))
    mean = (btc["ret_5"] + eth["ret_5"]) / 2
    assert np.allclose(eth["xs_mean_ret_5"].to_numpy(), mean.to_numpy(), equal_nan=True)
    assert np.allclose(eth["xs_rel_ret_5"].to_numpy(), (eth["ret_5"] - mean).to_numpy(), equal_nan=True)
    # with one instrument the columns exist and are null
    one = build_features(candles.filter(pl.col("symbol") == "ETH/USDT"))
    for col in ["mkt_ret_1", "mkt_ret_5", "xs_mean_ret_5", "xs_rel_ret_5"]:
        assert one[col].null_count() == one.height
    # per-symbol features do not depend on which other instruments are present
    solo = one.drop("mkt_ret_1", "mkt_ret_5", "xs_mean_ret_5", "xs_rel_ret_5")
    assert_frame_equal(solo, eth.select(solo.columns))


def test_order_flow_and_trade_features_are_null_safe() -> None:
    unknown = build_features(synthetic_candles(200, ("BTC/USDT",), split_known=False))
    assert unknown["taker_buy_ratio_15"].null_count() == unknown.height
    assert unknown["taker_buy_ratio_5"].null_count() == unknown.height

    c = synthetic_candles(200, ("BTC/USDT",), empty_share=0.3)
    feats = build_features(c)
    i = 150
    win = c.slice(i - 14, 15)
    buy, total = win["buy_volume"].sum(), (win["buy_volume"] + win["sell_volume"]).sum()
    assert feats["taker_buy_ratio_15"][i] == pytest.approx(buy / total, rel=1e-12)
    assert feats["empty_frac_60"][i] == pytest.approx(c.slice(i - 59, 60)["is_empty"].mean(), rel=1e-12)
    assert feats["trade_intensity_60"][i] == pytest.approx(
        c["trade_count"][i] / c.slice(i - 59, 60)["trade_count"].mean(), rel=1e-12
    )


def test_known_values_against_independent_formulas() -> None:
    c = synthetic_candles(300, ("BTC/USDT",), empty_share=0.0)
    f = build_features(c)
    close = c["close"].to_numpy()
    i = 250
    assert f["ret_15"][i] == pytest.approx(math.log(close[i] / close[i - 15]), rel=1e-12)
    r1 = np.diff(np.log(close))
    assert f["rv_60"][i] == pytest.approx(np.std(r1[i - 60 : i], ddof=1), rel=1e-9)
    d = np.diff(close)[i - 14 : i]
    gain, loss = d.clip(min=0).mean(), (-d).clip(min=0).mean()
    assert f["rsi_14"][i] == pytest.approx(gain / (gain + loss), rel=1e-9)
    w = close[i - 19 : i + 1]
    pctb = (close[i] - (w.mean() - 2 * w.std())) / (4 * w.std())
    assert f["bb_pctb_20"][i] == pytest.approx(pctb, rel=1e-9)
    assert f["zret_5"][i] == pytest.approx(f["ret_5"][i] / (f["rv_60"][i] * math.sqrt(5)), rel=1e-12)
    ts = c["ts"][i]
    assert f["tod_sin"][i] == pytest.approx(math.sin(2 * math.pi * (ts.hour * 60 + ts.minute) / 1440))


def test_flat_market_gives_neutral_not_broken_features() -> None:
    c = synthetic_candles(200, ("BTC/USDT",), empty_share=1.0)  # no trade at all: every bar empty
    f = build_features(c)
    row = f.row(199, named=True)
    assert row["ret_5"] == 0.0 and row["rv_60"] == 0.0
    assert row["rsi_14"] == 0.5 and row["bb_pctb_20"] == 0.5 and row["stoch_15"] == 0.5
    assert row["zret_5"] is None and row["taker_buy_ratio_15"] is None and row["empty_frac_60"] == 1.0


def test_gaps_in_the_minute_grid_are_rejected(candles: pl.DataFrame) -> None:
    holed = candles.filter(pl.col("ts") != T0 + timedelta(minutes=100))
    with pytest.raises(ValueError, match="breaks in the 1-minute grid"):
        build_features(holed)
    with pytest.raises(ValueError, match="breaks in the 1-minute grid"):
        build_features(pl.concat([candles, candles.head(1)]))
    with pytest.raises(ValueError, match="lack columns"):
        build_features(candles.drop("buy_volume"))


def test_real_ftx_candles() -> None:
    c = read_ftx_csv(SHARED_DATA / "candles" / "ftx_btcperp_1m_2022-01.csv")
    f = build_features(c)
    body = f.slice(LOOKBACK_MINUTES)
    # unknown in the source -> null; everything else defined after the lookback
    unknown = {
        "taker_buy_ratio_5",
        "taker_buy_ratio_15",
        "trade_intensity_60",
        "mkt_ret_1",
        "mkt_ret_5",
        "xs_mean_ret_5",
        "xs_rel_ret_5",
    }
    for col in FEATURE_COLUMNS:
        expected = body.height if col in unknown else 0
        assert body[col].null_count() == expected, col
    # scale-free features are roughly standardised on real data
    assert 0.7 < body["zret_5"].std() < 1.3
    assert abs(body["zret_1"].mean()) < 0.1
