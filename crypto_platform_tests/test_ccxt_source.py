"""CcxtSource against a local fake Binance (real ccxt.binance over HTTP) serving real recorded trades,
with injected faults (429, 500, a duplicated page); expected values from DuckDB over the raw file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import ccxt
import duckdb
import polars as pl
import pytest

from crypto_platform import schemas
from crypto_platform.settings import Instrument, SettingsError, parse_universe
from crypto_platform.sources.base import SourceError
from crypto_platform.sources.ccxt_source import CcxtSource, clear_markets_cache, override_api_urls
from crypto_platform.sources.factory import build_source
from crypto_platform_tests.exchange_server import FakeBinanceServer, RecordedTrades, ServerState

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RECORDED = SHARED / "trades" / "binance_spot_btcusdt_2024-01-01_1200-1230.parquet"
BTC = Instrument("binance", "BTC/USDT", "ccxt")
T0 = datetime(2024, 1, 1, 12, tzinfo=UTC)
LATER = datetime(2030, 1, 1, tzinfo=UTC)

pytestmark = pytest.mark.timeout(60)


def ms(ts: datetime) -> int:
    """Epoch milliseconds of a UTC datetime."""
    return (ts - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def expected_rows(lo_ms: int, hi_ms: int) -> list[tuple[str, int, float, float, str]]:
    """(id, ms, price, amount, side) of the recorded trades in [lo_ms, hi_ms), read by DuckDB."""
    rows = duckdb.sql(
        f"select cast(trade_id as varchar), epoch_ms(datetime), price, quantity, "
        f"case when is_buyer_maker = 1 then 'sell' else 'buy' end "
        f"from read_parquet('{RECORDED}') "
        f"where epoch_ms(datetime) >= {lo_ms} and epoch_ms(datetime) < {hi_ms} "
        f"order by trade_id"
    ).fetchall()
    return [tuple(r) for r in rows]


def fetched_rows(df: pl.DataFrame) -> list[tuple[str, int, float, float, str]]:
    """The same tuples from a fetched RAW_TRADES frame."""
    rows = df.select("trade_id", "timestamp_ms", "price", "amount", "side").sort(
        pl.col("trade_id").cast(pl.Int64)
    )
    return [tuple(r) for r in rows.iter_rows()]


@pytest.fixture(scope="module")
def recorded() -> RecordedTrades:
    """The 16,702 recorded Binance trades, as the fake exchange serves them."""
    df = pl.read_parquet(RECORDED).select(
        pl.col("trade_id").cast(pl.Int64),
        pl.col("datetime").dt.epoch("ms").alias("timestamp_ms"),
        "price",
        "quantity",
        (pl.col("is_buyer_maker") == 1).alias("is_buyer_maker"),
    )
    return RecordedTrades.from_frame("BTCUSDT", df)


@pytest.fixture(autouse=True)
def fresh_markets() -> None:
    """Each test counts the exchange's requests from an empty in-process markets cache."""
    clear_markets_cache()


def serve(trades: RecordedTrades, **kwargs: object) -> FakeBinanceServer:
    """A fake Binance spot API on 127.0.0.1 (random port)."""
    return FakeBinanceServer(ServerState(trades, "BTC", "USDT", **kwargs))  # type: ignore[arg-type]


@pytest.fixture
def server(recorded: RecordedTrades) -> Iterator[FakeBinanceServer]:
    """A fake exchange that throws a 429, a 500 and a duplicated page at the client."""
    with serve(recorded, faults={2: "429", 4: "500", 7: "duplicate"}) as srv:
        yield srv


def source(url: str, **kwargs: object) -> CcxtSource:
    """A CcxtSource on the fake exchange with test-sized back-off."""
    opts: dict = {"page_limit": 1000, "backoff_seconds": 0.01, "now": lambda: LATER, **kwargs}
    return CcxtSource("binance", api_url=url, **opts)


@pytest.mark.slow
def test_fetch_through_faults_equals_recorded_file(server: FakeBinanceServer) -> None:
    start, end = T0, T0 + timedelta(minutes=30)  # the recording's last trade is at 12:30:00.000
    batch = source(server.url).fetch(BTC, start, end)
    df = batch.trades
    expected = expected_rows(ms(start), ms(end))
    assert len(expected) == 16_702 - 1
    assert df.schema == pl.Schema(schemas.RAW_TRADES)
    assert df.height == len(expected) and df["trade_id"].n_unique() == len(expected)
    assert set(df["trade_id"]) == {r[0] for r in expected}
    assert round(df["amount"].sum(), 8) == round(sum(r[3] for r in expected), 8)
    assert fetched_rows(df) == expected  # every trade exactly: id, time, price, amount, taker side
    assert (batch.covered_from, batch.covered_to) == (start, end)
    assert batch.complete and batch.reason is None  # a trade at 12:30:00.000 proves the window ended
    assert df["exchange"].unique().to_list() == ["binance"] and df["source"].unique().to_list() == ["ccxt"]
    wire = batch.wire
    assert wire["paging"].startswith("aggTrades fromId")
    assert (wire["retries_DDoSProtection"], wire["retries_ExchangeNotAvailable"]) == (1, 1)  # 429, 500
    assert (wire["rate_limit_waits"], wire["duplicate_pages"]) == (1, 1)
    assert wire["requests"] == server.state.requests["/api/v3/aggTrades"]

    state = server.state
    assert dict(state.faults_hit) == {"429": 1, "500": 1, "duplicate": 1}
    assert state.requests["/api/v3/aggTrades"] >= 17 + 3  # >= 17 pages of 1000, plus the 3 faults
    assert state.requests["/api/v3/exchangeInfo"] == 1

    first = df.sort("timestamp_ms").row(0, named=True)
    assert json.loads(first["payload"]) == {
        "a": 3345206428, "p": "42690.21000000", "q": "0.00237000", "f": 3345206428, "l": 3345206428,
        "T": 1704110400000, "m": False, "M": True,
    }  # fmt: skip
    assert first["cost"] == pytest.approx(42690.21 * 0.00237)


@pytest.mark.slow
def test_sub_window_small_pages_spot_markets_only(recorded: RecordedTrades) -> None:
    start = T0 + timedelta(minutes=10, microseconds=500_250)
    end = T0 + timedelta(minutes=14, seconds=30)
    with serve(recorded, faults={3: "duplicate", 5: "duplicate"}) as srv:
        src = source(srv.url, page_limit=300, exchange_options={"fetchMarkets": ["spot"]})
        batch = src.fetch(BTC, start, end)
        assert srv.state.requests["/fapi/v1/exchangeInfo"] == 0  # the option reached ccxt
        assert srv.state.faults_hit["duplicate"] == 2
    expected = expected_rows(ms(start) + 1, ms(end))  # ceil of a sub-ms start
    assert fetched_rows(batch.trades) == expected and len(expected) > 2 * 300


@pytest.mark.slow
def test_live_window_coverage_and_catch_up(recorded: RecordedTrades) -> None:
    now1 = T0 + timedelta(minutes=15, microseconds=500_000)
    with serve(recorded, visible_until_ms=ms(now1)) as srv:
        first = source(srv.url, now=lambda: now1).fetch(BTC, T0, T0 + timedelta(hours=1))
        srv.state.visible_until_ms = None
        now2 = T0 + timedelta(hours=2)
        second = source(srv.url, now=lambda: now2).fetch(BTC, first.covered_to, T0 + timedelta(hours=1))
    newest = first.trades["timestamp_ms"].max()
    assert first.covered_from == T0
    assert first.covered_to == datetime.fromtimestamp(newest / 1000, UTC) <= now1  # min(now, newest trade)
    assert newest == expected_rows(ms(T0), ms(now1) + 1)[-1][1]
    # the window is in the past now, but the exchange has nothing after 12:30:00.000: not proven
    assert second.covered_to == T0 + timedelta(minutes=30) and not second.complete
    assert "binance BTC/USDT" in second.reason and "nothing after aggregate id" in second.reason
    union = pl.concat([first.trades, second.trades]).unique("trade_id")
    overlap = first.trades.height + second.trades.height - union.height
    assert overlap == (first.trades["timestamp_ms"] == newest).sum()  # only the last ms is fetched twice
    assert fetched_rows(union) == expected_rows(ms(T0), ms(T0 + timedelta(hours=1)))


@pytest.mark.slow
def test_gap_longer_than_binance_time_window(recorded: RecordedTrades) -> None:
    # ccxt asks Binance for [since, since + 1 h]: a quiet spell of 3 h must not end the walk
    shift = 3 * 3_600_000
    gapped = RecordedTrades(
        recorded.symbol,
        recorded.ids,
        recorded.times + (recorded.times >= ms(T0 + timedelta(minutes=20))) * shift,
        [
            row.replace(f'"T":{t}', f'"T":{t + shift}') if t >= ms(T0 + timedelta(minutes=20)) else row
            for row, t in zip(recorded.agg_json, recorded.times, strict=True)
        ],
        recorded.trade_json,
    )
    with serve(gapped) as srv:
        batch = source(srv.url).fetch(BTC, T0, T0 + timedelta(hours=3, minutes=29))
    assert batch.complete and batch.covered_to == T0 + timedelta(hours=3, minutes=29)
    early = expected_rows(ms(T0), ms(T0 + timedelta(minutes=20)))
    late = expected_rows(ms(T0 + timedelta(minutes=20)), ms(T0 + timedelta(minutes=29)))
    assert batch.trades.height == len(early) + len(late)
    moved = batch.trades.filter(pl.col("timestamp_ms") >= ms(T0 + timedelta(hours=3)))
    assert moved["trade_id"].to_list() == [r[0] for r in late]


@pytest.mark.slow
def test_empty_window_is_proven_only_by_a_later_trade(server: FakeBinanceServer) -> None:
    proven = source(server.url).fetch(BTC, T0 - timedelta(hours=2), T0)  # the recording starts at T0
    assert proven.trades.height == 0 and proven.trades.schema == pl.Schema(schemas.RAW_TRADES)
    assert proven.complete and proven.covered_to == T0
    after = source(server.url).fetch(BTC, T0 + timedelta(hours=1), T0 + timedelta(hours=2))
    assert after.trades.height == 0 and not after.complete
    assert after.covered_to == T0 + timedelta(hours=1)  # nothing vouched for: no trade after the end yet
    assert "no trade in the window and the newest trade is at 2024-01-01T12:30:00.000" in after.reason


def test_unknown_exchange_id() -> None:
    with pytest.raises(SourceError, match="notanexchange"):
        CcxtSource("notanexchange")
    with pytest.raises(SourceError, match="notanexchange"):
        build_source(Instrument("notanexchange", "BTC/USDT", "ccxt"))


def test_unknown_ccxt_exchange_id_fails_when_the_instruments_file_is_loaded(tmp_path: Path) -> None:
    doc = {
        "start_date": "2024-01-01",
        "instruments": [{"exchange": "krakn", "symbol": "BTC/USD", "source": "ccxt"}],
    }
    expected = r"instruments\[0\]: exchange 'krakn' is not an exchange id of ccxt \(did you mean 'kraken'\?\)"
    with pytest.raises(SettingsError, match=expected):
        parse_universe(doc, tmp_path / "instruments.yaml")
    doc["instruments"][0]["exchange"] = "kraken"
    assert parse_universe(doc, tmp_path / "instruments.yaml").instruments[0].exchange == "kraken"
    replayed = {"exchange": "ftx", "symbol": "BTC/USD:USD", "source": "candles", "path": "x.csv"}
    parse_universe({"start_date": "2024-01-01", "instruments": [replayed]}, tmp_path / "i.yaml")  # not ccxt


@pytest.mark.slow
def test_unknown_symbol(server: FakeBinanceServer) -> None:
    with pytest.raises(SourceError, match=r"binance.*DOGE/BTC.*not listed"):
        source(server.url).fetch(Instrument("binance", "DOGE/BTC", "ccxt"), T0, T0 + timedelta(minutes=1))
    assert server.state.requests["/api/v3/aggTrades"] == 0


@pytest.mark.slow
def test_always_500_gives_up_after_max_retries(recorded: RecordedTrades) -> None:
    with serve(recorded, fail_all=500) as srv:
        src = source(srv.url, max_retries=3, backoff_seconds=0.001)
        with pytest.raises(SourceError) as err:
            src.fetch(BTC, T0, T0 + timedelta(minutes=1))
        assert srv.state.requests["/api/v3/exchangeInfo"] == 3 + 1  # first try + 3 retries
    message = str(err.value)
    assert "binance" in message and "BTC/USDT" in message and "ExchangeNotAvailable" in message
    assert "4 attempts" in message


@pytest.mark.slow
def test_persistent_rate_limit_on_trades_gives_up(recorded: RecordedTrades) -> None:
    with serve(recorded, faults={n: "429" for n in range(1, 10)}) as srv:
        with pytest.raises(SourceError, match=r"binance BTC/USDT: aggTrades startTime=.*3 attempts.*DDoS"):
            source(srv.url, max_retries=2, backoff_seconds=0.001).fetch(BTC, T0, T0 + timedelta(minutes=1))
        assert srv.state.faults_hit["429"] == 3


def test_connection_refused_names_the_problem_and_url() -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(SourceError) as err:
        source(f"http://127.0.0.1:{port}", max_retries=1, backoff_seconds=0.001).fetch(
            BTC, T0, T0 + timedelta(minutes=1)
        )
    assert f"connection refused (http://127.0.0.1:{port}/api/v3/exchangeInfo" in str(err.value)
    assert "ccxt binance BTC/USDT: load_markets failed after 2 attempts" in str(err.value)


def test_api_url_override_rewrites_every_binance_endpoint() -> None:
    api = ccxt.binance().urls["api"]
    out = override_api_urls(api, "http://127.0.0.1:9/")
    assert out.keys() == api.keys()
    assert out["public"] == "http://127.0.0.1:9/api/v3"
    assert out["fapiPublic"] == "http://127.0.0.1:9/fapi/v1"
    for key, url in out.items():
        if isinstance(api[key], str) and api[key].startswith("http"):
            assert url.startswith("http://127.0.0.1:9/"), key
            assert url.endswith(api[key].split("/", 3)[-1]), key


@pytest.mark.slow
def test_factory_passes_api_url_and_options(server: FakeBinanceServer) -> None:
    inst = Instrument("binance", "BTC/USDT", "ccxt", {"page_limit": 400, "api_url": "http://unused.invalid"})
    src = build_source(inst, api_urls={"binance": server.url}, now=lambda: LATER)
    assert isinstance(src, CcxtSource) and src.api_url == server.url and src.page_limit == 400
    batch = src.fetch(inst, T0, T0 + timedelta(minutes=1))
    assert fetched_rows(batch.trades) == expected_rows(ms(T0), ms(T0 + timedelta(minutes=1)))
    fallback = build_source(Instrument("binance", "BTC/USDT", "ccxt", {"api_url": server.url}))
    assert isinstance(fallback, CcxtSource) and fallback.api_url == server.url
    with pytest.raises(SourceError, match="belongs to exchange"):
        src.fetch(Instrument("kraken", "BTC/USDT", "ccxt"), T0, T0 + timedelta(minutes=1))


@pytest.mark.slow
def test_markets_are_loaded_once_per_exchange_url_and_ttl(server: FakeBinanceServer) -> None:
    window = (T0, T0 + timedelta(minutes=1))
    expected = expected_rows(ms(T0), ms(T0 + timedelta(minutes=1)))
    for _ in range(3):  # e.g. the partitions of one run: a new source each, one market load in all
        assert fetched_rows(source(server.url).fetch(BTC, *window).trades) == expected
    assert server.state.requests["/api/v3/exchangeInfo"] == 1
    # a symbol the cached list does not hold: reloaded once (a new listing?) before failing clearly
    with pytest.raises(SourceError, match="not listed"):
        source(server.url).fetch(Instrument("binance", "DOGE/BTC", "ccxt"), *window)
    assert server.state.requests["/api/v3/exchangeInfo"] == 2
    # past the TTL the list is loaded again
    assert fetched_rows(source(server.url, markets_ttl_seconds=0).fetch(BTC, *window).trades) == expected
    assert server.state.requests["/api/v3/exchangeInfo"] == 3


def test_runs_sharing_an_exchange_space_their_requests_by_their_number() -> None:
    """raw/trades exchange_runs=N (the live sensor's shards): each run's ccxt client waits N times the
    exchange's rateLimit between requests, so N runs at once stay within the exchange's limit."""
    own = ccxt.binance().rateLimit
    inst = Instrument("binance", "BTC/USDT", "ccxt")
    assert build_source(inst).exchange.rateLimit == own
    assert build_source(inst, rate_limit_factor=3).exchange.rateLimit == 3 * own
    assert CcxtSource("binance", rate_limit_ms=100, rate_limit_factor=2).exchange.rateLimit == 200
    with pytest.raises(ValueError, match="rate_limit_factor must be >= 1"):
        CcxtSource("binance", rate_limit_factor=0)
