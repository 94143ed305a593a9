"""Build the configured trade source of an instrument; never substitutes one source for another."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from crypto_platform import settings
from crypto_platform.settings import Instrument
from crypto_platform.sources.base import SourceError, TradeSource

# instrument options passed through to CcxtSource (settings rejects options a source does not know)
CCXT_OPTIONS = settings.CCXT_CLIENT_OPTIONS


def replay_path(instrument: Instrument, project_dir: Path, option: str = "path") -> str:
    """A replay file/glob option of an instrument (`path`: its trades, `klines`: its recorded candles),
    relative paths taken from the project (repo) root."""
    raw = instrument.options.get(option)
    if not raw:
        raise SourceError(f"replay: instrument {instrument.key} has no {option!r} option (file or glob)")
    path = Path(str(raw)).expanduser()
    return str(path if path.is_absolute() else project_dir / path)


def build_source(
    instrument: Instrument,
    *,
    seed: int = 7,
    api_urls: dict[str, str] | None = None,
    now: Callable[[], datetime] | None = None,
    project_dir: Path = settings.PROJECT_DIR,
    rate_limit_factor: int = 1,
) -> TradeSource:
    """The source named by `instrument.source` (synthetic | ccxt | replay), configured from its options;
    `api_urls` maps exchange id -> ccxt API base-URL override (else the instrument's `api_url` option)."""
    kind = instrument.source
    if kind == "synthetic":
        from crypto_platform.sources.synthetic import SyntheticSource

        return SyntheticSource(seed=seed, now=now)  # per-instrument trades_per_minute is read at fetch
    if kind == "ccxt":
        from crypto_platform.sources.ccxt_source import CcxtSource

        api_url = (api_urls or {}).get(instrument.exchange) or instrument.options.get("api_url")
        extra = {k: instrument.options[k] for k in CCXT_OPTIONS if k in instrument.options}
        return CcxtSource(
            instrument.exchange, api_url=api_url, now=now, rate_limit_factor=rate_limit_factor, **extra
        )
    if kind == "replay":
        from crypto_platform.sources.replay import ReplaySource

        start = settings.load_universe().start_date  # rows timed before the partition grid are rejected
        earliest = datetime(start.year, start.month, start.day, tzinfo=UTC)
        return ReplaySource(replay_path(instrument, project_dir), now=now, earliest=earliest)
    if kind == "candles":
        raise SourceError(
            f"instrument {instrument.key} has source 'candles': it has no trades, only 1-minute OHLCV "
            "history imported by import_candles_job into silver/candles_1m (docs/gold.md); do not "
            "materialize raw/bronze trades for it"
        )
    raise SourceError(
        f"instrument {instrument.key}: unknown source {kind!r} (expected one of {settings.SOURCE_KINDS})"
    )
