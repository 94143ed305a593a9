"""A local fake Binance spot REST API (http.server on 127.0.0.1) serving recorded 1-minute candles as klines.

It speaks the wire format of api.binance.com for what `ccxt.binance.load_markets` and `fetch_ohlcv`
call: /api/v3/exchangeInfo (and the empty futures /fapi/v1, /dapi/v1 ones), /api/v3/time and
/api/v3/klines (interval 1m only; startTime / endTime inclusive on the open time, limit <= 1000,
default 500, ascending, the first `limit` matches from startTime, or the last `limit` up to endTime,
like Binance). Minutes can be hidden (an exchange that has no kline for a minute without trades or
during an outage), and every request is counted with its parameters, so tests can prove the
pagination happened. The exchangeInfo payloads come from `exchange_server` (same wire format).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import numpy as np
import polars as pl

from crypto_platform_tests.exchange_server import (
    BinanceHandler,
    LoopbackServer,
    exchange_info,
    spot_symbol_info,
)

MAX_LIMIT = 1000
DEFAULT_LIMIT = 500
MINUTE_MS = 60_000


@dataclass
class RecordedKlines:
    """1-minute klines of one symbol, sorted by open time, each pre-rendered as Binance's JSON array."""

    symbol: str  # Binance market id, e.g. 'BTCUSDT'
    open_times: np.ndarray  # ms
    rows: list[str]

    @classmethod
    def from_frame(cls, symbol: str, df: pl.DataFrame) -> RecordedKlines:
        """From columns ts (UTC datetime, the minute), open, high, low, close, volume (base), quote_volume."""
        df = df.sort("ts").with_columns(pl.col("ts").dt.epoch("ms").alias("_ms"))
        rows = []
        for t, o, h, lo, c, v, qv in df.select(
            "_ms", "open", "high", "low", "close", "volume", "quote_volume"
        ).iter_rows():
            # numbers as strings, like Binance; repr() round-trips a float exactly
            rows.append(
                json.dumps([t, repr(o), repr(h), repr(lo), repr(c), repr(v), t + MINUTE_MS - 1, repr(qv),
                            0, "0", "0", "0"], separators=(",", ":"))
            )  # fmt: skip
        return cls(symbol, df["_ms"].to_numpy(), rows)


@dataclass
class KlineState:
    """What the fake exchange serves and what happened."""

    klines: RecordedKlines
    base: str
    quote: str
    hidden_ms: set[int] = field(default_factory=set)  # open times (ms) the exchange has no kline for
    requests: Counter[str] = field(default_factory=Counter)  # path -> number of requests
    kline_queries: list[dict[str, str]] = field(default_factory=list)  # parameters of each /klines call
    lock: threading.Lock = field(default_factory=threading.Lock)


class Handler(BinanceHandler):
    """Request handler; the state lives on the server object."""

    server: FakeKlineServer

    def do_GET(self) -> None:
        """Route GET requests like api.binance.com."""
        state = self.server.state
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        with state.lock:
            state.requests[url.path] += 1
            server_time = int(state.klines.open_times[-1]) + MINUTE_MS
            if url.path == "/api/v3/exchangeInfo":
                info = [spot_symbol_info(state.klines.symbol, state.base, state.quote)]
                self.send(200, json.dumps(exchange_info(info, server_time)).encode())
            elif url.path in ("/fapi/v1/exchangeInfo", "/dapi/v1/exchangeInfo"):
                self.send(200, json.dumps(exchange_info([], server_time)).encode())
            elif url.path == "/api/v3/time":
                self.send(200, json.dumps({"serverTime": server_time}).encode())
            elif url.path == "/api/v3/klines":
                state.kline_queries.append(query)
                self.klines(state, query)
            else:
                self.error(404, -1, f"unknown endpoint {url.path}")

    def klines(self, state: KlineState, query: dict[str, str]) -> None:
        """GET /api/v3/klines."""
        k = state.klines
        if query.get("symbol") != k.symbol:
            self.error(400, -1121, "Invalid symbol.")
            return
        if query.get("interval") != "1m":
            self.error(400, -1120, "Invalid interval.")
            return
        limit = int(query.get("limit", DEFAULT_LIMIT))
        if not 1 <= limit <= MAX_LIMIT:
            self.error(400, -1130, "Invalid data sent for a parameter.")
            return
        lo, hi = 0, len(k.open_times)
        if "startTime" in query:
            lo = int(np.searchsorted(k.open_times, int(query["startTime"]), side="left"))
        if "endTime" in query:
            hi = int(np.searchsorted(k.open_times, int(query["endTime"]), side="right"))
        picked = [i for i in range(lo, hi) if int(k.open_times[i]) not in state.hidden_ms]
        picked = picked[:limit] if "startTime" in query else picked[-limit:]
        self.send(200, ("[" + ",".join(k.rows[i] for i in picked) + "]").encode())


class FakeKlineServer(LoopbackServer):
    """The fake exchange serving klines; point ccxt at `.url`."""

    def __init__(self, state: KlineState) -> None:
        super().__init__(Handler, state, "fake-klines")
