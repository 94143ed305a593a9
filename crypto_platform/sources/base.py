"""The one interface every trade source implements, and the batch it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import polars as pl

from crypto_platform.settings import Instrument


class SourceError(RuntimeError):
    """A source could not deliver trades; the message names the source, instrument and cause."""


@dataclass(frozen=True)
class TradeBatch:
    """Trades of one instrument fetched for [covered_from, covered_to).

    `trades` follows `schemas.RAW_TRADES`, exactly as received (it may hold rows that bronze will
    reject). The coverage is what the source vouches for: every trade it knows of with a timestamp
    in [covered_from, covered_to) is in the batch, so an empty minute inside it is truly empty.
    `complete`: the coverage reaches the requested end; else `reason` says why not (exchange, symbol,
    instant, what was tried). `wire`: what happened on the wire (requests, pages, retries, ...).
    """

    trades: pl.DataFrame
    covered_from: datetime
    covered_to: datetime
    complete: bool = True
    reason: str | None = None
    wire: dict[str, Any] = field(default_factory=dict)


class TradeSource(Protocol):
    """Fetch all trades of an instrument with exchange timestamps in [start, end)."""

    def fetch(self, instrument: Instrument, start: datetime, end: datetime) -> TradeBatch:
        """Return the trades in [start, end), with the coverage actually achieved (<= end)."""
        ...
