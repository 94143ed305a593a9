"""Trades from a real exchange through ccxt (sync): each exchange paged by its own cursor, coverage
only as far as the exchange's answers prove it, retries, wire statistics.

The paging itself (one pager per exchange, and what each proves) is `sources/paging.py`; the calls,
retries per error class, duplicate pages and stuck cursors are `sources/wire.py`.
Loaded markets are shared in-process per (exchange id, API URL, options) for `markets_ttl_seconds`,
so the partitions of one run (a backfill range) and later sources in the same process load them once.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import ccxt
import polars as pl

from crypto_platform import schemas
from crypto_platform.settings import Instrument
from crypto_platform.sources.base import SourceError, TradeBatch
from crypto_platform.sources.paging import pager_for
from crypto_platform.sources.wire import Wire
from crypto_platform.timeutil import EPOCH, epoch_ms_ceil

log = logging.getLogger(__name__)

MARKETS_TTL_SECONDS = 3600.0  # the listed markets change rarely; a symbol missing from them forces a reload
# (exchange id, API URL, options JSON) -> (monotonic time loaded, markets, currencies)
_MARKETS: dict[tuple[str, str, str], tuple[float, dict, dict | None]] = {}
_MARKETS_LOCK = threading.Lock()


def clear_markets_cache() -> None:
    """Forget every cached market list (the next source loads them from the exchange)."""
    with _MARKETS_LOCK:
        _MARKETS.clear()


def override_api_urls(api: Any, base_url: str) -> Any:
    """Copy of ccxt `urls['api']` with every URL's scheme://host replaced by `base_url` (paths kept),
    so one override serves all of an exchange's endpoint families (binance: /api/v3, /fapi/v1, ...)."""
    if isinstance(api, str):
        parts = urlsplit(api)
        if parts.scheme in ("http", "https", "ws", "wss") and parts.netloc:
            return base_url.rstrip("/") + api[len(f"{parts.scheme}://{parts.netloc}") :]
        return api
    if isinstance(api, dict):
        return {k: override_api_urls(v, base_url) for k, v in api.items()}
    if isinstance(api, list):
        return [override_api_urls(v, base_url) for v in api]
    return api


def trade_key(trade: dict[str, Any]) -> Any:
    """De-duplication key of a ccxt trade: its id, else its content."""
    tid = trade.get("id")
    if tid is not None:
        return str(tid)
    return (trade.get("timestamp"), trade.get("price"), trade.get("amount"), trade.get("side"))


def trades_frame(
    trades: list[dict[str, Any]], exchange: str, symbol: str, received_at: datetime
) -> pl.DataFrame:
    """RAW_TRADES frame from ccxt unified trade dicts (ccxt's parsing; payload = the raw `info`)."""
    df = pl.DataFrame(
        {
            "exchange": [exchange] * len(trades),
            "symbol": [symbol] * len(trades),
            "trade_id": [None if t.get("id") is None else str(t["id"]) for t in trades],
            "timestamp_ms": [t.get("timestamp") for t in trades],
            "price": [t.get("price") for t in trades],
            "amount": [t.get("amount") for t in trades],
            "cost": [t.get("cost") for t in trades],
            "side": [t.get("side") for t in trades],
            "payload": [json.dumps(t.get("info"), separators=(",", ":")) for t in trades],
            "source": ["ccxt"] * len(trades),
            "received_at": [received_at] * len(trades),
        },
        schema=schemas.RAW_TRADES,
        strict=False,
    )
    return schemas.conform(df, schemas.RAW_TRADES, name=f"raw trades (ccxt {exchange} {symbol})")


class CcxtSource:
    """A ccxt exchange's public trades for [start, end), paginated, de-duplicated and retried."""

    def __init__(
        self,
        exchange_id: str,
        api_url: str | None = None,
        page_limit: int = 1000,
        max_retries: int = 5,
        backoff_seconds: float = 1.0,
        timeout_ms: int = 10000,
        now: Callable[[], datetime] | None = None,
        exchange_options: dict | None = None,
        markets_ttl_seconds: float = MARKETS_TTL_SECONDS,
        rate_limit_ms: float | None = None,
        rate_limit_factor: int = 1,
    ) -> None:
        if exchange_id not in ccxt.exchanges:
            raise SourceError(f"ccxt: unknown exchange id {exchange_id!r} (not in ccxt.exchanges)")
        if page_limit < 1 or max_retries < 0 or backoff_seconds < 0 or rate_limit_factor < 1:
            raise ValueError(
                "page_limit and rate_limit_factor must be >= 1, max_retries and backoff_seconds >= 0"
            )
        self.exchange_id = exchange_id
        self.api_url = api_url
        self.page_limit = page_limit
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self.timeout_ms = timeout_ms
        self.exchange_options = dict(exchange_options or {})
        self.markets_ttl_seconds = markets_ttl_seconds
        self.rate_limit_ms = rate_limit_ms  # ccxt's request spacing (None: the exchange's own default)
        self.rate_limit_factor = rate_limit_factor  # runs sharing the exchange's limit: spacing x this
        self._now = now or (lambda: datetime.now(UTC))
        self._exchange: ccxt.Exchange | None = None

    @property
    def exchange(self) -> ccxt.Exchange:
        """The ccxt client (created once; rate-limited; API URLs rewritten when overridden)."""
        if self._exchange is None:
            ex = getattr(ccxt, self.exchange_id)(
                {"enableRateLimit": True, "timeout": self.timeout_ms, "options": dict(self.exchange_options)}
            )
            if self.rate_limit_ms is not None:
                ex.rateLimit = self.rate_limit_ms
            ex.rateLimit = ex.rateLimit * self.rate_limit_factor
            if self.api_url:
                ex.urls["api"] = override_api_urls(ex.urls["api"], self.api_url)
            self._exchange = ex
        return self._exchange

    def wire(self, symbol: str) -> Wire:
        """A fresh, counted wire to this exchange for one symbol's walk."""
        return Wire(self.exchange, symbol, self.page_limit, self.max_retries, self.backoff_seconds)

    def call(self, what: str, symbol: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call ccxt, retrying transient errors with exponential back-off; other errors fail at once."""
        return self.wire(symbol).call(what, fn, *args, **kwargs)

    def markets(self, symbol: str, *, reload: bool = False) -> tuple[dict[str, Any], bool]:
        """(the exchange's markets, whether they came from the in-process cache); loaded with retries
        unless a fresh cached list exists for this exchange id, API URL and options."""
        options = json.dumps(self.exchange_options, sort_keys=True, default=str)
        key = (self.exchange_id, self.api_url or "", options)
        with _MARKETS_LOCK:
            cached = _MARKETS.get(key)
        if cached and not reload and time.monotonic() - cached[0] < self.markets_ttl_seconds:
            if not self.exchange.markets:
                self.exchange.set_markets(cached[1], cached[2])  # ccxt copies them into its own structures
            return self.exchange.markets, True
        markets = self.call("load_markets", symbol, self.exchange.load_markets, True)
        with _MARKETS_LOCK:
            _MARKETS[key] = (time.monotonic(), markets, self.exchange.currencies)
        return markets, False

    def check_symbol(self, symbol: str) -> None:
        """Fail clearly when the exchange does not list the symbol (a cached list is reloaded first)."""
        markets, cached = self.markets(symbol)
        if symbol not in markets and cached:
            markets, _ = self.markets(symbol, reload=True)  # listed since the markets were cached?
        if symbol not in markets:
            raise SourceError(
                f"ccxt {self.exchange_id}: symbol {symbol!r} is not listed ({len(markets)} markets loaded)"
            )

    def candles_1m(self, instrument: Instrument, start: datetime, end: datetime) -> pl.DataFrame:
        """The exchange's own 1-minute candles (`ts` open time, base `volume`) opening in [start, end),
        via ccxt `fetch_ohlcv` paged forward by open time (one candle per minute: timestamps page exactly)."""
        self.check_symbol(instrument.symbol)
        if not self.exchange.has.get("fetchOHLCV"):
            raise SourceError(f"ccxt {self.exchange_id}: no fetch_ohlcv, so no candles to reconcile with")
        wire = self.wire(instrument.symbol)
        start_ms, end_ms = epoch_ms_ceil(start), epoch_ms_ceil(end)
        bars: dict[int, float] = {}
        cursor = start_ms
        while cursor < end_ms:
            page = wire.call(f"fetch_ohlcv(1m, since={cursor})", self.exchange.fetch_ohlcv, instrument.symbol,
                             "1m", cursor, self.page_limit)  # fmt: skip
            times = [int(r[0]) for r in page if r and r[0] is not None]
            bars.update({int(r[0]): float(r[5] or 0.0) for r in page if r and start_ms <= int(r[0]) < end_ms})
            if not times or max(times) < cursor:
                break  # nothing newer: the exchange has no more candles
            cursor = max(times) + 60_000
        keys = sorted(bars)
        ts = pl.Series("ts", keys, pl.Int64).cast(pl.Datetime("ms", "UTC")).cast(schemas.UTC_TS)
        return pl.DataFrame([ts, pl.Series("volume", [bars[k] for k in keys], pl.Float64)])

    def fetch(self, instrument: Instrument, start: datetime, end: datetime) -> TradeBatch:
        """Trades in [start, end); coverage to `end` only when the exchange's answers prove it, else to
        the last instant the pager is sure of, with the reason."""
        if instrument.exchange != self.exchange_id:
            raise SourceError(
                f"ccxt {self.exchange_id}: instrument {instrument.key} "
                f"belongs to exchange {instrument.exchange!r}"
            )
        start = start.replace(tzinfo=UTC) if start.tzinfo is None else start.astimezone(UTC)
        end = end.replace(tzinfo=UTC) if end.tzinfo is None else end.astimezone(UTC)
        if end < start:
            raise SourceError(
                f"ccxt {self.exchange_id} {instrument.symbol}: window end {end} is before {start}"
            )
        self.check_symbol(instrument.symbol)
        now = self._now()
        now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
        start_ms, end_ms = epoch_ms_ceil(start), epoch_ms_ceil(end)
        wire = self.wire(instrument.symbol)
        if end_ms <= start_ms:
            return TradeBatch(trades_frame([], self.exchange_id, instrument.symbol, now), start, end)
        paged = pager_for(self.exchange_id).collect(wire, start_ms, end_ms, epoch_ms_ceil(now))
        sure = EPOCH + timedelta(milliseconds=paged.covered_to_ms)
        covered_to = end if paged.complete else max(start, sure)
        if paged.reason:
            log.warning("ccxt %s", paged.reason)
        frame = trades_frame(paged.trades, self.exchange_id, instrument.symbol, now)
        wire_stats = {"paging": paged.method, **wire.stats.as_dict()}
        return TradeBatch(frame, start, covered_to, paged.complete, paged.reason, wire_stats)
