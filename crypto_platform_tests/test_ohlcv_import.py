"""OHLCV import into the CANDLES contract, on the real candle files in ../shared/data/candles."""

from __future__ import annotations

import csv
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from crypto_platform.schemas import CANDLES
from crypto_platform.transforms.ohlcv_import import (
    fill_missing_bars,
    from_ccxt_ohlcv,
    read_ftx_csv,
    read_kraken_ohlcvt,
    read_ohlcv,
    split_by_day,
)
from crypto_platform_tests.paths import SHARED_DATA

CANDLE_DIR = SHARED_DATA / "candles"
FTX = CANDLE_DIR / "ftx_btcperp_1m_2022-01.csv"
KRAKEN_1M = CANDLE_DIR / "kraken_2023q1" / "XBTUSDC_1.csv"
KRAKEN_5M = CANDLE_DIR / "kraken_2023q1" / "XBTUSD_5.csv"
BINANCE_2H = CANDLE_DIR / "binance_btcusdt_2h_4h_1d_2020-2025" / "btcusdt_2h_bars_2020_2025.parquet"


@pytest.fixture(scope="module")
def ftx() -> pl.DataFrame:
    return read_ftx_csv(FTX)


def _kraken_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as fh:
        return [row for row in csv.reader(fh) if row]


def test_ftx_file_gives_45031_candles_over_the_documented_span(ftx: pl.DataFrame) -> None:
    assert ftx.schema == pl.Schema(CANDLES)
    assert ftx.height == 45_031
    assert ftx["ts"].min() == datetime(2021, 12, 31, 23, 1, tzinfo=UTC)
    assert ftx["ts"].max() == datetime(2022, 2, 1, 5, 31, tzinfo=UTC)
    assert ftx["ts"].is_unique().all()
    assert ftx["ts"].diff().drop_nulls().unique().to_list() == [timedelta(minutes=1)]
    assert not ftx["is_empty"].any()
    assert ftx["origin"].unique().to_list() == ["import:ftx_btcperp_1m_2022-01.csv"]
    assert (ftx["exchange"] == "ftx").all() and (ftx["symbol"] == "BTC/USD:USD").all()


def test_ftx_volume_is_quote_so_base_is_derived_through_the_close(ftx: pl.DataFrame) -> None:
    raw = pl.read_csv(FTX)
    first = raw.row(0, named=True)
    got = ftx.row(0, named=True)
    assert got["quote_volume"] == first["volume"]
    assert got["volume"] == pytest.approx(first["volume"] / first["close"], rel=1e-12)
    assert got["vwap"] == got["close"]  # the bar's average price is unknown: close used, exactly
    assert (got["open"], got["high"], got["low"], got["close"]) == (
        first["open"],
        first["high"],
        first["low"],
        first["close"],
    )
    # the taker split and trade count are not in the file: unknown, not zero
    assert ftx["buy_volume"].null_count() == ftx["sell_volume"].null_count() == ftx.height
    assert ftx["trade_count"].null_count() == ftx.height


def test_kraken_sparse_minutes_become_explicit_empty_bars() -> None:
    rows = _kraken_rows(KRAKEN_1M)
    seconds = [int(r[0]) for r in rows]
    expected_total = (max(seconds) - min(seconds)) // 60 + 1
    expected_empty = expected_total - len(set(seconds))  # independent: span in minutes minus listed

    got = read_kraken_ohlcvt(KRAKEN_1M, symbol="BTC/USDC")
    assert got.schema == pl.Schema(CANDLES)
    assert got.height == expected_total
    assert int(got["is_empty"].sum()) == expected_empty
    assert expected_empty > 70_000  # the file really is sparse
    assert got["ts"].diff().drop_nulls().unique().to_list() == [timedelta(minutes=1)]

    # listed bars are kept exactly; filled bars carry the previous close with zero volume
    listed = {int(r[0]): r for r in rows}
    closes = got["close"].to_list()
    for i, row in enumerate(got.iter_rows(named=True)):
        sec = int(row["ts"].timestamp())
        if sec in listed:
            src = listed[sec]
            assert not row["is_empty"]
            assert (row["open"], row["close"], row["volume"]) == (float(src[1]), float(src[4]), float(src[5]))
            assert row["trade_count"] == int(src[6])
        else:
            assert row["is_empty"]
            assert row["open"] == row["high"] == row["low"] == row["close"] == closes[i - 1]
            assert row["vwap"] == row["close"]
            assert row["volume"] == row["quote_volume"] == 0.0 and row["trade_count"] == 0
            assert row["buy_volume"] is None  # Kraken OHLCVT has no taker split
        if i > 3000:
            break


def test_coarser_bars_are_filled_on_their_own_grid() -> None:
    rows = _kraken_rows(KRAKEN_5M)
    seconds = [int(r[0]) for r in rows]
    total = (max(seconds) - min(seconds)) // 300 + 1
    got = read_ohlcv(KRAKEN_5M, exchange="kraken", symbol="BTC/USD")  # format sniffed: no header
    assert got.height == total
    assert int(got["is_empty"].sum()) == total - len(rows)
    assert got["ts"].diff().drop_nulls().unique().to_list() == [timedelta(minutes=5)]


def test_parquet_import_fills_the_documented_missing_bars() -> None:
    got = read_ohlcv(BINANCE_2H, exchange="binance", symbol="BTC/USDT")
    raw = pl.read_parquet(BINANCE_2H)
    assert got.height == raw.height + 11  # README: "11 missing 2 h bars"
    assert int(got["is_empty"].sum()) == 11
    assert got["trade_count"].null_count() == 0  # no_of_trades is recognised
    assert got["origin"][0] == f"import:{BINANCE_2H.name}"


def test_parquet_round_trip_with_taker_split(tmp_path: Path) -> None:
    ts = [datetime(2024, 1, 1, 0, m) for m in (0, 1, 3)]  # naive = UTC, minute 2 absent
    src = pl.DataFrame(
        {
            "timestamp": ts,
            "open": [10.0, 11.0, 12.0],
            "high": [11.0, 12.0, 12.5],
            "low": [9.5, 10.5, 11.5],
            "close": [11.0, 12.0, 12.0],
            "volume": [2.0, 4.0, 1.0],
            "quote_volume": [21.0, 46.0, 12.0],
            "buy_volume": [1.5, 1.0, 0.5],
        }
    )
    path = tmp_path / "bars.parquet"
    src.write_parquet(path)
    got = read_ohlcv(path, exchange="x", symbol="A/B")
    assert got.height == 4
    assert got["vwap"].to_list()[:2] == [10.5, 11.5]
    assert got["sell_volume"].to_list() == [0.5, 3.0, 0.0, 0.5]
    assert got["buy_volume"].to_list() == [1.5, 1.0, 0.0, 0.5]  # split known: empty bar has 0, not null
    assert got["is_empty"].to_list() == [False, False, True, False]


def test_ccxt_rows_helper() -> None:
    t0 = 1_700_000_040_000
    rows = [[t0, 100, 101, 99, 100.5, 3.0], [t0 + 120_000, 100.5, 102, 100, 101, 2.0]]
    got = from_ccxt_ohlcv(rows, exchange="binance", symbol="BTC/USDT")
    assert got.schema == pl.Schema(CANDLES)
    assert got["origin"].unique().to_list() == ["import:ccxt"]
    assert got["ts"][0] == datetime.fromtimestamp(t0 / 1000, tz=UTC)
    assert got["is_empty"].to_list() == [False, True, False]
    assert got["close"].to_list() == [100.5, 100.5, 101.0]
    assert got["quote_volume"][0] == pytest.approx(3.0 * 100.5)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("timestamp,open,high,low,close\n2024-01-01 00:00:00,1,2,0.5,1\n", "missing OHLCV columns"),
        ("timestamp,open,high,low,close,volume\n2024-01-01 00:00:00,1,0.5,0.4,1,3\n", "high below"),
        ("timestamp,open,high,low,close,volume\n2024-01-01 00:00:00,1,2,0.5,-1,3\n", "non-positive prices"),
        ("timestamp,open,high,low,close,volume\n2024-01-01 00:00:00,1,2,0.5,1,-3\n", "negative"),
        ("timestamp,open,high,low,close,volume\n2024-01-01 00:00:00,1,2,0.5,1,x\n", "not numeric"),
        ("timestamp,open,high,low,close,volume\nyesterday,1,2,0.5,1,3\n", "timestamps"),
        (
            "timestamp,open,high,low,close,volume\n2024-01-01 00:00:00,1,2,0.5,1,3\n"
            "2024-01-01 00:00:00,1,2,0.5,1.5,3\n",
            "share a timestamp",
        ),
        (
            "timestamp,open,high,low,close,volume\n2024-01-01 00:00:00,1,2,0.5,1,3\n"
            "2024-01-01 00:02:00,1,2,0.5,1,3\n2024-01-01 00:03:30,1,2,0.5,1,3\n",
            "grid",
        ),
        ("", "empty"),
    ],
)
def test_bad_input_is_a_clear_error_naming_the_file(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "bad_candles.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=problem) as err:
        read_ohlcv(path, exchange="x", symbol="A/B")
    assert "bad_candles.csv" in str(err.value)


def test_kraken_with_wrong_column_count_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "k.csv"
    path.write_text("1672531200,1,2,0.5,1,3\n")
    with pytest.raises(ValueError, match=r"k\.csv.*7 columns"):
        read_kraken_ohlcvt(path, symbol="BTC/USD")
    with pytest.raises(ValueError, match="does not exist"):
        read_ohlcv(tmp_path / "nope.csv", exchange="x", symbol="A/B")


def test_split_by_day(ftx: pl.DataFrame) -> None:
    days = split_by_day(ftx)
    assert list(days) == sorted(days)
    assert next(iter(days)) == date(2021, 12, 31) and list(days)[-1] == date(2022, 2, 1)
    assert sum(d.height for d in days.values()) == ftx.height
    assert days[date(2022, 1, 15)].height == 1440
    assert days[date(2021, 12, 31)].height == 59  # 23:01 .. 23:59
    for day, frame in days.items():
        assert frame["ts"].dt.date().unique().to_list() == [day]
        assert frame.schema == ftx.schema


def test_fill_missing_bars_is_idempotent(ftx: pl.DataFrame) -> None:
    sparse = ftx.head(100).filter(pl.col("ts").dt.minute() % 7 != 3)
    filled = fill_missing_bars(sparse)
    assert filled.height == 100
    assert fill_missing_bars(filled).equals(filled)


BINANCE_2021 = CANDLE_DIR / "binance_spot_btcusdt_1m_raw_2021-12_2022-02"
BINANCE_2025 = CANDLE_DIR / "binance_spot_btcusdt_1m_raw_2025-05_2025-08"
ETH_FEATHER = CANDLE_DIR / "binance_spot_btc_eth_1m_ohlcv_2025-05-20_2025-08-18" / "ETH_USDT-1m.feather"


@pytest.mark.parametrize(
    ("path", "unit_us"),
    [
        (BINANCE_2021 / "BTCUSDT-1m-2021-12-24.csv", 1_000),  # open_time in milliseconds
        (BINANCE_2025 / "BTCUSDT-1m-2025-05-01.csv", 1),  # microseconds since 2025-01-01
    ],
)
def test_binance_kline_dumps_keep_trade_counts_and_taker_volume(path: Path, unit_us: int) -> None:
    got = read_ohlcv(path, exchange="binance", symbol="BTC/USDT")
    rows = [r for r in csv.reader(path.open()) if r]
    assert got.schema == pl.Schema(CANDLES) and got.height == len(rows) == 1440
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for i in (0, 299, 1439):  # a few real rows, field by field against the file
        r, g = rows[i], got.row(i, named=True)
        assert g["ts"] == epoch + timedelta(microseconds=int(r[0]) * unit_us)
        assert (g["open"], g["high"], g["low"], g["close"]) == tuple(float(x) for x in r[1:5])
        assert g["volume"] == float(r[5]) and g["quote_volume"] == float(r[7])
        assert g["trade_count"] == int(r[8]) and g["buy_volume"] == float(r[9])
        assert g["sell_volume"] == pytest.approx(float(r[5]) - float(r[9]), abs=1e-9)
        assert g["vwap"] == pytest.approx(float(r[7]) / float(r[5]), rel=1e-12)
    assert got["ts"].dt.date().unique().to_list() == [got["ts"][0].date()]  # one UTC day, not year 57,000
    assert got["origin"][0] == f"import:{path.name}"


def test_order_flow_features_exist_on_klines_and_not_on_ohlcv_only_files() -> None:
    from crypto_platform.transforms.features import build_features

    klines = read_ohlcv(BINANCE_2021 / "BTCUSDT-1m-2021-12-24.csv", exchange="binance", symbol="BTC/USDT")
    feats = build_features(klines)
    flow = ["taker_buy_ratio_5", "taker_buy_ratio_15", "trade_intensity_60", "vwap_dist"]
    assert all(feats[c].drop_nulls().n_unique() > 100 for c in flow)
    # bar 10: taker buy ratio over bars 6..10 = sum(buy) / sum(volume), from the file's own columns
    rows = [r for r in csv.reader((BINANCE_2021 / "BTCUSDT-1m-2021-12-24.csv").open()) if r][6:11]
    expected = sum(float(r[9]) for r in rows) / sum(float(r[5]) for r in rows)
    assert feats["taker_buy_ratio_5"][10] == pytest.approx(expected, rel=1e-12)
    eth = build_features(read_ohlcv(ETH_FEATHER, exchange="binance", symbol="ETH/USDT").head(300))
    assert eth["taker_buy_ratio_5"].null_count() == eth["trade_intensity_60"].null_count() == 300


def test_freqtrade_feather_is_read_and_klines_in_a_wrong_unit_are_refused(tmp_path: Path) -> None:
    eth = read_ohlcv(ETH_FEATHER, exchange="binance", symbol="ETH/USDT")
    assert eth.height == 130_708
    assert eth["ts"].min() == datetime(2025, 5, 20, tzinfo=UTC)
    assert eth["ts"].max() == datetime(2025, 8, 18, 18, 27, tzinfo=UTC)
    assert eth["trade_count"].null_count() == eth.height  # the file has none: unknown, not 0
    # each time is read in ms or µs by its own magnitude: a µs close_time of a ms bar is still inside it
    mixed = tmp_path / "BTCUSDT-1m-mixed.csv"
    mixed.write_text("1640304000000,1,2,0.5,1.5,10,1640304059999999,15,3,4,6,0\n")
    assert read_ohlcv(mixed, exchange="binance", symbol="BTC/USDT")["ts"][0] == datetime(
        2021, 12, 24, tzinfo=UTC
    )
    # close_time in seconds is no time of the bar: refused, the row named
    line = "1640304000000,1,2,0.5,1.5,10,1640304059,15,3,4,6,0\n"
    bad = tmp_path / "BTCUSDT-1m-bad.csv"
    bad.write_text(line)
    with pytest.raises(ValueError, match=r"BTCUSDT-1m-bad.csv: 1 klines whose close_time is not inside"):
        read_ohlcv(bad, exchange="binance", symbol="BTC/USDT")
    short = tmp_path / "short.csv"
    short.write_text("1640304000000,1,2,0.5,1.5,10,1640304059999,15\n")
    with pytest.raises(ValueError, match=r"Kraken OHLCVT needs 7 columns .* found 8"):
        read_ohlcv(short, exchange="binance", symbol="BTC/USDT")
