"""What the prediction API reads and its limits, from the environment (`ServingSettings.from_env`).

The clocks are settings too: `clock` (UTC wall time: ages and freshness) and `monotonic` (the cache's
re-check interval), so tests move time instead of sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from crypto_platform.platform_settings import PlatformSettings, env_name, load_settings
from crypto_platform.settings import SettingsError, Universe, instruments_file, load_universe

DEFAULT_MAX_LAG_SECONDS = PlatformSettings.freshness_max_lag_seconds
MAX_RANGE_ENV = env_name("serving_max_range_hours")
DEFAULT_MAX_RANGE_HOURS = PlatformSettings.serving_max_range_hours
DEFAULT_CACHE_CHECK_SECONDS = PlatformSettings.serving_cache_check_seconds


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ServingSettings:
    """Lake root, instrument universe, freshness limit, range limit and cache behaviour of the API."""

    lake_root: str = "data/lake"
    instruments_path: Path | None = None  # None: the platform's instruments file in force
    # stale = the newest prediction's minute closed longer ago than this: the live_data_lag check's limit
    stale_after_seconds: float = DEFAULT_MAX_LAG_SECONDS
    max_range_hours: float = DEFAULT_MAX_RANGE_HOURS
    cache: bool = True
    # A cached answer is re-validated (its source files stat'ed) at most this often: the bound on how
    # long an answer may lag a prediction that is already readable in DuckDB. 0: on every request.
    cache_check_seconds: float = DEFAULT_CACHE_CHECK_SECONDS
    cache_max_rows: int = 100_000  # rows held by all cached answers together (LRU beyond)
    clock: Callable[[], datetime] = field(default=utc_now, compare=False)
    monotonic: Callable[[], float] = field(default=time.monotonic, compare=False)

    def __post_init__(self) -> None:
        for name in ("stale_after_seconds", "max_range_hours"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"serving setting {name} must be > 0, got {getattr(self, name)}")
        if self.cache_check_seconds < 0:
            raise SettingsError(
                f"serving setting cache_check_seconds must be >= 0, got {self.cache_check_seconds}"
            )

    @property
    def universe(self) -> Universe:
        return load_universe(self.instruments_path or instruments_file())

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> ServingSettings:
        """The API's settings from the platform's one settings object (CRYPTO_* variables, README)."""
        ps = load_settings() if env is None else PlatformSettings.from_env(env)
        values: dict[str, object] = {
            "lake_root": ps.lake_root,
            "instruments_path": ps.instruments,
            "stale_after_seconds": ps.freshness_max_lag_seconds,
            "max_range_hours": ps.serving_max_range_hours,
            "cache": ps.serving_cache,
            "cache_check_seconds": ps.serving_cache_check_seconds,
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]
