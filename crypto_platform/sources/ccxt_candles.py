"""1-minute OHLCV history from a real exchange through ccxt `fetch_ohlcv`, paged forward from `since`.

Tick history is rarely available for months; 1-minute bars are. `CcxtCandles` pages through them with
the same ccxt client, retries and market checks as the trade source (`CcxtSource`): each page starts
one minute after the newest bar of the previous one, bars outside [since, end) are dropped, a bar
served twice is kept once, and paging stops at `end` or when the exchange has nothing newer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from crypto_platform.settings import CCXT_CLIENT_OPTIONS, Instrument
from crypto_platform.sources.base import SourceError
from crypto_platform.sources.ccxt_source import CcxtSource
from crypto_platform.timeutil import epoch_ms_ceil

TIMEFRAME = "1m"
BAR_MS = 60_000
# the instrument's ccxt client options; the page size is the import's own setting
CLIENT_OPTIONS = tuple(k for k in CCXT_CLIENT_OPTIONS if k != "page_limit")


@dataclass(frozen=True)
class CandleRows:
    """ccxt OHLCV rows ([ms, open, high, low, close, volume]) oldest first, and the requests it took."""

    rows: list[list]
    requests: int


class CcxtCandles:
    """An exchange's 1-minute OHLCV history through ccxt (a `CcxtSource` client underneath)."""

    def __init__(self, source: CcxtSource) -> None:
        self.source = source

    @classmethod
    def for_instrument(
        cls, inst: Instrument, *, api_url: str | None = None, page_limit: int = 1000
    ) -> CcxtCandles:
        """The client of an instrument's exchange with its ccxt options (`api_url` overrides its own)."""
        extra = {k: inst.options[k] for k in CLIENT_OPTIONS if k in inst.options}
        url = api_url or inst.options.get("api_url")
        return cls(CcxtSource(inst.exchange, api_url=url, page_limit=page_limit, **extra))

    def fetch(self, symbol: str, since: datetime, end: datetime) -> CandleRows:
        """The 1-minute bars of `symbol` with since <= time < end (SourceError: unlisted symbol, no
        fetch_ohlcv, errors that retries did not cure)."""
        src = self.source
        src.check_symbol(symbol)
        if not src.exchange.has.get("fetchOHLCV"):
            raise SourceError(f"ccxt {src.exchange_id} has no fetch_ohlcv; import its OHLCV files instead")
        since_ms, end_ms = epoch_ms_ceil(since), epoch_ms_ceil(end)
        bars: dict[int, list] = {}
        cursor, requests = since_ms, 0
        while cursor < end_ms:
            page = src.call(
                f"fetch_ohlcv(since={cursor})",
                symbol,
                src.exchange.fetch_ohlcv,
                symbol,
                TIMEFRAME,
                since=cursor,
                limit=src.page_limit,
            )
            requests += 1
            valid = [r for r in page if r and r[0] is not None]
            times = [int(r[0]) for r in valid]
            bars.update((int(r[0]), list(r)) for r in valid)  # a bar served twice: the later copy
            if not times or max(times) < cursor:
                break  # nothing newer than the cursor: the exchange has no more history
            cursor = max(times) + BAR_MS
        return CandleRows([bars[t] for t in sorted(bars) if since_ms <= t < end_ms], requests)
