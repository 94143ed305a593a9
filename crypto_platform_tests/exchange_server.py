"""A local fake Binance spot REST API (http.server on 127.0.0.1) serving recorded trades to real ccxt.

It speaks the wire format of api.binance.com for what `ccxt.binance.load_markets` and `fetch_trades`
call: /api/v3/exchangeInfo (and the empty futures /fapi/v1, /dapi/v1 ones), /api/v3/time,
/api/v3/aggTrades (startTime/endTime inclusive, fromId, limit <= 1000, ascending, first `limit`
matches, like Binance) and /api/v3/trades. Faults can be injected per aggTrades request (HTTP 429,
HTTP 418 IP ban, HTTP 500, the previous page served again), numbered over all aggTrades requests or
only over those that have trades to answer (`fault_on="data"`: a walk over a whole day starts with
empty hours), and every request is counted so tests can prove the faults were actually hit. Trades
can be held back (`hidden_ids`: published late) and revealed later, like an exchange that publishes a
trade late.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import numpy as np
import polars as pl

MAX_LIMIT = 1000
DEFAULT_LIMIT = 500
MAX_WINDOW_MS = 3_600_000  # Binance: at most one hour between startTime and endTime

FILTERS: list[dict[str, Any]] = [
    {"filterType": "PRICE_FILTER", "minPrice": "0.01000000", "maxPrice": "1000000.00000000",
     "tickSize": "0.01000000"},
    {"filterType": "LOT_SIZE", "minQty": "0.00001000", "maxQty": "9000.00000000", "stepSize": "0.00001000"},
    {"filterType": "ICEBERG_PARTS", "limit": 10},
    {"filterType": "MARKET_LOT_SIZE", "minQty": "0.00000000", "maxQty": "100.00000000",
     "stepSize": "0.00000000"},
    {"filterType": "TRAILING_DELTA", "minTrailingAboveDelta": 10, "maxTrailingAboveDelta": 2000,
     "minTrailingBelowDelta": 10, "maxTrailingBelowDelta": 2000},
    {"filterType": "PERCENT_PRICE_BY_SIDE", "bidMultiplierUp": "5", "bidMultiplierDown": "0.2",
     "askMultiplierUp": "5", "askMultiplierDown": "0.2", "avgPriceMins": 5},
    {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True,
     "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
    {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
    {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
]  # fmt: skip


def spot_symbol_info(symbol: str, base: str, quote: str) -> dict[str, Any]:
    """One entry of GET /api/v3/exchangeInfo 'symbols', as Binance spot sends it."""
    return {
        "symbol": symbol,
        "status": "TRADING",
        "baseAsset": base,
        "baseAssetPrecision": 8,
        "quoteAsset": quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "otoAllowed": True,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True,
        "cancelReplaceAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": True,
        "filters": FILTERS,
        "permissions": [],
        "permissionSets": [["SPOT", "MARGIN"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


def exchange_info(symbols: list[dict[str, Any]], server_time: int) -> dict[str, Any]:
    """GET /api/v3/exchangeInfo (or the futures equivalents, with no symbols)."""
    return {
        "timezone": "UTC",
        "serverTime": server_time,
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
        ],
        "exchangeFilters": [],
        "symbols": symbols,
    }


@dataclass
class RecordedTrades:
    """Trades of one symbol, sorted by (time, id), with their aggTrades JSON records pre-rendered."""

    symbol: str  # Binance market id, e.g. 'BTCUSDT'
    ids: np.ndarray
    times: np.ndarray
    agg_json: list[str]
    trade_json: list[str]

    @classmethod
    def from_frame(cls, symbol: str, df: pl.DataFrame) -> RecordedTrades:
        """From columns trade_id, timestamp_ms, price, quantity, is_buyer_maker (one aggTrade per trade)."""
        df = df.sort("timestamp_ms", "trade_id")
        agg, raw = [], []
        for tid, ts, price, qty, maker in df.select(
            "trade_id", "timestamp_ms", "price", "quantity", "is_buyer_maker"
        ).iter_rows():
            m = "true" if maker else "false"
            agg.append(
                f'{{"a":{tid},"p":"{price:.8f}","q":"{qty:.8f}","f":{tid},"l":{tid},"T":{ts},"m":{m},"M":true}}'
            )
            raw.append(
                f'{{"id":{tid},"price":"{price:.8f}","qty":"{qty:.8f}","quoteQty":"{price * qty:.8f}",'
                f'"time":{ts},"isBuyerMaker":{m},"isBestMatch":true}}'
            )
        return cls(symbol, df["trade_id"].to_numpy(), df["timestamp_ms"].to_numpy(), agg, raw)


@dataclass
class ServerState:
    """What the fake exchange serves and what happened: faults to inject and request counters."""

    trades: RecordedTrades
    base: str
    quote: str
    faults: dict[int, str] = field(default_factory=dict)  # aggTrades request number (1-based) -> fault
    fault_on: str = "request"  # number faults over every aggTrades request, or "data": non-empty pages only
    fail_all: int | None = None  # answer every request with this HTTP status
    visible_until_ms: int | None = None  # the exchange's "now": later trades have not happened yet
    hidden_ids: set[int] = field(default_factory=set)  # trades not published yet (late publication)
    data_pages: int = 0  # aggTrades requests that had trades to answer
    requests: Counter[str] = field(default_factory=Counter)  # path -> number of requests
    faults_hit: Counter[str] = field(default_factory=Counter)  # fault -> times injected
    last_agg_body: bytes | None = None
    klines: list[list[Any]] | None = None  # the exchange's own 1m klines (Binance arrays), by open time
    lock: threading.Lock = field(default_factory=threading.Lock)


class BinanceHandler(BaseHTTPRequestHandler):
    """Base of the fake Binance handlers: quiet, plain responses and Binance-style JSON errors."""

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log."""

    def send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        """Write one HTTP response."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def error(self, status: int, code: int, msg: str) -> None:
        """A Binance-style JSON error."""
        self.send(status, json.dumps({"code": code, "msg": msg}).encode())


class Handler(BinanceHandler):
    """Request handler; the state lives on the server object."""

    server: FakeBinanceServer

    def do_GET(self) -> None:
        """Route GET requests like api.binance.com."""
        state = self.server.state
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        with state.lock:
            state.requests[url.path] += 1
            if state.fail_all is not None:
                self.send(
                    state.fail_all, b"<html><body><h1>Internal Server Error</h1></body></html>", "text/html"
                )
                return
            if url.path == "/api/v3/exchangeInfo":
                info = [spot_symbol_info(state.trades.symbol, state.base, state.quote)]
                self.send(200, json.dumps(exchange_info(info, int(state.trades.times[-1]))).encode())
            elif url.path in ("/fapi/v1/exchangeInfo", "/dapi/v1/exchangeInfo"):
                self.send(200, json.dumps(exchange_info([], int(state.trades.times[-1]))).encode())
            elif url.path == "/api/v3/time":
                self.send(200, json.dumps({"serverTime": int(state.trades.times[-1])}).encode())
            elif url.path == "/api/v3/aggTrades":
                self.agg_trades(state, query)
            elif url.path == "/api/v3/trades":
                self.recent_trades(state, query)
            elif url.path == "/api/v3/klines" and state.klines is not None:
                self.klines(state, query)
            else:
                self.error(404, -1, f"unknown endpoint {url.path}")

    def check_symbol(self, state: ServerState, query: dict[str, str]) -> bool:
        """Binance answers an unknown symbol with HTTP 400, code -1121."""
        if query.get("symbol") != state.trades.symbol:
            self.error(400, -1121, "Invalid symbol.")
            return False
        return True

    def limit(self, query: dict[str, str]) -> int | None:
        """The `limit` parameter (default 500, at most 1000, like Binance), None after an error reply."""
        limit = int(query.get("limit", DEFAULT_LIMIT))
        if not 1 <= limit <= MAX_LIMIT:
            self.error(400, -1130, "Invalid data sent for a parameter.")
            return None
        return limit

    def agg_trades(self, state: ServerState, query: dict[str, str]) -> None:
        """GET /api/v3/aggTrades with fault injection by request (or non-empty page) number."""
        if state.fault_on == "request" and self.inject(state, state.requests["/api/v3/aggTrades"]):
            return
        body = self.agg_page(state, query)
        if body is None:
            return  # an error reply was sent
        if state.fault_on == "data" and body != b"[]":
            state.data_pages += 1
            if self.inject(state, state.data_pages):
                return
        state.last_agg_body = body
        self.send(200, body)

    def inject(self, state: ServerState, number: int) -> bool:
        """Answer with the fault planned for this request number, if any (True: it was answered)."""
        fault = state.faults.get(number)
        if fault is None:
            return False
        if fault == "duplicate" and state.last_agg_body is None:
            return False
        state.faults_hit[fault] += 1
        if fault == "429":
            self.error(429, -1003, "Too many requests; current limit is 6000 request weight per 1 MINUTE.")
        elif fault == "ratelimit":  # Binance's escalation after ignored 429s: HTTP 418, an IP ban
            self.error(418, -1003, "Way too many requests; IP(127.0.0.1) banned until 1704110460000.")
        elif fault == "500":
            self.send(500, b"<html><body><h1>500 Internal Server Error</h1></body></html>", "text/html")
        elif fault == "duplicate":
            self.send(200, state.last_agg_body)  # the previous page again (a stale cache / replay)
        else:
            raise ValueError(f"unknown fault {fault!r}")
        return True

    def agg_page(self, state: ServerState, query: dict[str, str]) -> bytes | None:
        """The aggTrades page Binance would answer (None after an error reply)."""
        if not self.check_symbol(state, query):
            return None
        limit = self.limit(query)
        if limit is None:
            return None
        t = state.trades
        visible = (
            len(t.ids)
            if state.visible_until_ms is None
            else int(np.searchsorted(t.times, state.visible_until_ms, side="right"))
        )
        if "fromId" in query:
            if "startTime" in query or "endTime" in query:
                self.error(400, -1128, "Combination of optional parameters invalid.")
                return None
            lo = int(np.searchsorted(t.ids, int(query["fromId"]), side="left"))
            hi = visible
        elif "startTime" in query or "endTime" in query:
            start = int(query.get("startTime", int(query.get("endTime", 0)) - MAX_WINDOW_MS))
            end = int(query.get("endTime", start + MAX_WINDOW_MS))
            if end - start > MAX_WINDOW_MS or end < start:
                self.error(400, -1127, "More than 1 hours between startTime and endTime.")
                return None
            lo = int(np.searchsorted(t.times, start, side="left"))
            hi = int(np.searchsorted(t.times, end, side="right"))
        else:  # most recent trades
            lo, hi = max(0, visible - limit), visible
        hi = min(hi, visible)
        rows: list[str] = []
        for i in range(lo, hi):  # the first `limit` published matches
            if len(rows) == limit:
                break
            if not state.hidden_ids or int(t.ids[i]) not in state.hidden_ids:
                rows.append(t.agg_json[i])
        return ("[" + ",".join(rows) + "]").encode()

    def klines(self, state: ServerState, query: dict[str, str]) -> None:
        """GET /api/v3/klines (1m): open times in [startTime, endTime], the first `limit`, ascending."""
        if not self.check_symbol(state, query):
            return
        limit = self.limit(query)
        if limit is None:
            return
        if query.get("interval") != "1m":
            self.error(400, -1120, "Invalid interval.")
            return
        lo, hi = int(query.get("startTime", 0)), int(query.get("endTime", 2**62))
        assert state.klines is not None
        rows = [k for k in state.klines if lo <= k[0] <= hi][:limit]
        self.send(200, json.dumps(rows).encode())

    def recent_trades(self, state: ServerState, query: dict[str, str]) -> None:
        """GET /api/v3/trades: the most recent `limit` trades."""
        if not self.check_symbol(state, query):
            return
        limit = self.limit(query)
        if limit is None:
            return
        rows = state.trades.trade_json[-limit:]
        self.send(200, ("[" + ",".join(rows) + "]").encode())


class LoopbackServer(ThreadingHTTPServer):
    """A threaded HTTP server on 127.0.0.1 (port 0) for a fake exchange; use as a context manager."""

    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler], state: object, name: str) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.state = state
        self._thread = threading.Thread(target=self.serve_forever, name=name, daemon=True)

    @property
    def url(self) -> str:
        """Base URL to give ccxt as API override, e.g. http://127.0.0.1:54321."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)


class FakeBinanceServer(LoopbackServer):
    """The fake Binance spot exchange; point ccxt at `.url`."""

    def __init__(self, state: ServerState) -> None:
        super().__init__(Handler, state, "fake-binance")
