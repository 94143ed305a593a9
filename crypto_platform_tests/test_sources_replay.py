"""Replay of recorded trades: every format in ../shared/data/trades, Binance bulk dumps, day splits,
coverage and errors, each checked against an independent DuckDB read of the same file."""

from __future__ import annotations

import gzip
import json
import math
import zipfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

from crypto_platform import schemas
from crypto_platform.settings import Instrument
from crypto_platform.sources.base import SourceError, TradeBatch
from crypto_platform.sources.factory import build_source
from crypto_platform.sources.replay import ReplaySource

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TRADES = SHARED / "trades"
BTC_2024 = TRADES / "binance_spot_btcusdt_2024-01-01_1200-1230.parquet"
BTC_2021 = TRADES / "binance_spot_btcusdt_2021-01-08_46s.parquet"
XRP_JSON = TRADES / "binance_xrpeth_aggtrades_2019-10-11_to_13_ccxt.json.gz"
WS = TRADES / "binance_ws" / "derived"
EVER = (datetime(2015, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC))
WS_FILES = {
    "spot_btcusdt_trades.csv": Instrument("binance", "BTC/USDT", "replay"),
    "usdm_btcusdt_trades.csv": Instrument("binanceusdm", "BTC/USDT:USDT", "replay"),
    "spot_ethusdt_trades.csv": Instrument("binance", "ETH/USDT", "replay"),
    "usdm_ethusdt_trades.csv": Instrument("binanceusdm", "ETH/USDT:USDT", "replay"),
    "cm_btcusd_perp_trades.csv": Instrument("binancecoinm", "BTC/USD:BTC", "replay"),
}


def utc(*args: int) -> datetime:
    """A UTC datetime."""
    return datetime(*args, tzinfo=UTC)


def ms(ts: datetime) -> int:
    """Epoch milliseconds of a UTC datetime."""
    return (ts - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def summary(df: pl.DataFrame) -> tuple[int, set[str], float, int]:
    """(count, id set, sum of amounts rounded, taker sells) of a RAW_TRADES frame."""
    return (
        df.height,
        set(df["trade_id"].to_list()),
        round(df["amount"].sum(), 9),
        (df["side"] == "sell").sum(),
    )


def duck_summary(sql: str) -> tuple[int, set[str], float, int]:
    """The same summary from a DuckDB query returning (id, amount, is_sell) rows."""
    rows = duckdb.sql(sql).fetchall()
    return (
        len(rows),
        {str(r[0]) for r in rows},
        round(sum(r[1] for r in rows), 9),
        sum(bool(r[2]) for r in rows),
    )


def scalar(sql: str) -> object:
    """The single value a DuckDB query returns."""
    return duckdb.sql(sql).fetchall()[0][0]


def check_batch(batch: TradeBatch, inst: Instrument, file_name: str) -> None:
    """Contract checks every replay batch must pass."""
    df = batch.trades
    assert df.schema == pl.Schema(schemas.RAW_TRADES)
    assert df["exchange"].unique().to_list() in ([inst.exchange], [])
    assert df["symbol"].unique().to_list() in ([inst.symbol], [])
    assert df["source"].unique().to_list() in ([f"replay:{file_name}"], [])
    assert df["timestamp_ms"].is_sorted()
    if df.height:
        assert ms(batch.covered_from) <= df["timestamp_ms"].min()
        assert df["timestamp_ms"].max() < ms(batch.covered_to) + (
            1 if batch.covered_to.microsecond % 1000 else 0
        )


def test_parquet_2024_whole_file() -> None:
    inst = Instrument("binance", "BTC/USDT", "replay")
    batch = ReplaySource(str(BTC_2024)).fetch(inst, *EVER)
    check_batch(batch, inst, BTC_2024.name)
    expected = duck_summary(f"select trade_id, quantity, is_buyer_maker = 1 from read_parquet('{BTC_2024}')")
    assert summary(batch.trades) == expected
    assert expected[0] == 16_702
    assert batch.covered_from == utc(2024, 1, 1, 12)
    assert batch.covered_to == utc(2024, 1, 1, 12, 30) + timedelta(milliseconds=1)  # last trade + 1 ms
    first = batch.trades.row(0, named=True)
    assert (first["trade_id"], first["price"], first["amount"], first["side"]) == (
        "3345206428",
        42690.21,
        0.00237,
        "buy",
    )
    assert first["cost"] is None  # the file does not give it
    assert json.loads(first["payload"]) == {
        "datetime": "2024-01-01T12:00:00+00:00", "price": 42690.21, "quantity": 0.00237,
        "is_buyer_maker": 0, "trade_id": 3345206428,
    }  # fmt: skip


def test_parquet_2024_windows_and_coverage() -> None:
    inst = Instrument("binance", "BTC/USDT", "replay")
    src = ReplaySource(str(BTC_2024))
    start, end = utc(2024, 1, 1, 12, 10, 30, 250_500), utc(2024, 1, 1, 12, 17, 0, 1)  # sub-ms bounds
    batch = src.fetch(inst, start, end)
    check_batch(batch, inst, BTC_2024.name)
    # a trade at ms t is in [start, end) iff t >= ceil(start, ms) and t < ceil(end, ms)
    expected = duck_summary(
        f"select trade_id, quantity, is_buyer_maker = 1 from read_parquet('{BTC_2024}') "
        f"where epoch_ms(datetime) >= {ms(start) + 1} and epoch_ms(datetime) < {ms(end) + 1}"
    )
    assert summary(batch.trades) == expected and expected[0] > 3_000
    assert (batch.covered_from, batch.covered_to) == (start, end)

    tail = src.fetch(inst, utc(2024, 1, 1, 12, 20), utc(2024, 1, 1, 13))
    assert tail.covered_from == utc(2024, 1, 1, 12, 20)
    assert tail.covered_to == utc(2024, 1, 1, 12, 30, 0, 1000)  # recorded span ends at the last trade

    half_open = src.fetch(inst, utc(2024, 1, 1, 12), utc(2024, 1, 1, 12, 30))
    assert half_open.trades.height == 16_701  # the trade at exactly 12:30:00.000 is excluded
    assert half_open.covered_to == utc(2024, 1, 1, 12, 30)

    for a, b in [(utc(2024, 1, 1, 11), utc(2024, 1, 1, 12)), (utc(2024, 1, 1, 13), utc(2024, 1, 2))]:
        empty = src.fetch(inst, a, b)
        assert empty.trades.height == 0 and empty.trades.schema == pl.Schema(schemas.RAW_TRADES)
        assert empty.covered_from == empty.covered_to == a


def test_parquet_2021_string_maker_flag() -> None:
    inst = Instrument("binance", "BTC/USDT", "replay")
    batch = ReplaySource(str(BTC_2021)).fetch(inst, *EVER)
    check_batch(batch, inst, BTC_2021.name)
    expected = duck_summary(
        f"select trade_id, quantity, buyer_maker = 'True' from read_parquet('{BTC_2021}')"
    )
    assert summary(batch.trades) == expected and expected[0] == 2_001
    assert set(batch.trades["side"].unique()) == {"buy", "sell"}
    assert batch.covered_from == utc(2021, 1, 8, 0, 0, 0, 278_000)
    assert batch.covered_to == utc(2021, 1, 8, 0, 0, 46, 356_000)
    prices = scalar(f"select sum(price * quantity) from read_parquet('{BTC_2021}')")
    assert (batch.trades["price"] * batch.trades["amount"]).sum() == pytest.approx(prices, rel=1e-12)


def test_ccxt_json_gz() -> None:
    inst = Instrument("binance", "XRP/ETH", "replay")
    batch = ReplaySource(str(XRP_JSON)).fetch(inst, *EVER)
    check_batch(batch, inst, XRP_JSON.name)
    cols = "{'id': 'VARCHAR', 'timestamp': 'BIGINT', 'amount': 'DOUBLE', 'side': 'VARCHAR', 'cost': 'DOUBLE'}"
    expected = duck_summary(f"select id, amount, side = 'sell' from read_json('{XRP_JSON}', columns={cols})")
    assert summary(batch.trades) == expected and expected[0] == 12_477
    cost = scalar(f"select sum(cost) from read_json('{XRP_JSON}', columns={cols})")
    assert batch.trades["cost"].sum() == pytest.approx(cost, rel=1e-12)
    first = batch.trades.row(0, named=True)
    assert json.loads(first["payload"]) == {
        "a": 13519807,
        "p": "0.00141342",
        "q": "23.00000000",
        "f": 15373518,
        "l": 15373518,
        "T": 1570752011620,
        "m": True,
        "M": True,
    }  # fmt: skip  (the exchange's own record, ccxt 'info')
    assert batch.covered_from == utc(2019, 10, 11, 0, 0, 11, 620_000)
    # an illiquid gap inside the recorded span is covered (and truly empty)
    quiet = scalar(
        f"select min(timestamp) from read_json('{XRP_JSON}', columns={cols}) "
        f"where timestamp >= {ms(utc(2019, 10, 12))}"
    )
    gap = ReplaySource(str(XRP_JSON)).fetch(
        inst, utc(2019, 10, 12), datetime.fromtimestamp(quiet / 1000, UTC)
    )
    assert gap.trades.height == 0 and gap.covered_to > gap.covered_from


@pytest.mark.parametrize("file_name", sorted(WS_FILES))
def test_ws_csv_split_exactly_at_midnight(file_name: str) -> None:
    path, inst = WS / file_name, WS_FILES[file_name]
    src = ReplaySource(str(path))
    whole = src.fetch(inst, *EVER)
    check_batch(whole, inst, file_name)
    expected = duck_summary(f"select trade_id, amount, side = 'sell' from read_csv('{path}')")
    assert summary(whole.trades) == expected
    days = duckdb.sql(
        "select cast(to_timestamp(ts_ms / 1000) at time zone 'UTC' as date) as d, count(*) "
        f"from read_csv('{path}') "
        "group by d order by d"
    ).fetchall()
    assert len(days) >= 2  # the sessions cross midnight UTC
    parts = []
    for day, count in days:
        start = datetime.combine(day, datetime.min.time(), UTC)
        batch = src.fetch(inst, start, start + timedelta(days=1))
        check_batch(batch, inst, file_name)
        assert batch.trades.height == count
        parts.append(batch.trades)
    both = pl.concat(parts)
    assert both["trade_id"].n_unique() == both.height == whole.trades.height  # none lost, none twice
    assert both.drop("received_at").equals(whole.trades.drop("received_at"))


def test_ws_csv_keeps_exchange_time_and_raw_fields() -> None:
    inst = WS_FILES["spot_btcusdt_trades.csv"]
    batch = ReplaySource(str(WS / "spot_btcusdt_trades.csv")).fetch(inst, utc(2023, 4, 4), utc(2023, 4, 5))
    assert batch.trades.height == 1  # one trade at 23:59:59.999 by exchange time (captured after midnight)
    row = batch.trades.row(0, named=True)
    assert row["timestamp_ms"] == 1680652799999
    assert json.loads(row["payload"]) == {
        "local_ts": "1680652800004107", "ts_ms": "1680652799999", "price": "28165.47", "amount": "0.00056",
        "side": "sell", "trade_id": "3071245454", "event": "trade", "symbol": "BTCUSDT",
    }  # fmt: skip
    assert batch.covered_from == utc(2023, 4, 4, 23, 59, 59, 999_000) and batch.covered_to == utc(2023, 4, 5)


def test_glob_and_symbol_filter() -> None:
    inst = Instrument("binance", "ETH/USDT", "replay")
    batch = ReplaySource(str(WS / "spot_*_trades.csv")).fetch(inst, *EVER)
    assert batch.trades["source"].unique().to_list() == ["replay:spot_ethusdt_trades.csv"]
    assert batch.trades.height == 14_515
    with pytest.raises(SourceError, match=r"spot_btcusdt_trades\.csv.*ETH/USDT.*BTCUSDT"):
        ReplaySource(str(WS / "spot_btcusdt_trades.csv")).fetch(inst, *EVER)


def test_factory_resolves_relative_path_from_project_root() -> None:
    project = Path(__file__).resolve().parents[1]
    inst = Instrument(
        "binanceusdm", "BTC/USDT:USDT", "replay",
        {"path": "../shared/data/trades/binance_ws/derived/usdm_btcusdt_trades.csv"},
    )  # fmt: skip
    src = build_source(inst, project_dir=project)
    assert isinstance(src, ReplaySource) and Path(src.path).is_file()
    assert src.fetch(inst, *EVER).trades.height == 44_949
    with pytest.raises(SourceError, match="no recorded trade file"):
        build_source(
            Instrument("binance", "BTC/USDT", "replay", {"path": "nope/*.csv"}), project_dir=project
        ).fetch(inst, *EVER)


# ---------------------------------------------------------------------------------------------------
# Binance bulk dumps (data.binance.vision), written from the real recorded trades


@pytest.fixture(scope="module")
def real_rows() -> pl.DataFrame:
    """600 real trades (id, price, qty, time ms, maker) to write dump files from."""
    return (
        pl.read_parquet(BTC_2024)
        .head(600)
        .select(
            pl.col("trade_id").cast(pl.Int64).alias("id"),
            "price",
            pl.col("quantity").alias("qty"),
            pl.col("datetime").dt.epoch("ms").alias("time_ms"),
            (pl.col("is_buyer_maker") == 1).alias("maker"),
        )
    )


def dump_lines(rows: pl.DataFrame, layout: str, time_unit: str) -> list[str]:
    """Lines of a Binance trades / aggTrades dump (True/False flags, 8-decimal text like the dumps)."""
    scale = 1000 if time_unit == "us" else 1
    out = []
    for r in rows.iter_rows(named=True):
        t, m = r["time_ms"] * scale + (r["id"] % 997 if scale > 1 else 0), str(r["maker"])
        p, q = f"{r['price']:.8f}", f"{r['qty']:.8f}"
        if layout == "trades":
            out.append(f"{r['id']},{p},{q},{r['price'] * r['qty']:.8f},{t},{m},True")
        else:
            out.append(f"{r['id'] + 7},{p},{q},{r['id']},{r['id']},{t},{m},True")
    return out


@pytest.mark.parametrize(
    ("layout", "time_unit", "header", "packing"),
    [
        ("trades", "ms", False, "csv"),
        ("trades", "us", False, "csv"),
        ("trades", "ms", True, "zip"),
        ("aggTrades", "ms", False, "csv"),
        ("aggTrades", "us", True, "csv"),
        ("aggTrades", "ms", False, "gz"),
    ],
)
def test_binance_bulk_dump(
    tmp_path: Path, real_rows: pl.DataFrame, layout: str, time_unit: str, header: bool, packing: str
) -> None:
    headers = {
        "trades": "id,price,qty,quote_qty,time,is_buyer_maker,is_best_match",
        "aggTrades": "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,"
        "is_buyer_maker,is_best_match",
    }
    text = "\n".join(([headers[layout]] if header else []) + dump_lines(real_rows, layout, time_unit)) + "\n"
    csv_path = tmp_path / f"BTCUSDT-{layout}-2024-01-01.csv"
    csv_path.write_text(text)
    path = csv_path
    if packing == "zip":
        path = tmp_path / "BTCUSDT-dump.zip"
        with zipfile.ZipFile(path, "w") as zf:
            zf.write(csv_path, csv_path.name)
    elif packing == "gz":
        path = tmp_path / "BTCUSDT-dump.csv.gz"
        path.write_bytes(gzip.compress(text.encode()))

    inst = Instrument("binance", "BTC/USDT", "replay")
    start, end = utc(2024, 1, 1, 12, 0, 5), utc(2024, 1, 1, 12, 0, 20)
    batch = ReplaySource(str(path)).fetch(inst, start, end)
    check_batch(batch, inst, path.name)
    time_col, id_col = (4, 0) if layout == "trades" else (5, 0)
    divisor = 1000 if time_unit == "us" else 1
    expected = duck_summary(
        f"select column{id_col:02d}, column02, column{time_col + 1:02d} "
        f"from read_csv('{csv_path}', header={header}, "
        f"columns={_duck_columns(layout)}) where column{time_col:02d} // {divisor} >= {ms(start)} "
        f"and column{time_col:02d} // {divisor} < {ms(end)}"
    )
    assert summary(batch.trades) == expected and expected[0] > 50
    duck_ts = duckdb.sql(
        f"select column{time_col:02d} // {divisor} from read_csv('{csv_path}', header={header}, "
        f"columns={_duck_columns(layout)}) where column{time_col:02d} // {divisor} >= {ms(start)} "
        f"and column{time_col:02d} // {divisor} < {ms(end)} order by 1"
    ).fetchall()
    assert batch.trades["timestamp_ms"].to_list() == [r[0] for r in duck_ts]
    if layout == "trades":
        cost = scalar(
            f"select sum(column03) "
            f"from read_csv('{csv_path}', header={header}, columns={_duck_columns(layout)}) "
            f"where column04 // {divisor} >= {ms(start)} and column04 // {divisor} < {ms(end)}"
        )
        assert batch.trades["cost"].sum() == pytest.approx(cost, rel=1e-12)
    payload = json.loads(batch.trades["payload"][0])
    assert len(payload) == (7 if layout == "trades" else 8)


def _duck_columns(layout: str) -> dict[str, str]:
    """DuckDB column spec of a dump layout (column00 ... as names, bools as BOOLEAN)."""
    types = ["BIGINT", "DOUBLE", "DOUBLE", "DOUBLE", "BIGINT", "BOOLEAN", "BOOLEAN"]
    if layout == "aggTrades":
        types = ["BIGINT", "DOUBLE", "DOUBLE", "BIGINT", "BIGINT", "BIGINT", "BOOLEAN", "BOOLEAN"]
    return {f"column{i:02d}": t for i, t in enumerate(types)}


def test_bad_values_pass_through_raw(tmp_path: Path) -> None:
    path = tmp_path / "BTCUSDT-trades-bad.csv"
    path.write_text(
        "1,42000.5,0.1,4200.05,1704110400000,True,True\n"
        "2,NaN,0.2,0,1704110400001,False,True\n"
        "3,-5,0.3,0,1704110400002,maybe,True\n"
        "4,abc,,0,1704110400003,False,True\n"
    )
    df = ReplaySource(str(path)).fetch(Instrument("binance", "BTC/USDT", "replay"), *EVER).trades
    assert df["trade_id"].to_list() == ["1", "2", "3", "4"]
    assert df["side"].to_list() == ["sell", "buy", "maybe", "buy"]
    price = df["price"].to_list()
    assert price[0] == 42000.5 and math.isnan(price[1]) and price[2] == -5 and price[3] is None
    assert df["amount"].to_list() == [0.1, 0.2, 0.3, None]


# ---------------------------------------------------------------------------------------------------
# malformed input: a SourceError naming the file and the problem


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("no_price.csv", b"time,qty,side,id\n1704110400000,0.1,buy,1\n", "missing columns"),
        ("five_cols.csv", b"1,2,3,4,5\n6,7,8,9,10\n", "header-less CSV with 5 columns"),
        ("garbage.bin", bytes(range(256)) * 4, "unknown format"),
        ("broken.parquet", b"PAR1" + b"\x00" * 64 + b"PAR1", "cannot read"),
        ("broken.json", b'[{"id": 1, "timestamp": ', "invalid JSON"),
        ("empty.csv", b"", "empty"),
        ("bad_time.csv", b"time,price,qty,side,id\nyesterday,1,1,buy,1\n", "not a timestamp"),
    ],
)
def test_malformed_file_names_file_and_problem(
    tmp_path: Path, name: str, content: bytes, problem: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SourceError) as err:
        ReplaySource(str(path)).fetch(Instrument("binance", "BTC/USDT", "replay"), *EVER)
    assert str(path) in str(err.value) and problem in str(err.value)


def test_missing_file_is_an_error() -> None:
    with pytest.raises(SourceError, match="no recorded trade file matches"):
        ReplaySource("/nonexistent/trades.parquet").fetch(Instrument("binance", "BTC/USDT", "replay"), *EVER)


def test_day_partition_dates_are_utc() -> None:
    # guard for the day split above: DuckDB's date of the first usdm trade is 2023-04-04 (UTC)
    first = scalar(f"select min(ts_ms) from read_csv('{WS / 'usdm_btcusdt_trades.csv'}')")
    assert datetime.fromtimestamp(first / 1000, UTC).date() == date(2023, 4, 4)


def test_days_between_recorded_sessions_are_not_vouched_for() -> None:
    """usdm_btcusdt holds a 2023-04 and a 2024-08 session: the months between are not 'empty, covered'."""
    inst = Instrument("binanceusdm", "BTC/USDT:USDT", "replay", {"path": str(WS / "usdm_btcusdt_trades.csv")})
    src = ReplaySource(str(WS / "usdm_btcusdt_trades.csv"))
    between = src.fetch(inst, utc(2023, 6, 1), utc(2023, 6, 2))
    assert between.trades.height == 0 and between.covered_from == between.covered_to
    # The session's own days: covered up to midnight on the first day, from midnight on the second.
    day1 = src.fetch(inst, utc(2023, 4, 4), utc(2023, 4, 5))
    day2 = src.fetch(inst, utc(2023, 4, 5), utc(2023, 4, 6))
    assert day1.covered_to == utc(2023, 4, 5) and day1.covered_from > utc(2023, 4, 4, 23)
    assert day2.covered_from == utc(2023, 4, 5) and day2.covered_to < utc(2023, 4, 5, 1)
