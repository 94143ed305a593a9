"""Local stand-ins (http.server on 127.0.0.1) of Kraken, Coinbase Exchange and OKX public REST APIs
serving a tape of real recorded trades to the real ccxt clients, with each exchange's own paging:

- Kraken `GET /0/public/Trades?pair&since&count`: oldest first, at most 1000; `since` in whole seconds
  (trades at or after it) or the nanosecond cursor `last` of an earlier answer (trades after it; one
  distinct cursor per trade, so a burst sharing one timestamp still pages on).
- Coinbase Exchange `GET /products/{id}/trades?limit&after`: newest first, at most 1000; `after` =
  trade id (trades with smaller ids), CB-BEFORE / CB-AFTER headers; `side` is the maker's side.
- OKX `GET /api/v5/market/trades` (newest `limit`, at most 500) and `/api/v5/market/history-trades
  ?type&after&limit`: newest first, at most 100; type 1 `after` = tradeId, type 2 `after` = ms.

Shapes follow the exchanges' API docs, ../shared/data/rest_responses/ and what ccxt's `load_markets`
and `fetch_trades` send and parse. Faults are injected per trades request (numbered from 1): HTTP 429
with the exchange's body, a 5xx, the exchange's own rate-limit error ("ratelimit"), or the previous
trades page again ("duplicate"). `until_id` truncates the history (the server has nothing after that
trade). Every request is counted by path.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import numpy as np
import polars as pl

from crypto_platform_tests.exchange_server import LoopbackServer

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Tape:
    """Trades of one market sorted by id (= time order): id, ms, price, amount, taker side."""

    ids: np.ndarray
    times: np.ndarray
    prices: list[float]
    amounts: list[float]
    taker_buy: np.ndarray

    @classmethod
    def from_frame(cls, df: pl.DataFrame) -> Tape:
        """From columns trade_id, timestamp_ms, price, quantity, is_buyer_maker."""
        df = df.sort("trade_id")
        return cls(
            df["trade_id"].cast(pl.Int64).to_numpy(),
            df["timestamp_ms"].cast(pl.Int64).to_numpy(),
            df["price"].to_list(),
            df["quantity"].to_list(),
            ~df["is_buyer_maker"].cast(pl.Boolean).to_numpy(),
        )

    def ns_cursor(self) -> np.ndarray:
        """Kraken-style nanosecond cursor: one distinct value per trade, ordered like the trades."""
        rank = np.zeros(len(self.times), dtype=np.int64)
        same = np.concatenate([[False], self.times[1:] == self.times[:-1]])
        for i in np.flatnonzero(same):
            rank[i] = rank[i - 1] + 1
        return self.times * 1_000_000 + rank


@dataclass
class TapeState:
    """What a fake exchange serves and what happened (faults hit, requests per path)."""

    tape: Tape
    faults: dict[int, str] = field(default_factory=dict)  # trades request number -> fault
    until_id: int | None = None  # truncated history: nothing after this trade id exists
    requests: Counter[str] = field(default_factory=Counter)
    trade_requests: int = 0
    faults_hit: Counter[str] = field(default_factory=Counter)
    last_trades: tuple[int, bytes, dict[str, str]] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def visible(self) -> int:
        """Number of trades that exist for the server (all, or up to `until_id`)."""
        if self.until_id is None:
            return len(self.tape.ids)
        return int(np.searchsorted(self.tape.ids, self.until_id, side="right"))


Reply = tuple[int, bytes, dict[str, str]]


def js(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    """A JSON reply."""
    return status, json.dumps(obj, separators=(",", ":")).encode(), headers or {}


HTML_5XX = b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>"  # noqa: E501


class FakeHandler(BaseHTTPRequestHandler):
    """Common routing: counts, faults on the trades endpoint, quiet log."""

    server: FakeExchange
    TRADES: ClassVar[tuple[str, ...]] = ()

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log."""

    def do_GET(self) -> None:
        """Route one GET; faults apply to trades requests only."""
        state = self.server.state
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        with state.lock:
            state.requests[url.path] += 1
            if url.path.endswith(self.TRADES):
                state.trade_requests += 1
                fault = state.faults.get(state.trade_requests)
                if fault == "duplicate" and state.last_trades is None:
                    fault = None
                if fault is not None:
                    state.faults_hit[fault] += 1
                    reply = self.fault(fault, state)
                else:
                    reply = self.route(url.path, query, state)
                    if reply[0] == 200:
                        state.last_trades = reply
            else:
                reply = self.route(url.path, query, state)
        status, body, headers = reply
        self.send_response(status)
        self.send_header("Content-Type", "text/html" if body.startswith(b"<") else "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def fault(self, fault: str, state: TapeState) -> Reply:
        """The injected answer."""
        if fault == "duplicate":
            assert state.last_trades is not None
            return state.last_trades
        if fault == "500":
            return 502, HTML_5XX, {}
        if fault == "429":
            return self.too_many()
        if fault == "ratelimit":
            return self.rate_limit_error()
        raise ValueError(f"unknown fault {fault!r}")

    def too_many(self) -> Reply:
        """HTTP 429 as the exchange sends it."""
        raise NotImplementedError

    def rate_limit_error(self) -> Reply:
        """The exchange's own rate-limit error."""
        raise NotImplementedError

    def route(self, path: str, query: dict[str, str], state: TapeState) -> Reply:
        """The exchange's answer to one GET."""
        raise NotImplementedError


class FakeExchange(LoopbackServer):
    """A fake exchange on 127.0.0.1; point ccxt at `.url`."""

    def __init__(self, handler: type[FakeHandler], state: TapeState) -> None:
        super().__init__(handler, state, handler.__name__)
        self.state: TapeState = state


def iso_us(ms: int) -> str:
    """Coinbase-style ISO time with microseconds."""
    return (EPOCH + timedelta(milliseconds=int(ms))).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ---------------------------------------------------------------- Kraken


class KrakenHandler(FakeHandler):
    """api.kraken.com public REST for pair XBTUSDT (ccxt symbol BTC/USDT)."""

    TRADES = ("/0/public/Trades",)
    PAIR = "XBTUSDT"

    def too_many(self) -> Reply:
        return js({"error": ["EGeneral:Too many requests"]}, 429)

    def rate_limit_error(self) -> Reply:
        return js({"error": ["EAPI:Rate limit exceeded"]})  # Kraken answers its errors with HTTP 200

    def route(self, path: str, query: dict[str, str], state: TapeState) -> Reply:
        if path == "/0/public/AssetPairs":
            pair = {
                "altname": "XBTUSDT", "wsname": "XBT/USDT", "aclass_base": "currency", "base": "XXBT",
                "aclass_quote": "currency", "quote": "USDT", "lot": "unit", "cost_decimals": 5,
                "pair_decimals": 2, "lot_decimals": 8, "lot_multiplier": 1, "leverage_buy": [2, 3],
                "leverage_sell": [2, 3], "fees": [[0, 0.4]], "fees_maker": [[0, 0.25]],
                "fee_volume_currency": "ZUSD", "margin_call": 80, "margin_stop": 40, "ordermin": "0.00005",
                "costmin": "0.5", "tick_size": "0.01", "status": "online",
            }  # fmt: skip
            return js({"error": [], "result": {self.PAIR: pair}})
        if path == "/0/public/Assets":
            assets = {
                "XXBT": {"aclass": "currency", "altname": "XBT", "decimals": 10, "display_decimals": 5,
                         "collateral_value": 1, "status": "enabled"},
                "USDT": {"aclass": "currency", "altname": "USDT", "decimals": 8, "display_decimals": 4,
                         "collateral_value": 1, "status": "enabled"},
            }  # fmt: skip
            return js({"error": [], "result": assets})
        if path == "/0/public/Trades":
            return self.trades(query, state)
        return js({"error": ["EGeneral:Unknown method"]}, 404)

    def trades(self, query: dict[str, str], state: TapeState) -> Reply:
        """Oldest first from `since` (seconds: at or after; nanosecond cursor: after), `count` <= 1000."""
        if query.get("pair") != self.PAIR:
            return js({"error": ["EQuery:Unknown asset pair"]})
        t, n = state.tape, state.visible()
        ns = self.server.ns  # type: ignore[attr-defined]
        count = min(int(query.get("count", 1000)), 1000)
        since = query.get("since", "0")
        if len(since) <= 10:  # whole seconds
            lo = int(np.searchsorted(t.times, int(since) * 1000, side="left"))
            cursor = int(since) * 1_000_000_000
        else:
            lo = int(np.searchsorted(ns, int(since), side="right"))
            cursor = int(since)
        hi = min(n, lo + count)
        rows = [
            [f"{t.prices[i]:.8f}", f"{t.amounts[i]:.8f}", round(int(t.times[i]) / 1000, 4),
             "b" if t.taker_buy[i] else "s", "m", "", int(t.ids[i])]
            for i in range(lo, hi)
        ]  # fmt: skip
        last = str(int(ns[hi - 1])) if hi > lo else str(cursor)
        return js({"error": [], "result": {self.PAIR: rows, "last": last}})


class FakeKraken(FakeExchange):
    """Fake Kraken (pair XBTUSDT = ccxt BTC/USDT)."""

    def __init__(self, state: TapeState) -> None:
        super().__init__(KrakenHandler, state)
        self.ns = state.tape.ns_cursor()


# ---------------------------------------------------------------- Coinbase Exchange


class CoinbaseHandler(FakeHandler):
    """api.exchange.coinbase.com public REST for product BTC-USDT."""

    TRADES = ("/trades",)
    PRODUCT = "BTC-USDT"

    def too_many(self) -> Reply:
        return js({"message": "Public rate limit exceeded"}, 429)

    def rate_limit_error(self) -> Reply:
        return js({"message": "Public rate limit exceeded"}, 429)  # Coinbase has only this one

    def route(self, path: str, query: dict[str, str], state: TapeState) -> Reply:
        if path == "/products":
            return js([{
                "id": self.PRODUCT, "base_currency": "BTC", "quote_currency": "USDT",
                "quote_increment": "0.01", "base_increment": "0.00000001", "display_name": "BTC-USDT",
                "min_market_funds": "1",
                "margin_enabled": False, "post_only": False, "limit_only": False, "cancel_only": False,
                "status": "online", "status_message": "", "trading_disabled": False, "fx_stablecoin": False,
                "max_slippage_percentage": "0.03000000", "auction_mode": False,
                "high_bid_limit_percentage": "",
            }])  # fmt: skip
        if path == "/currencies":
            return js([
                {"id": c, "name": c, "min_size": "0.00000001", "status": "online", "message": "",
                 "max_precision": "0.00000001", "convertible_to": [], "details": {"type": "crypto"},
                 "default_network": "", "supported_networks": []}
                for c in ("BTC", "USDT")
            ])  # fmt: skip
        if path == f"/products/{self.PRODUCT}/trades":
            return self.trades(query, state)
        if path.startswith("/products/") and path.endswith("/trades"):
            return js({"message": "NotFound"}, 404)
        return js({"message": "NotFound"}, 404)

    def trades(self, query: dict[str, str], state: TapeState) -> Reply:
        """Newest first: the `limit` (<= 1000, default 100) newest trades with ids below `after`."""
        t, n = state.tape, state.visible()
        limit = int(query.get("limit", 100))
        if not 1 <= limit <= 1000:
            return js({"message": "Invalid limit"}, 400)
        hi = n if "after" not in query else min(n, int(np.searchsorted(t.ids, int(query["after"]), "left")))
        lo = max(0, hi - limit)
        rows = [
            {"trade_id": int(t.ids[i]), "side": "sell" if t.taker_buy[i] else "buy",  # the maker's side
             "size": f"{t.amounts[i]:.8f}", "price": f"{t.prices[i]:.8f}", "time": iso_us(t.times[i])}
            for i in range(hi - 1, lo - 1, -1)
        ]  # fmt: skip
        headers = (
            {"CB-BEFORE": str(rows[0]["trade_id"]), "CB-AFTER": str(rows[-1]["trade_id"])} if rows else {}
        )
        return js(rows, 200, headers)


class FakeCoinbase(FakeExchange):
    """Fake Coinbase Exchange (product BTC-USDT = ccxt coinbaseexchange BTC/USDT)."""

    def __init__(self, state: TapeState) -> None:
        super().__init__(CoinbaseHandler, state)


# ---------------------------------------------------------------- OKX


class OkxHandler(FakeHandler):
    """www.okx.com public REST v5 for the spot instrument BTC-USDT."""

    TRADES = ("/market/trades", "/market/history-trades")
    INST = "BTC-USDT"

    def too_many(self) -> Reply:
        return js({"msg": "Too Many Requests", "code": "50011"}, 429)

    def rate_limit_error(self) -> Reply:
        return js(
            {"code": "50011", "msg": "Rate limit reached. Please refer to API documentation.", "data": []}
        )

    def route(self, path: str, query: dict[str, str], state: TapeState) -> Reply:
        if path == "/api/v5/public/instruments":
            data = []
            if query.get("instType") == "SPOT":
                data = [{
                    "instType": "SPOT", "instId": self.INST, "uly": "", "instFamily": "", "baseCcy": "BTC",
                    "quoteCcy": "USDT", "settleCcy": "", "ctVal": "", "ctMult": "", "ctValCcy": "",
                    "optType": "", "stk": "", "listTime": "1548133413000", "expTime": "", "lever": "10",
                    "tickSz": "0.01", "lotSz": "0.00000001", "minSz": "0.00001", "ctType": "", "alias": "",
                    "state": "live", "maxLmtSz": "9999999999", "maxMktSz": "1000000", "maxTwapSz": "",
                    "maxIcebergSz": "", "maxTriggerSz": "", "maxStopSz": "", "ruleType": "normal",
                }]  # fmt: skip
            return js({"code": "0", "msg": "", "data": data})
        if path in ("/api/v5/market/trades", "/api/v5/market/history-trades"):
            if query.get("instId") != self.INST:
                return js({"code": "51001", "msg": "Instrument ID does not exist", "data": []})
            return self.trades(path, query, state)
        if path.startswith("/api/v5/public/"):
            return js({"code": "0", "msg": "", "data": []})
        return js({"code": "50030", "msg": f"unknown endpoint {path}", "data": []}, 404)

    def trades(self, path: str, query: dict[str, str], state: TapeState) -> Reply:
        """Newest first below the `after` cursor (tradeId for type 1, ms for type 2)."""
        t, n = state.tape, state.visible()
        history = path.endswith("history-trades")
        limit = int(query.get("limit", 100))
        if not 1 <= limit <= (100 if history else 500):
            return js({"code": "51000", "msg": "Parameter limit error", "data": []}, 400)
        hi = n
        if history and "after" in query:
            key = t.times if query.get("type", "1") == "2" else t.ids
            hi = min(n, int(np.searchsorted(key, int(query["after"]), "left")))
        lo = max(0, hi - limit)
        data = [
            {"instId": self.INST, "side": "buy" if t.taker_buy[i] else "sell", "sz": f"{t.amounts[i]:.8f}",
             "px": f"{t.prices[i]:.8f}", "source": "0", "tradeId": str(int(t.ids[i])),
             "ts": str(int(t.times[i]))}
            for i in range(hi - 1, lo - 1, -1)
        ]  # fmt: skip
        return js({"code": "0", "msg": "", "data": data})


class FakeOkx(FakeExchange):
    """Fake OKX (spot BTC-USDT)."""

    def __init__(self, state: TapeState) -> None:
        super().__init__(OkxHandler, state)
