"""The import job's pure decisions (transforms.candle_import) and the ccxt candle-history pager
(sources.ccxt_candles) against a local fake Binance kline API: exact rows, statuses and requests."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest

from crypto_platform.settings import load_universe
from crypto_platform.sources.ccxt_candles import CcxtCandles
from crypto_platform.transforms.candle_import import (
    ImportCandlesError,
    check_minute_bars,
    merge_day,
    outside_grid,
    parse_instant,
    require_days_in_grid,
)
from crypto_platform_tests.kline_server import FakeKlineServer, KlineState, RecordedKlines

T0 = datetime(2022, 1, 5, tzinfo=UTC)


def _bars(minutes: range, origin: str, close: float) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "ts": [T0 + timedelta(minutes=m) for m in minutes],
            "close": [close] * len(minutes),
            "origin": [origin] * len(minutes),
        }
    )


def test_merge_day_keeps_what_lies_outside_the_imported_span_and_never_replaces_trades() -> None:
    new = _bars(range(10, 20), "import:b.csv", 2.0)
    written, status = merge_day(None, new, overwrite_trades=False)
    assert status == "written" and written is new
    old = _bars(range(0, 30), "import:a.csv", 1.0)
    merged, status = merge_day(old, new, overwrite_trades=False)
    assert status == "merged"
    assert merged is not None and merged.height == 30
    assert merged.filter(pl.col("close") == 2.0)["ts"].to_list() == new["ts"].to_list()
    assert merged["origin"].value_counts(sort=True).rows() == [("import:a.csv", 20), ("import:b.csv", 10)]
    inside = _bars(range(12, 18), "import:a.csv", 1.0)
    replaced, status = merge_day(inside, new, overwrite_trades=False)
    assert status == "replaced" and replaced is not None and replaced.equals(new)
    trades = pl.concat([_bars(range(0, 3), "trades", 1.0), _bars(range(3, 5), "import:a.csv", 1.0)])
    assert merge_day(trades, new, overwrite_trades=False) == (
        None,
        "skipped: 3 bars built from trades kept (overwrite_trades is off)",
    )
    merged, status = merge_day(trades, new, overwrite_trades=True)
    assert status == "merged" and merged is not None and merged.height == 15


def test_days_outside_the_partition_grid_are_named() -> None:
    first, last = date(2022, 1, 1), date(2022, 1, 31)
    assert outside_grid(date(2022, 1, 1), first, last) is None
    assert outside_grid(date(2022, 1, 31), first, last) is None
    assert (
        outside_grid(date(2021, 12, 31), first, last)
        == "skipped: outside the partitions (2022-01-01 .. 2022-01-31)"
    )
    inst = load_universe().instrument("ftx.BTC-USD-USD")
    early = _bars(range(0, 3), "x", 1.0).with_columns(pl.col("ts") - timedelta(days=400))
    with pytest.raises(ImportCandlesError) as err:
        require_days_in_grid(inst, early, first, last, "instruments.yaml")
    assert str(err.value).startswith(
        "import_candles ftx.BTC-USD-USD: every day of the bars (2020-12-01 .. 2020-12-01) is outside the "
        "partitions (2022-01-01 .. 2022-01-31)"
    )
    require_days_in_grid(inst, _bars(range(0, 3), "x", 1.0), first, last, "instruments.yaml")  # inside


def test_instants_and_bar_grids_are_checked() -> None:
    assert parse_instant("", "since") is None
    assert parse_instant("2022-01-05", "since") == T0
    assert parse_instant("2022-01-05T01:00:00+01:00", "until") == T0
    with pytest.raises(ImportCandlesError, match="since '5 Jan' is not YYYY-MM-DD or an ISO datetime"):
        parse_instant("5 Jan", "since")
    with pytest.raises(ImportCandlesError, match=r"f\.csv: bars are 0:05:00 apart"):
        check_minute_bars(_bars(range(0, 20, 5), "x", 1.0), "f.csv")
    with pytest.raises(ImportCandlesError, match="is not on a whole UTC minute"):
        check_minute_bars(
            _bars(range(2), "x", 1.0).with_columns(pl.col("ts") + timedelta(seconds=1)), "f.csv"
        )


N_MINUTES = 2500
HIDDEN = (T0 + timedelta(minutes=1500), T0 + timedelta(minutes=1501))  # no kline for them


@pytest.fixture
def kline_server() -> Iterator[FakeKlineServer]:
    minutes = [T0 + timedelta(minutes=m) for m in range(N_MINUTES)]
    price = [100.0 + m / 100 for m in range(N_MINUTES)]
    frame = pl.DataFrame(
        {
            "ts": minutes,
            "open": price,
            "high": price,
            "low": price,
            "close": price,
            "volume": [1.0] * N_MINUTES,
        }
    ).with_columns(pl.col("close").alias("quote_volume"))
    hidden = {int(t.timestamp() * 1000) for t in HIDDEN}
    with FakeKlineServer(
        KlineState(RecordedKlines.from_frame("BTCUSDT", frame), "BTC", "USDT", hidden_ms=hidden)
    ) as srv:
        yield srv


@pytest.mark.slow
def test_ccxt_candles_page_forward_from_since_and_keep_only_the_window(kline_server: FakeKlineServer) -> None:
    inst = load_universe().instrument("binance.BTC-USDT")
    client = CcxtCandles.for_instrument(inst, api_url=kline_server.url, page_limit=1000)
    since, end = T0 + timedelta(minutes=10), T0 + timedelta(minutes=2400)
    got = client.fetch(inst.symbol, since, end)
    want = [m for m in range(10, 2400) if T0 + timedelta(minutes=m) not in HIDDEN]
    assert [r[0] for r in got.rows] == [int((T0 + timedelta(minutes=m)).timestamp() * 1000) for m in want]
    assert [r[4] for r in got.rows] == [100.0 + m / 100 for m in want]  # the close of each minute
    # pages of 1000 from since: [10, 1010), [1010, 2012) (two hidden minutes), then from 2012 past `end`
    starts = [int(q["startTime"]) for q in kline_server.state.kline_queries]
    assert starts == [int((T0 + timedelta(minutes=m)).timestamp() * 1000) for m in (10, 1010, 2012)]
    assert got.requests == 3
