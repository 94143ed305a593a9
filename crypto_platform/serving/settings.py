"""What the prediction API reads and its limits, from the environment (`ServingSettings.from_env`).

The clocks are settings too: `clock` (UTC wall time: ages and freshness) and `monotonic` (the cache's
re-check interval), so tests move time instead of sleeping.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from crypto_platform.checks.freshness import DEFAULT_MAX_LAG_SECONDS, max_lag_seconds
from crypto_platform.resources.lake import LAKE_ROOT_ENV
from crypto_platform.settings import SettingsError, Universe, instruments_file, load_universe

MAX_RANGE_ENV = "CRYPTO_SERVING_MAX_RANGE_HOURS"
CACHE_ENV = "CRYPTO_SERVING_CACHE"
CACHE_CHECK_ENV = "CRYPTO_SERVING_CACHE_CHECK_SECONDS"
DEFAULT_MAX_RANGE_HOURS = 24.0
DEFAULT_CACHE_CHECK_SECONDS = 1.0


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
        """Settings from the platform's environment variables (see README, 'Prediction API')."""
        env = os.environ if env is None else env
        values: dict[str, object] = {
            "lake_root": env.get(LAKE_ROOT_ENV) or "data/lake",
            "stale_after_seconds": max_lag_seconds(),
            "max_range_hours": _number(env, MAX_RANGE_ENV, DEFAULT_MAX_RANGE_HOURS),
            "cache": _flag(env, CACHE_ENV, True),
            "cache_check_seconds": _number(env, CACHE_CHECK_ENV, DEFAULT_CACHE_CHECK_SECONDS),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r}: expected a number") from exc


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name}={raw!r}: expected true or false")
