"""Trade-source configuration as a Dagster resource (which source an instrument uses is in settings)."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
from pydantic import Field

from crypto_platform.settings import Instrument, SettingsError
from crypto_platform.sources.base import TradeSource
from crypto_platform.sources.factory import build_source


class TradeSourcesResource(dg.ConfigurableResource):
    """Builds the configured source of each instrument; never substitutes one source for another."""

    seed: int = Field(default=7, description="Seed of the synthetic market simulator.")
    api_urls: dict[str, str] = Field(
        default_factory=dict,
        description="ccxt API base-URL override per exchange id (testnets, proxies, local test servers).",
    )
    now: str = Field(
        default="",
        description=(
            "The instant raw/trades and the sources take as 'now' (ISO-8601 with a UTC offset): for tests "
            "and for replaying how a past day was fetched live. Empty: the real clock."
        ),
    )

    def clock(self) -> datetime:
        """'Now' of ingestion: the configured instant, else the real UTC clock."""
        if not self.now:
            return datetime.now(UTC)
        try:
            ts = datetime.fromisoformat(self.now)
        except ValueError as exc:
            raise SettingsError(f"trade_sources.now {self.now!r} is not an ISO-8601 instant") from exc
        if ts.tzinfo is None:
            raise SettingsError(f"trade_sources.now {self.now!r} has no UTC offset (e.g. +00:00)")
        return ts.astimezone(UTC)

    def source_for(self, instrument: Instrument, *, rate_limit_factor: int = 1) -> TradeSource:
        """The source configured for this instrument, on the same clock as the raw asset
        (`rate_limit_factor`: an exchange client spaces its requests that many times wider)."""
        return build_source(
            instrument,
            seed=self.seed,
            api_urls=self.api_urls or None,
            now=self.clock,
            rate_limit_factor=rate_limit_factor,
        )
