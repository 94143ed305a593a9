"""Point-in-time labels (checked against DuckDB window SQL) and the point-in-time training join."""

from __future__ import annotations

from datetime import timedelta

import duckdb
import polars as pl
import pytest

from crypto_platform.ml.dataset import rolling_window, training_frame
from crypto_platform.transforms.features import build_features
from crypto_platform.transforms.labels import LABEL_COLUMNS, forward_return_labels, past_log_return
from crypto_platform_tests.fixtures import T0, synthetic_candles


@pytest.fixture(scope="module")
def candles() -> pl.DataFrame:
    return synthetic_candles(400)


def _duckdb_labels(candles: pl.DataFrame, h: int) -> pl.DataFrame:
    """Independent labels: lead() over each instrument's minute grid, kept where the lead is t + h."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("candles", candles.select("exchange", "symbol", "ts", "close").to_arrow())
    return con.sql(
        f"""
        SELECT exchange, symbol, ts, ln(close_h / close) AS label
        FROM (
            SELECT exchange, symbol, ts, close,
                   lead(close, {h}) OVER w AS close_h,
                   lead(ts, {h}) OVER w AS ts_h
            FROM candles
            WINDOW w AS (PARTITION BY exchange, symbol ORDER BY ts)
        )
        WHERE ts_h = ts + INTERVAL {h} MINUTE
        ORDER BY exchange, symbol, ts
        """
    ).pl()


@pytest.mark.parametrize("h", [1, 5, 17])
def test_labels_match_duckdb_lead(candles: pl.DataFrame, h: int) -> None:
    got = forward_return_labels(candles, horizon_minutes=h)
    assert got.columns == LABEL_COLUMNS
    want = _duckdb_labels(candles, h)
    assert got.select("exchange", "symbol", "ts").equals(want.select("exchange", "symbol", "ts"))
    diff = (got["label"] - want["label"]).abs().max()
    assert diff is not None and diff < 1e-15
    assert (got["horizon"] == h).all()
    assert (got["label_available_at"] == got["ts"] + timedelta(minutes=h + 1)).all()


def test_last_h_minutes_have_no_label(candles: pl.DataFrame) -> None:
    h = 5
    got = forward_return_labels(candles, horizon_minutes=h)
    last = candles["ts"].max()
    assert got["ts"].max() == last - timedelta(minutes=h)
    for symbol in ["BTC/USDT", "ETH/USDT"]:
        assert got.filter(pl.col("symbol") == symbol).height == 400 - h
    assert got["label"].null_count() == 0


def test_a_hole_in_the_grid_drops_only_the_labels_that_need_it(candles: pl.DataFrame) -> None:
    hole = T0 + timedelta(minutes=200)
    holed = candles.filter(pl.col("ts") != hole)
    got = forward_return_labels(holed, horizon_minutes=5).filter(pl.col("symbol") == "BTC/USDT")
    assert hole - timedelta(minutes=5) not in got["ts"].to_list()  # its t+h is missing
    assert hole not in got["ts"].to_list()  # no candle at t
    assert hole - timedelta(minutes=4) in got["ts"].to_list()
    assert got.height == 400 - 5 - 2


def test_past_log_return_is_the_causal_mirror(candles: pl.DataFrame) -> None:
    fwd = forward_return_labels(candles, 5)
    past = past_log_return(candles, 5)
    joined = past.with_columns((pl.col("ts") - timedelta(minutes=5)).alias("ts")).join(
        fwd, on=["exchange", "symbol", "ts"]
    )
    assert joined.height == fwd.height
    assert (joined["momentum"] - joined["label"]).abs().max() < 1e-15
    feats = build_features(candles)
    assert feats["ret_5"].equals(past["momentum"].alias("ret_5"))


def test_training_frame_only_uses_labels_known_at_as_of(candles: pl.DataFrame) -> None:
    feats = build_features(candles)
    labels = forward_return_labels(candles, 5)
    as_of = T0 + timedelta(minutes=250)
    frame = training_frame(feats, labels, as_of)
    assert (frame["label_available_at"] <= as_of).all()
    assert frame["ts"].max() == as_of - timedelta(minutes=6)  # bar t+5 closes at t+6 <= as_of
    assert frame.height == 2 * (250 - 6 + 1)
    everything = training_frame(feats, labels)
    assert everything.height == labels.height
    assert everything["ts"].is_sorted()
    with pytest.raises(ValueError, match="several horizons"):
        training_frame(feats, pl.concat([labels, forward_return_labels(candles, 15)]))
    assert training_frame(feats, pl.concat([labels, forward_return_labels(candles, 15)]), horizon=15)[
        "horizon"
    ].unique().to_list() == [15]


def test_rolling_window(candles: pl.DataFrame) -> None:
    end = T0 + timedelta(minutes=300)
    win = rolling_window(candles, end, days=1 / 24)
    assert win["ts"].min() == end - timedelta(hours=1)
    assert win["ts"].max() == end - timedelta(minutes=1)
    assert win.height == 2 * 60
