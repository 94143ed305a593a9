"""Trade-source configuration as a Dagster resource (which source an instrument uses is in settings)."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from crypto_platform.settings import Instrument
from crypto_platform.sources.base import TradeSource
from crypto_platform.sources.factory import build_source


class TradeSourcesResource(dg.ConfigurableResource):
    """Builds the configured source of each instrument; never substitutes one source for another."""

    seed: int = Field(default=7, description="Seed of the synthetic market simulator.")
    api_urls: dict[str, str] = Field(
        default_factory=dict,
        description="ccxt API base-URL override per exchange id (testnets, proxies, local test servers).",
    )

    def source_for(self, instrument: Instrument) -> TradeSource:
        """The source configured for this instrument."""
        return build_source(instrument, seed=self.seed, api_urls=self.api_urls or None)
