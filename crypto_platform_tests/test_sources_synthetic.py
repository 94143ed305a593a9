"""The market simulator: chunking invariance, determinism, live mode, plausible microstructure, speed."""

from __future__ import annotations

import itertools
import json
import random
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from crypto_platform import schemas
from crypto_platform.settings import Instrument
from crypto_platform.sources.base import SourceError
from crypto_platform.sources.factory import build_source
from crypto_platform.sources.synthetic import SyntheticSource, intraday_activity

DAY = datetime(2024, 3, 12, tzinfo=UTC)
FAR_FUTURE = datetime(2100, 1, 1, tzinfo=UTC)
BTC = Instrument("sim", "BTC/USDT")
ANCHORS = {"BTC/USDT": 60_000.0, "ETH/USDT": 3_000.0, "SOL/USDT": 150.0}


def fixed_now(ts: datetime = FAR_FUTURE):
    """A clock stuck at `ts` (so received_at, and everything else, is reproducible)."""
    return lambda: ts


def fetch(src: SyntheticSource, inst: Instrument, start: datetime, end: datetime) -> pl.DataFrame:
    """The trades of one fetch."""
    return src.fetch(inst, start, end).trades


def minute_bars(df: pl.DataFrame) -> pl.DataFrame:
    """Close, trade count and taker-buy share per minute (independent of the simulator's internals)."""
    return (
        df.group_by((pl.col("timestamp_ms") // 60_000).alias("minute"))
        .agg(
            pl.col("price").sort_by("timestamp_ms").last().alias("close"),
            pl.len().alias("n"),
            (pl.col("side") == "buy").mean().alias("buy_share"),
        )
        .sort("minute")
    )


@pytest.fixture(scope="module")
def btc_day() -> pl.DataFrame:
    """One simulated UTC day of BTC/USDT at the default 60 trades/minute."""
    return fetch(SyntheticSource(now=fixed_now()), BTC, DAY, DAY + timedelta(days=1))


def test_contract_ids_and_payload(btc_day: pl.DataFrame) -> None:
    df = btc_day
    assert df.schema == pl.Schema(schemas.RAW_TRADES)
    assert df.height > 40_000  # ~86,400 expected at 60/minute; busy/quiet days vary
    assert df["exchange"].unique().to_list() == ["sim"]
    assert df["source"].unique().to_list() == ["synthetic"]
    assert df["trade_id"].n_unique() == df.height
    ids = df["trade_id"].cast(pl.Int64)
    assert ids.is_sorted() and df["timestamp_ms"].is_sorted()  # ids increase with time
    lo, hi = int(DAY.timestamp() * 1000), int((DAY + timedelta(days=1)).timestamp() * 1000)
    assert df["timestamp_ms"].min() >= lo and df["timestamp_ms"].max() < hi
    assert df.filter(pl.col("cost") != pl.col("price") * pl.col("amount")).height == 0
    for row in df.sample(200, seed=1).iter_rows(named=True):
        raw = json.loads(row["payload"])
        assert raw["t"] == int(row["trade_id"]) and raw["T"] == row["timestamp_ms"] == raw["E"]
        assert float(raw["p"]) == row["price"] and float(raw["q"]) == row["amount"]
        assert raw["m"] == (row["side"] == "sell") and raw["s"] == "BTCUSDT"


def test_chunking_invariance_random_boundaries(btc_day: pl.DataFrame) -> None:
    rng = random.Random(2024)
    src = SyntheticSource(now=fixed_now())
    span_us = 86_400 * 1_000_000
    cuts = sorted(rng.randrange(1, span_us) for _ in range(25))  # µs boundaries: sub-minute, sub-ms
    cuts += [3_600_000_000, 3_600_000_000 + 1_000, 60_000_000 * 777]  # on an hour, a ms, a minute
    bounds = [DAY, *sorted({DAY + timedelta(microseconds=c) for c in cuts}), DAY + timedelta(days=1)]
    parts = []
    for a, b in itertools.pairwise(bounds):
        batch = src.fetch(BTC, a, b)
        assert (batch.covered_from, batch.covered_to) == (a, b)
        parts.append(batch.trades)
    chunked = pl.concat(parts)
    assert chunked.height == btc_day.height
    assert chunked.equals(btc_day)


def test_deterministic_across_instances_and_seeds() -> None:
    start, end = DAY + timedelta(hours=13), DAY + timedelta(hours=14)
    a = fetch(SyntheticSource(seed=7, now=fixed_now()), BTC, start, end)
    b = fetch(SyntheticSource(seed=7, now=fixed_now()), BTC, start, end)
    c = fetch(SyntheticSource(seed=8, now=fixed_now()), BTC, start, end)
    assert a.height > 0 and a.equals(b)
    assert not a.drop("received_at").equals(c.drop("received_at"))
    joined = a.join(c, on="trade_id", how="inner")
    assert joined.filter(pl.col("price") == pl.col("price_right")).height < 0.05 * a.height
    eth = fetch(SyntheticSource(seed=7, now=fixed_now()), Instrument("sim", "ETH/USDT"), start, end)
    assert abs(eth["price"].median() / a["price"].median() - 0.05) < 0.03  # a different market


@pytest.mark.parametrize("symbol", sorted(ANCHORS))
def test_price_level_and_sides(symbol: str) -> None:
    src = SyntheticSource(now=fixed_now())
    inst = Instrument("sim", symbol)
    for day in (datetime(2019, 6, 1, tzinfo=UTC), DAY, datetime(2031, 2, 3, tzinfo=UTC)):
        df = fetch(src, inst, day, day + timedelta(hours=6))
        anchor = ANCHORS[symbol]
        assert anchor / 2 < df["price"].min() and df["price"].max() < anchor * 2
        buy_share = (df["side"] == "buy").mean()
        assert 0.35 < buy_share < 0.65
        assert (df["amount"] > 0).all() and (df["price"] > 0).all()


def test_unknown_symbol_gets_hash_derived_plausible_level() -> None:
    src = SyntheticSource(now=fixed_now())
    a = fetch(src, Instrument("sim", "FOO/USDT"), DAY, DAY + timedelta(hours=1))
    b = fetch(src, Instrument("sim", "BAR/USDT"), DAY, DAY + timedelta(hours=1))
    assert a.height > 0 and b.height > 0
    for df in (a, b):
        assert 0.005 < df["price"].median() < 2_000
        assert df["price"].max() / df["price"].min() < 1.5
    assert a["price"].median() != b["price"].median()
    cross = fetch(src, Instrument("sim", "ETH/BTC"), DAY, DAY + timedelta(hours=1))
    assert 0.025 < cross["price"].median() < 0.1  # ETH/BTC ~ 3000 / 60000


def test_heavy_tailed_sizes(btc_day: pl.DataFrame) -> None:
    amounts = btc_day["amount"]
    assert amounts.max() / amounts.median() > 200
    q50, q99 = amounts.quantile(0.5), amounts.quantile(0.99)
    assert q99 / q50 > 20  # far heavier than a normal or a light-tailed distribution


def test_volatility_clustering(btc_day: pl.DataFrame) -> None:
    close = minute_bars(btc_day)["close"].to_numpy()
    abs_ret = np.abs(np.diff(np.log(close)))
    lag1 = np.corrcoef(abs_ret[:-1], abs_ret[1:])[0, 1]
    lag30 = np.corrcoef(abs_ret[:-30], abs_ret[30:])[0, 1]
    assert lag1 > 0.05 and lag30 > 0.02
    shuffled = np.random.default_rng(0).permutation(abs_ret)
    assert abs(np.corrcoef(shuffled[:-1], shuffled[1:])[0, 1]) < lag1  # the clustering is in time order
    one_minute_vol = np.diff(np.log(close)).std()
    assert 0.0001 < one_minute_vol < 0.005  # BTC-like: a few bp per minute


def test_intraday_activity_peaks_in_us_hours() -> None:
    src = SyntheticSource(now=fixed_now())
    df = fetch(src, BTC, DAY, DAY + timedelta(days=7))
    per_hour = df.group_by(((pl.col("timestamp_ms") // 3_600_000) % 24).alias("hour")).len()
    busy = per_hour.filter(pl.col("hour").is_between(13, 15))["len"].mean()
    quiet = per_hour.filter(pl.col("hour").is_between(5, 9))["len"].mean()
    assert busy > 1.5 * quiet


def test_sides_follow_short_term_moves(btc_day: pl.DataFrame) -> None:
    bars = minute_bars(btc_day)
    ret = np.diff(np.log(bars["close"].to_numpy()))
    buy_share = bars["buy_share"].to_numpy()[1:]
    assert np.corrcoef(ret, buy_share)[0, 1] > 0.2  # takers buy into rising prices


def test_bid_ask_bounce(btc_day: pl.DataFrame) -> None:
    # consecutive trades within a second: a buy prints above a sell (ask vs bid)
    df = btc_day.select("timestamp_ms", "price", "side").with_columns(
        pl.col("price").diff().alias("dp"),
        pl.col("side").shift().alias("prev_side"),
        pl.col("timestamp_ms").diff().alias("dt"),
    )
    close = df.filter(pl.col("dt") < 1_000)
    up = close.filter((pl.col("side") == "buy") & (pl.col("prev_side") == "sell"))["dp"].mean()
    down = close.filter((pl.col("side") == "sell") & (pl.col("prev_side") == "buy"))["dp"].mean()
    assert up > 0 > down


def test_trade_rate_option_per_instrument() -> None:
    src = SyntheticSource(trades_per_minute=60, now=fixed_now())
    start, end = DAY, DAY + timedelta(days=2)
    slow = fetch(src, Instrument("sim", "BTC/USDT", options={"trades_per_minute": 6}), start, end)
    fast = fetch(src, BTC, start, end)
    assert 7 < fast.height / slow.height < 13
    assert 0.5 * 60 * 2880 < fast.height < 1.6 * 60 * 2880
    none = fetch(src, Instrument("sim", "BTC/USDT", options={"trades_per_minute": 0}), start, end)
    assert none.height == 0 and none.schema == pl.Schema(schemas.RAW_TRADES)
    with pytest.raises(SourceError, match="trades_per_minute"):
        src.fetch(Instrument("sim", "BTC/USDT", options={"trades_per_minute": -1}), start, end)


def test_live_mode_stops_at_now_and_later_fetch_completes() -> None:
    start, end = DAY, DAY + timedelta(hours=3)
    full = fetch(SyntheticSource(now=fixed_now()), BTC, start, end).drop("received_at")
    now1 = DAY + timedelta(hours=1, minutes=17, seconds=23, microseconds=456_789)
    first = SyntheticSource(now=fixed_now(now1)).fetch(BTC, start, end)
    assert first.covered_from == start and first.covered_to == now1
    now1_us = (now1 - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    ts_us = first.trades["timestamp_ms"] * 1000
    assert (ts_us < now1_us).all() and ts_us.max() > now1_us - 10_000_000  # up to now, nothing after
    assert first.trades.height < full.height
    now2 = DAY + timedelta(hours=5)
    second = SyntheticSource(now=fixed_now(now2)).fetch(BTC, first.covered_to, end)
    assert (second.covered_from, second.covered_to) == (now1, end)
    union = pl.concat([first.trades, second.trades]).drop("received_at")
    assert union.equals(full)
    before_start = SyntheticSource(now=fixed_now(start - timedelta(hours=1))).fetch(BTC, start, end)
    assert before_start.trades.height == 0 and before_start.covered_to == start


def test_received_at_is_the_fetch_clock() -> None:
    now = datetime(2024, 3, 20, 8, 30, tzinfo=UTC)
    df = fetch(SyntheticSource(now=fixed_now(now)), BTC, DAY, DAY + timedelta(minutes=10))
    assert df["received_at"].unique().to_list() == [now]


def test_factory_builds_synthetic_with_seed() -> None:
    inst = Instrument("sim", "ETH/USDT", "synthetic", {"trades_per_minute": 20})
    a = build_source(inst, seed=3, now=fixed_now()).fetch(inst, DAY, DAY + timedelta(hours=1)).trades
    b = SyntheticSource(seed=3, now=fixed_now()).fetch(inst, DAY, DAY + timedelta(hours=1)).trades
    assert a.height > 0 and a.equals(b)
    with pytest.raises(SourceError, match="sim"):
        SyntheticSource().fetch(Instrument("binance", "BTC/USDT", "synthetic"), DAY, DAY + timedelta(hours=1))


def test_a_whole_day_in_one_fetch() -> None:
    """A day of 60 trades/minute in one call: full RAW_TRADES frame, every trade inside the day, ids
    unique. (How fast that is belongs to bench/throughput.py, not to a test.)"""
    batch = SyntheticSource(now=fixed_now()).fetch(BTC, DAY, DAY + timedelta(days=1))
    df = batch.trades
    assert df.schema == pl.Schema(schemas.RAW_TRADES)
    assert 0.5 * 60 * 1440 < df.height < 1.5 * 60 * 1440  # about 60 a minute
    assert df["trade_id"].n_unique() == df.height and df["payload"].null_count() == 0
    lo, hi = int(DAY.timestamp() * 1000), int((DAY + timedelta(days=1)).timestamp() * 1000)
    assert lo <= df["timestamp_ms"].min() and df["timestamp_ms"].max() < hi
    assert (batch.covered_from, batch.covered_to) == (DAY, DAY + timedelta(days=1))


def _flow_vs_future(flow: float | None) -> tuple[float, float]:
    """Correlation of each minute's taker buy share with the next 10 minutes' log return, in busy and
    in quiet hours, over one simulated day of sim BTC/USDT."""
    options = {} if flow is None else {"informed_flow": flow}
    start = datetime(2024, 3, 5, tzinfo=UTC)
    raw = SyntheticSource().fetch(
        Instrument("sim", "BTC/USDT", "synthetic", options), start, start + timedelta(days=1)
    )
    per = (
        raw.trades.group_by((pl.col("timestamp_ms") // 60_000).alias("minute"))
        .agg((pl.col("side") == "buy").mean().alias("share"), pl.col("price").last().alias("close"))
        .sort("minute")
        .with_columns((pl.col("close").shift(-10) / pl.col("close")).log().alias("fwd"))
        .drop_nulls()
    )
    busy = intraday_activity(per["minute"].to_numpy()) > 1.0
    share, fwd = per["share"].to_numpy(), per["fwd"].to_numpy()
    return float(np.corrcoef(share[busy], fwd[busy])[0, 1]), float(
        np.corrcoef(share[~busy], fwd[~busy])[0, 1]
    )


def test_informed_flow_plants_a_signal_whose_sign_depends_on_the_time_of_day() -> None:
    busy, quiet = _flow_vs_future(1.0)
    busy0, quiet0 = _flow_vs_future(0.0)
    assert busy > busy0 + 0.15 and quiet < quiet0 - 0.15  # with the move when busy, against it when quiet
    assert _flow_vs_future(None) == (busy0, quiet0)  # absent = 0: the default market is unchanged
    with pytest.raises(SourceError, match="informed_flow"):
        SyntheticSource().params(Instrument("sim", "BTC/USDT", "synthetic", {"informed_flow": -1}))


def test_simulated_exchange_candles_are_the_trades_volume_per_minute() -> None:
    inst = Instrument("sim", "ETH/USDT", "synthetic", {"trades_per_minute": 20})
    src = SyntheticSource()
    start = DAY + timedelta(seconds=30)  # a partial first minute is left out
    candles = src.candles_1m(inst, start, DAY + timedelta(hours=2))
    trades = src.fetch(inst, DAY, DAY + timedelta(hours=2)).trades
    per_minute = (
        trades.group_by(pl.col("timestamp_ms") // 60_000 * 60_000)
        .agg(pl.col("amount").sum().alias("expected"))
        .filter(pl.col("timestamp_ms") >= (DAY + timedelta(minutes=1)).timestamp() * 1000)
        .sort("timestamp_ms")
    )
    assert candles.height == per_minute.height == 119
    assert candles["ts"][0] == DAY + timedelta(minutes=1) and candles["ts"].dtype == schemas.UTC_TS
    assert np.allclose(candles["volume"].to_numpy(), per_minute["expected"].to_numpy(), rtol=1e-12)
