"""The platform's universe, defined once: instruments (exchange x symbol), their sources, dates.

Everything that has to be known when the code location loads (partition keys) comes from here. The
instruments file in force is a setting ($CRYPTO_INSTRUMENTS), read with every other setting of the
environment by `crypto_platform.platform_settings`.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml

from crypto_platform.platform_settings import (
    DEFAULT_INSTRUMENTS_FILE,
    INSTRUMENTS_ENV,
    PACKAGE_DIR,
    PROJECT_DIR,
    SettingsError,
    load_settings,
)

# Paths and the error are defined with the settings; the universe's importers find them here too.
__all__ = ["DEFAULT_INSTRUMENTS_FILE", "INSTRUMENTS_ENV", "PACKAGE_DIR", "PROJECT_DIR", "SettingsError"]

SourceKind = Literal["synthetic", "ccxt", "replay", "candles"]
SOURCE_KINDS: tuple[str, ...] = ("synthetic", "ccxt", "replay", "candles")
# Sources that deliver trades (raw -> bronze -> silver). A 'candles' instrument has no trades: its
# silver 1-minute candles only come from OHLCV history imported by the `import_candles` job.
TRADE_SOURCE_KINDS: tuple[str, ...] = ("synthetic", "ccxt", "replay")
# Sources that deliver trades as they happen (the live sensor keeps them fresh); replay is history.
LIVE_SOURCE_KINDS: tuple[str, ...] = ("synthetic", "ccxt")
CANDLE_IMPORT_FORMATS: tuple[str, ...] = ("auto", "csv", "kraken", "binance", "parquet", "feather")
VOLUME_UNITS: tuple[str, ...] = ("base", "quote")
SYNTHETIC_EXCHANGE = "sim"
# Instrument options: what an entry of the instruments file may carry besides exchange/symbol/source.
# Anything else is rejected, so a typo (`api_ur:`) never falls back silently (e.g. to the real exchange
# instead of the configured proxy).
CCXT_CLIENT_OPTIONS: tuple[str, ...] = (
    "page_limit",
    "max_retries",
    "backoff_seconds",
    "timeout_ms",
    "exchange_options",
)
COMMON_OPTIONS: tuple[str, ...] = ("min_non_empty_share",)  # candles_1m_suite's liquidity floor
SOURCE_OPTIONS: dict[str, tuple[str, ...]] = {
    "synthetic": ("trades_per_minute",),
    "ccxt": ("api_url", *CCXT_CLIENT_OPTIONS),
    "replay": ("path", "klines"),  # klines: recorded 1-minute OHLCV (file/glob) to reconcile with
    # import defaults of import_candles_job: a file (path, format, volume_unit) or ccxt fetch_ohlcv
    # (its page size is the job's config, not an instrument option)
    "candles": ("path", "format", "volume_unit", "api_url", *CCXT_CLIENT_OPTIONS[1:]),
}
_EXCHANGE_RE = re.compile(r"^[a-z0-9_]+$")
_SYMBOL_RE = re.compile(r"^[A-Za-z0-9.]+/[A-Za-z0-9.]+(:[A-Za-z0-9.\-]+)?$")


def symbol_slug(symbol: str) -> str:
    """'BTC/USDT' -> 'BTC-USDT', 'BTC/USDT:USDT' -> 'BTC-USDT-USDT': safe in paths and partition keys."""
    return symbol.replace("/", "-").replace(":", "-")


@dataclass(frozen=True)
class Instrument:
    """One traded market: a ccxt exchange id and a ccxt unified symbol, plus where its trades come from."""

    exchange: str
    symbol: str
    source: SourceKind = "synthetic"
    options: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def slug(self) -> str:
        return symbol_slug(self.symbol)

    @property
    def key(self) -> str:
        """The `instrument` partition key, e.g. 'binance.BTC-USDT'."""
        return f"{self.exchange}.{self.slug}"

    @property
    def has_trades(self) -> bool:
        """False for 'candles' instruments, whose history only comes as imported OHLCV bars."""
        return self.source in TRADE_SOURCE_KINDS

    @property
    def is_live(self) -> bool:
        """True for sources that deliver trades as they happen (kept fresh by the live sensor)."""
        return self.source in LIVE_SOURCE_KINDS

    @property
    def base(self) -> str:
        return self.symbol.split("/")[0]

    @property
    def quote(self) -> str:
        return self.symbol.split("/")[1].split(":")[0]


@dataclass(frozen=True)
class Universe:
    """The configured instruments and the first partition date."""

    start_date: date
    instruments: tuple[Instrument, ...]
    path: Path

    @property
    def keys(self) -> list[str]:
        return [i.key for i in self.instruments]

    def instrument(self, key: str) -> Instrument:
        """Look an instrument up by partition key; unknown keys are a clear error."""
        for inst in self.instruments:
            if inst.key == key:
                return inst
        raise SettingsError(f"unknown instrument {key!r}: not in {self.path} (known: {', '.join(self.keys)})")


def _ccxt_exchange_ids() -> list[str]:
    """The exchange ids the installed ccxt knows (imported only when an instrument uses ccxt)."""
    import ccxt

    return list(ccxt.exchanges)


def parse_universe(raw: dict[str, Any], path: Path) -> Universe:
    """Validate the YAML document of an instruments file."""
    if not isinstance(raw, dict) or "instruments" not in raw:
        raise SettingsError(f"{path}: expected a mapping with an 'instruments' list")
    try:
        start = date.fromisoformat(str(raw.get("start_date", "2024-01-01")))
    except ValueError as exc:
        raise SettingsError(f"{path}: start_date {raw.get('start_date')!r} is not YYYY-MM-DD") from exc
    items = raw["instruments"]
    if not isinstance(items, list) or not items:
        raise SettingsError(f"{path}: 'instruments' must be a non-empty list")
    out: list[Instrument] = []
    for n, item in enumerate(items):
        where = f"{path}: instruments[{n}]"
        if not isinstance(item, dict):
            raise SettingsError(f"{where}: expected a mapping, got {item!r}")
        exchange = str(item.get("exchange", "")).strip()
        symbol = str(item.get("symbol", "")).strip()
        source = str(item.get("source", "synthetic")).strip()
        if not _EXCHANGE_RE.match(exchange):
            raise SettingsError(f"{where}: exchange {exchange!r} is not a ccxt exchange id (lowercase)")
        if not _SYMBOL_RE.match(symbol):
            raise SettingsError(f"{where}: symbol {symbol!r} is not a ccxt unified symbol like 'BTC/USDT'")
        if source not in SOURCE_KINDS:
            raise SettingsError(f"{where}: source {source!r} is not one of {', '.join(SOURCE_KINDS)}")
        if (source == "synthetic") != (exchange == SYNTHETIC_EXCHANGE):
            raise SettingsError(
                f"{where}: the synthetic source is only allowed with exchange '{SYNTHETIC_EXCHANGE}' "
                f"(and '{SYNTHETIC_EXCHANGE}' only with the synthetic source), so simulated trades are "
                "never labelled as a real exchange's"
            )
        if source == "ccxt" and exchange not in _ccxt_exchange_ids():
            close = difflib.get_close_matches(exchange, _ccxt_exchange_ids(), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SettingsError(f"{where}: exchange {exchange!r} is not an exchange id of ccxt{hint}")
        allowed = {"exchange", "symbol", "source", *COMMON_OPTIONS, *SOURCE_OPTIONS[source]}
        for unknown in [k for k in item if k not in allowed]:
            close = difflib.get_close_matches(str(unknown), sorted(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SettingsError(
                f"{where} ({exchange} {symbol}): unknown option {unknown!r} for source {source!r}{hint}; "
                f"allowed: {', '.join(sorted(allowed))}"
            )
        if source == "replay" and not item.get("path"):
            raise SettingsError(f"{where}: source 'replay' needs a 'path' (file or glob of recorded trades)")
        if source == "candles" and str(item.get("format", "auto")) not in CANDLE_IMPORT_FORMATS:
            raise SettingsError(
                f"{where}: format {item['format']!r} is not one of {', '.join(CANDLE_IMPORT_FORMATS)}"
            )
        if source == "candles" and str(item.get("volume_unit", "base")) not in VOLUME_UNITS:
            raise SettingsError(f"{where}: volume_unit {item['volume_unit']!r} is not one of base, quote")
        options = {k: v for k, v in item.items() if k not in {"exchange", "symbol", "source"}}
        out.append(Instrument(exchange, symbol, source, options))  # type: ignore[arg-type]
    keys = [i.key for i in out]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise SettingsError(f"{path}: instruments listed twice: {', '.join(dupes)}")
    return Universe(start_date=start, instruments=tuple(out), path=path)


def instruments_file() -> Path:
    """The instruments file in force: $CRYPTO_INSTRUMENTS, else the packaged default."""
    return load_settings().instruments


@cache
def load_universe(path: Path | None = None) -> Universe:
    """Load and validate the instruments file (cached: partitions are fixed per process)."""
    path = path or instruments_file()
    if not path.exists():
        raise SettingsError(f"instruments file {path} does not exist (set {INSTRUMENTS_ENV})")
    with path.open() as fh:
        raw = yaml.safe_load(fh)
    return parse_universe(raw, path)
