"""Contract tests: the real ccxt client of Binance, Kraken, Coinbase Exchange and OKX against local
stand-ins of their REST APIs (exchange_server.py, fake_exchanges.py) serving real recorded trades
(Binance BTC/USDT 2024-01-01 12:00-12:30, re-labelled per exchange) with a burst of 1,200 trades in
ONE millisecond (more than any of their pages holds), HTTP 429, a 5xx, the exchange's own rate-limit
error and a duplicated page. The fetched trades must equal the tape exactly, computed independently
by DuckDB over the recording; a truncated history must leave the window visibly incomplete, and a
later fetch with the whole tape must complete it with nothing duplicated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import polars as pl
import pytest

from crypto_platform.settings import Instrument
from crypto_platform.sources.base import TradeBatch
from crypto_platform.sources.ccxt_source import CcxtSource, clear_markets_cache
from crypto_platform.sources.paging import TimestampPager
from crypto_platform.sources.wire import StuckCursorError, Wire
from crypto_platform_tests.conftest import SHARED_DATA
from crypto_platform_tests.exchange_server import FakeBinanceServer, RecordedTrades, ServerState
from crypto_platform_tests.fake_exchanges import FakeCoinbase, FakeKraken, FakeOkx, Tape, TapeState

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

RECORDED = SHARED_DATA / "trades" / "binance_spot_btcusdt_2024-01-01_1200-1230.parquet"
BURST_FROM, BURST_LEN = 3000, 1200  # trades #3000..#4199 of the recording re-labelled to one ms
TRUNCATE_AT = 4500  # the truncated history ends with trade #4500
T0 = datetime(2024, 1, 1, 12, tzinfo=UTC)
START, END = T0 + timedelta(minutes=1, milliseconds=500), T0 + timedelta(minutes=10)
LATER = datetime(2030, 1, 1, tzinfo=UTC)
Row = tuple[str, int, float, float, str]


def ms(ts: datetime) -> int:
    """Epoch milliseconds of a UTC datetime."""
    return (ts - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def relabelled_sql() -> str:
    """The recording with the burst re-labelled, as DuckDB SQL (id, ms, price, amount, taker side)."""
    return f"""
        with t as (
            select trade_id, epoch_ms(datetime) as ms, price, quantity, is_buyer_maker,
                   row_number() over (order by trade_id) - 1 as i
            from read_parquet('{RECORDED}')
        )
        select trade_id::varchar as id,
               case when i between {BURST_FROM} and {BURST_FROM + BURST_LEN - 1}
                    then (select ms from t where i = {BURST_FROM}) else ms end as ms,
               price, quantity,
               case when is_buyer_maker = 1 then 'sell' else 'buy' end as side, i
        from t
    """


def expected(lo_ms: int, hi_ms: int) -> list[Row]:
    """The tape's trades with lo_ms <= ms < hi_ms, by DuckDB over the recording."""
    rows = duckdb.sql(
        f"select id, ms, price, quantity, side from ({relabelled_sql()}) "
        f"where ms >= {lo_ms} and ms < {hi_ms} order by id::bigint"
    ).fetchall()
    return [tuple(r) for r in rows]


def expected_sum(lo_ms: int, hi_ms: int) -> str:
    """Exact decimal sum of the amounts in [lo_ms, hi_ms)."""
    [(total,)] = duckdb.sql(
        f"select sum(quantity::decimal(18, 8))::varchar from ({relabelled_sql()}) "
        f"where ms >= {lo_ms} and ms < {hi_ms}"
    ).fetchall()
    return total


def trade_at(i: int) -> tuple[int, int]:
    """(id, ms) of the tape's trade #i."""
    [(tid, t)] = duckdb.sql(f"select id::bigint, ms from ({relabelled_sql()}) where i = {i}").fetchall()
    return tid, t


def fetched(df: pl.DataFrame) -> list[Row]:
    """(id, ms, price, amount, side) of fetched raw trades, by id."""
    rows = df.select("trade_id", "timestamp_ms", "price", "amount", "side").sort(
        pl.col("trade_id").cast(pl.Int64)
    )
    return [tuple(r) for r in rows.iter_rows()]


def fetched_sum(df: pl.DataFrame) -> str:
    """Exact decimal sum of fetched amounts (via DuckDB, from their decimal strings)."""
    [(total,)] = duckdb.sql("select sum(amount::decimal(18, 8))::varchar from df").fetchall()
    return total


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    """The recording with the burst: 1,200 trades sharing one millisecond."""
    df = pl.read_parquet(RECORDED).sort("trade_id")
    ts = df["datetime"].dt.epoch("ms")
    i = pl.int_range(pl.len())
    out = df.select(
        pl.col("trade_id").cast(pl.Int64),
        pl.when((i >= BURST_FROM) & (i < BURST_FROM + BURST_LEN))
        .then(pl.lit(ts[BURST_FROM]))
        .otherwise(ts)
        .alias("timestamp_ms"),
        "price",
        "quantity",
        (pl.col("is_buyer_maker") == 1).alias("is_buyer_maker"),
    )
    assert (out["timestamp_ms"] == ts[BURST_FROM]).sum() >= BURST_LEN > 1000  # more than any page
    return out


@dataclass(frozen=True)
class Case:
    """One exchange: its ccxt id, page size, how to serve a tape, and the faults to inject."""

    exchange: str
    page_limit: int
    serve: Callable[..., Any]  # (frame, faults, until_id) -> context manager of a server
    trade_requests: Callable[[Any], int]
    faults: dict[int, str]
    options: dict | None = None


@contextmanager
def binance(df: pl.DataFrame, faults: dict[int, str], until_id: int | None) -> Iterator[FakeBinanceServer]:
    """The fake Binance spot API (aggTrades); truncation = its clock stops at that trade."""
    trades = RecordedTrades.from_frame("BTCUSDT", df)
    until = None if until_id is None else int(df.filter(pl.col("trade_id") == until_id)["timestamp_ms"][0])
    with FakeBinanceServer(ServerState(trades, "BTC", "USDT", faults=faults, visible_until_ms=until)) as srv:
        yield srv


def tape_server(cls: type) -> Callable[..., Any]:
    """A fake_exchanges server of `cls` serving the frame."""

    @contextmanager
    def serve(df: pl.DataFrame, faults: dict[int, str], until_id: int | None) -> Iterator[Any]:
        with cls(TapeState(Tape.from_frame(df), faults=faults, until_id=until_id)) as srv:
            yield srv

    return serve


FAULTS = {2: "429", 3: "ratelimit", 5: "500", 7: "duplicate"}
CASES = [
    Case("binance", 1000, binance, lambda s: s.state.requests["/api/v3/aggTrades"], FAULTS),
    Case("kraken", 1000, tape_server(FakeKraken), lambda s: s.state.trade_requests, FAULTS),
    # its first requests find the window's end by trade id: a stale answer there is caught too
    Case("coinbaseexchange", 1000, tape_server(FakeCoinbase), lambda s: s.state.trade_requests, FAULTS),
    Case(
        "okx",
        100,
        tape_server(FakeOkx),
        lambda s: s.state.trade_requests,
        FAULTS,
        {"fetchMarkets": {"types": ["spot"]}},
    ),
]


@pytest.fixture(autouse=True)
def fresh_markets() -> None:
    """Every test loads the markets of its own server."""
    clear_markets_cache()


def fetch(case: Case, url: str, start: datetime, end: datetime) -> TradeBatch:
    """CcxtSource(case.exchange) on the server, test-sized back-off, no request spacing."""
    src = CcxtSource(case.exchange, api_url=url, page_limit=case.page_limit, backoff_seconds=0.005,
                     rate_limit_ms=0, now=lambda: LATER, exchange_options=case.options)  # fmt: skip
    return src.fetch(Instrument(case.exchange, "BTC/USDT", "ccxt"), start, end)


@pytest.mark.parametrize("case", CASES, ids=[c.exchange for c in CASES])
def test_burst_and_faults_fetch_equals_tape(case: Case, frame: pl.DataFrame) -> None:
    with case.serve(frame, case.faults, None) as srv:
        batch = fetch(case, srv.url, START, END)
        requests = case.trade_requests(srv)
        assert dict(srv.state.faults_hit) == {"429": 1, "ratelimit": 1, "500": 1, "duplicate": 1}
    want = expected(ms(START), ms(END))
    burst_ms = trade_at(BURST_FROM)[1]
    assert sum(1 for r in want if r[1] == burst_ms) >= BURST_LEN  # the burst lies inside the window
    assert fetched(batch.trades) == want  # every trade exactly: id, ms, price, amount, taker side
    assert batch.trades["trade_id"].n_unique() == len(want)
    assert fetched_sum(batch.trades) == expected_sum(ms(START), ms(END))
    assert batch.complete and batch.reason is None
    assert (batch.covered_from, batch.covered_to) == (START, END)
    assert set(batch.trades["exchange"]) == {case.exchange}
    wire = batch.wire
    assert wire["requests"] == requests  # every trades request the server saw is accounted for
    assert wire["rate_limit_waits"] == 2 and wire["duplicate_pages"] == 1
    assert wire["retries"] == 3  # 429, rate-limit body, 5xx
    assert sum(v for k, v in wire.items() if k.startswith("retries_")) == 3


@pytest.mark.parametrize("case", CASES, ids=[c.exchange for c in CASES])
def test_truncated_history_is_incomplete_then_completed(case: Case, frame: pl.DataFrame) -> None:
    until_id, until_ms = trade_at(TRUNCATE_AT)
    with case.serve(frame, {}, until_id) as srv:
        first = fetch(case, srv.url, START, END)
        srv.state.until_id = None
        if hasattr(srv.state, "visible_until_ms"):
            srv.state.visible_until_ms = None
        second = fetch(case, srv.url, first.covered_to, END)
    assert not first.complete and first.covered_to == datetime.fromtimestamp(until_ms / 1000, UTC)
    stop = first.covered_to.isoformat(timespec="milliseconds")
    assert f"{case.exchange} BTC/USDT" in first.reason and f"read only up to {stop}" in first.reason
    sure = first.trades.filter(pl.col("timestamp_ms") < until_ms)
    assert fetched(sure) == expected(ms(START), until_ms)  # everything before covered_to is there
    assert second.complete and second.covered_to == END
    union = pl.concat([first.trades, second.trades]).unique("trade_id")
    assert fetched(union) == expected(ms(START), ms(END))  # completed, and nothing duplicated after de-dup
    overlap = set(first.trades["trade_id"]) & set(second.trades["trade_id"])
    assert set(frame.filter(pl.col("trade_id").cast(pl.Utf8).is_in(list(overlap)))["timestamp_ms"]) <= {
        until_ms
    }


@pytest.mark.parametrize("case", CASES, ids=[c.exchange for c in CASES])
def test_a_page_that_keeps_coming_back_is_a_stuck_cursor_error(case: Case, frame: pl.DataFrame) -> None:
    faults = {n: "duplicate" for n in range(10, 400)}  # from the 10th trades request on, the same page
    with case.serve(frame, faults, None) as srv, pytest.raises(StuckCursorError) as err:
        fetch(case, srv.url, T0, T0 + timedelta(minutes=29))
    message = str(err.value)
    assert f"ccxt {case.exchange} BTC/USDT: stuck cursor" in message and "2024-01-01T12:" in message


def test_timestamp_paging_reports_the_burst_it_cannot_page_through(frame: pl.DataFrame) -> None:
    # ccxt's own `since` paging on Binance: 1,200 trades in one ms never fit a 1000-trade page
    with binance(frame, {}, None) as srv:
        src = CcxtSource("binance", api_url=srv.url, rate_limit_ms=0, now=lambda: LATER)
        src.check_symbol("BTC/USDT")
        paged = TimestampPager().collect(Wire(src.exchange, "BTC/USDT", 1000), ms(START), ms(END), ms(LATER))
    burst_ms = trade_at(BURST_FROM)[1]
    assert not paged.complete and paged.covered_to_ms == burst_ms
    assert "more than 1000 trades share the millisecond 2024-01-01T12:0" in paged.reason
    got = {str(t["id"]) for t in paged.trades if t["timestamp"] < burst_ms}
    assert got == {r[0] for r in expected(ms(START), burst_ms)}  # sure of everything before the burst


def test_binance_missing_aggregate_id_stops_coverage_before_it(frame: pl.DataFrame) -> None:
    hole_id, hole_ms = trade_at(TRUNCATE_AT)
    trades = RecordedTrades.from_frame("BTCUSDT", frame)
    with FakeBinanceServer(ServerState(trades, "BTC", "USDT", hidden_ids={hole_id})) as srv:
        batch = fetch(CASES[0], srv.url, START, END)
    _, before_ms = trade_at(TRUNCATE_AT - 1)
    assert not batch.complete and batch.covered_to == datetime.fromtimestamp(before_ms / 1000, UTC)
    assert f"aggregate id {hole_id} is missing (the exchange answered {hole_id + 1} next" in batch.reason
    assert fetched(batch.trades) == [r for r in expected(ms(START), hole_ms + 1) if int(r[0]) < hole_id]


def test_timestamp_paging_does_not_trust_an_exchange_that_ignores_since(frame: pl.DataFrame) -> None:
    with tape_server(FakeOkx)(frame, {}, None) as srv:  # OKX market/trades ignores `since`: newest trades
        src = CcxtSource("okx", api_url=srv.url, rate_limit_ms=0, now=lambda: LATER,
                         exchange_options={"fetchMarkets": {"types": ["spot"]}})  # fmt: skip
        src.check_symbol("BTC/USDT")
        paged = TimestampPager().collect(Wire(src.exchange, "BTC/USDT", 100), ms(START), ms(END), ms(LATER))
    assert not paged.complete and paged.covered_to_ms == ms(START) and paged.trades == []
    assert "the start is unproven" in paged.reason and "does not honour `since`" in paged.reason
