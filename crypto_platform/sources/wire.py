"""One exchange's trades endpoint on the wire through ccxt: retries per error class, rate-limit waits,
duplicate pages, stuck cursors, and connection errors that say what happened and where."""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from crypto_platform.sources.base import SourceError
from crypto_platform.timeutil import EPOCH

if TYPE_CHECKING:
    import ccxt

log = logging.getLogger(__name__)

# ccxt (~3 s to import) is imported on first use, not when the code location loads: `RETRYABLE` and
# `RATE_LIMITED` are module attributes computed on first access (PEP 562 `__getattr__` below).
_RETRYABLE_NAMES = (  # ccxt errors worth retrying: network trouble, rate limits, maintenance, time-outs
    "NetworkError",
    "RateLimitExceeded",
    "ExchangeNotAvailable",
    "RequestTimeout",
    "DDoSProtection",
    "OperationFailed",  # e.g. Binance -1000 "An unknown error occurred while processing the request."
)
_RATE_LIMITED_NAMES = ("RateLimitExceeded", "DDoSProtection")
MAX_REPEATS = 3  # the same page (or a cursor that does not advance) this many times in a row: stuck
_URL = re.compile(r"(?:https?|wss?)://\S+")


def __getattr__(name: str) -> Any:
    """RETRYABLE / RATE_LIMITED: tuples of ccxt error classes, resolved (and ccxt imported) on first use."""
    names = {"RETRYABLE": _RETRYABLE_NAMES, "RATE_LIMITED": _RATE_LIMITED_NAMES}.get(name)
    if names is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import ccxt

    value = tuple(getattr(ccxt, n) for n in names)
    globals()[name] = value
    return value


class StuckCursorError(SourceError):
    """The exchange answered the same page again and again: the cursor does not advance."""


def iso_ms(ms: int | None) -> str:
    """ISO-8601 UTC instant of epoch milliseconds (for messages)."""
    if ms is None:
        return "-"
    return (EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds")


def connection_problem(exc: BaseException) -> str | None:
    """What went wrong on the connection ('connection refused', 'DNS lookup failed', 'TLS handshake
    failed', 'timed out', 'connection reset'), from the exception and its causes; None when not one."""
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(chain) < 10:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    text = " ".join(f"{type(e).__name__} {e}" for e in chain).lower()
    if "ssl" in text or "certificate" in text or "tls" in text:
        return "TLS handshake failed"
    if "refused" in text:
        return "connection refused"
    if any(s in text for s in ("name resolution", "name or service not known", "nodename nor servname",
                               "getaddrinfo", "nameresolutionerror", "no address associated")):  # fmt: skip
        return "DNS lookup failed"
    if "timed out" in text or "timeout" in text:
        return "timed out"
    if "reset" in text or "connection aborted" in text or "remotedisconnected" in text:
        return "connection reset"
    return None


def describe(exc: BaseException) -> str:
    """`ErrorClass: message`, led by the connection problem and URL when it is one."""
    problem = connection_problem(exc)
    if problem is None:
        return f"{type(exc).__name__}: {exc}"
    urls = _URL.findall(str(exc))
    where = f" ({urls[0]})" if urls else ""
    return f"{problem}{where} [{type(exc).__name__}: {exc}]"


@dataclass
class WireStats:
    """What happened on the wire during one fetch (shown as raw-materialization metadata)."""

    requests: int = 0  # HTTP requests for trades, retries and repeats included
    pages: int = 0  # pages that advanced the walk
    retries: Counter[str] = field(default_factory=Counter)  # ccxt error class -> retries
    rate_limit_waits: int = 0
    rate_limit_wait_seconds: float = 0.0
    duplicate_pages: int = 0  # stale/duplicated pages dropped (asked again)

    def as_dict(self) -> dict[str, Any]:
        """Flat figures, e.g. for Dagster metadata (`retries_<ErrorClass>` per error class)."""
        out: dict[str, Any] = {
            "requests": self.requests,
            "pages": self.pages,
            "retries": sum(self.retries.values()),
            "rate_limit_waits": self.rate_limit_waits,
            "rate_limit_wait_seconds": round(self.rate_limit_wait_seconds, 3),
            "duplicate_pages": self.duplicate_pages,
        }
        out.update({f"retries_{k}": v for k, v in sorted(self.retries.items())})
        return out


class Wire:
    """ccxt calls of one (exchange, symbol) walk, retried with back-off and counted in `stats`."""

    def __init__(
        self,
        exchange: ccxt.Exchange,
        symbol: str,
        limit: int,
        max_retries: int = 5,
        backoff_seconds: float = 1.0,
        max_repeats: int = MAX_REPEATS,
    ) -> None:
        self.exchange = exchange
        self.exchange_id: str = exchange.id
        self.symbol = symbol
        self.limit = limit
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self.max_repeats = max_repeats
        self.stats = WireStats()
        self._repeats = 0

    def where(self) -> str:
        """'ccxt <exchange> <symbol>' for messages."""
        return f"ccxt {self.exchange_id} {self.symbol}"

    def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call ccxt, retrying transient errors with exponential back-off; other errors fail at once."""
        import ccxt

        retryable, rate_limited = __getattr__("RETRYABLE"), __getattr__("RATE_LIMITED")
        last: Exception | None = None
        for attempt in range(self.max_retries + 1):
            try:
                return fn(*args, **kwargs)
            except retryable as exc:
                last = exc
                if attempt < self.max_retries:
                    delay = self.backoff_seconds * 2**attempt
                    self.stats.retries[type(exc).__name__] += 1
                    if isinstance(exc, rate_limited):
                        self.stats.rate_limit_waits += 1
                        self.stats.rate_limit_wait_seconds += delay
                    log.warning("%s %s: %s; retry %d in %.2fs", self.where(), what, describe(exc),
                                attempt + 1, delay)  # fmt: skip
                    time.sleep(delay)
            except ccxt.BaseError as exc:
                raise SourceError(f"{self.where()}: {what} failed: {describe(exc)}") from exc
        assert last is not None
        raise SourceError(
            f"{self.where()}: {what} failed after {self.max_retries + 1} attempts "
            f"({self.max_retries} retries); last error: {describe(last)}"
        ) from last

    def trades(
        self, what: str, *, since: int | None = None, limit: int | None = None, params: dict | None = None
    ) -> list[dict[str, Any]]:
        """One `fetch_trades` request (retried), in the order ccxt returns them (oldest first)."""

        def counted() -> list[dict[str, Any]]:
            self.stats.requests += 1
            return self.exchange.fetch_trades(self.symbol, since, limit, dict(params or {}))

        return self.call(what, counted)

    def advanced(self) -> None:
        """A page moved the walk on (resets the repeat count)."""
        self.stats.pages += 1
        self._repeats = 0

    def repeated(self, cursor: str, ts_ms: int | None) -> None:
        """The exchange answered with a page already seen for `cursor`: drop it and ask again, or fail
        with `StuckCursorError` after `max_repeats` in a row (never a quiet stop)."""
        self.stats.duplicate_pages += 1
        self._repeats += 1
        if self._repeats >= self.max_repeats:
            raise StuckCursorError(
                f"{self.where()}: stuck cursor: {self._repeats} answers in a row to {cursor} repeated a page "
                f"already read (the walk had reached the trade at {iso_ms(ts_ms)}); the exchange does not "
                "advance past it, so the trades after that instant cannot be read"
            )
        log.warning("%s: a page already read came back for %s (at %s); dropped, asking again",
                    self.where(), cursor, iso_ms(ts_ms))  # fmt: skip


WIRE_SUMS: tuple[str, ...] = ("requests", "pages", "retries", "rate_limit_waits", "duplicate_pages")


def wire_summary(wire: dict[str, Any]) -> str:
    """One line for the event log: requests, pages, retries per error class, waits, duplicates."""
    by_class = ", ".join(
        f"{k.removeprefix('retries_')} {v}" for k, v in wire.items() if k.startswith("retries_")
    )
    text = (
        f"{wire.get('requests', 0)} requests, {wire.get('pages', 0)} pages, {wire.get('retries', 0)} retries"
    )
    text += f" ({by_class})" if by_class else ""
    text += (
        f", {wire.get('rate_limit_waits', 0)} rate-limit waits ({wire.get('rate_limit_wait_seconds', 0):g} s)"
    )
    text += f", {wire.get('duplicate_pages', 0)} duplicate pages dropped"
    return text + (f"; paged by {wire['paging']}" if wire.get("paging") else "")


def retries_by_class(wires: list[dict[str, Any]]) -> dict[str, int]:
    """Retries per ccxt error class, summed over several fetches."""
    total: Counter[str] = Counter()
    for wire in wires:
        total.update({k[len("retries_") :]: int(v) for k, v in wire.items() if k.startswith("retries_")})
    return dict(sorted(total.items()))
