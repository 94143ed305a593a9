"""The instruments file: valid universes load, every mistake is named precisely."""

from __future__ import annotations

from pathlib import Path

import pytest

from crypto_platform.settings import (
    DEFAULT_INSTRUMENTS_FILE,
    SettingsError,
    load_universe,
    parse_universe,
    symbol_slug,
)

P = Path("instruments.yaml")


def test_keys_and_slugs() -> None:
    u = parse_universe(
        {
            "instruments": [
                {"exchange": "sim", "symbol": "BTC/USDT"},
                {"exchange": "binanceusdm", "symbol": "BTC/USDT:USDT", "source": "ccxt"},
            ]
        },
        P,
    )
    assert u.keys == ["sim.BTC-USDT", "binanceusdm.BTC-USDT-USDT"]
    assert u.instrument("binanceusdm.BTC-USDT-USDT").quote == "USDT"
    assert symbol_slug("ETH/BTC") == "ETH-BTC"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"exchange": "Binance", "symbol": "BTC/USDT", "source": "ccxt"}, "exchange 'Binance'"),
        ({"exchange": "binance", "symbol": "BTCUSDT", "source": "ccxt"}, "symbol 'BTCUSDT'"),
        ({"exchange": "binance", "symbol": "BTC/USDT", "source": "kafka"}, "source 'kafka'"),
        (
            {"exchange": "binance", "symbol": "BTC/USDT", "source": "synthetic"},
            "only allowed with exchange 'sim'",
        ),
        ({"exchange": "sim", "symbol": "BTC/USDT", "source": "ccxt"}, "only allowed with exchange 'sim'"),
        ({"exchange": "binance", "symbol": "BTC/USDT", "source": "replay"}, "needs a 'path'"),
    ],
)
def test_bad_entries_are_named(entry: dict, message: str) -> None:
    with pytest.raises(SettingsError, match="instruments\\[0\\]") as err:
        parse_universe({"instruments": [entry]}, P)
    assert message in str(err.value)


def test_duplicates_and_unknown_keys() -> None:
    with pytest.raises(SettingsError, match=r"listed twice: sim\.BTC-USDT"):
        parse_universe({"instruments": [{"exchange": "sim", "symbol": "BTC/USDT"}] * 2}, P)
    u = parse_universe({"instruments": [{"exchange": "sim", "symbol": "BTC/USDT"}]}, P)
    with pytest.raises(SettingsError, match=r"unknown instrument 'sim\.DOGE-USDT'"):
        u.instrument("sim.DOGE-USDT")
    with pytest.raises(SettingsError, match="start_date"):
        parse_universe({"start_date": "yesterday", "instruments": [{"exchange": "sim", "symbol": "A/B"}]}, P)


@pytest.mark.parametrize(
    ("entry", "unknown", "hint"),
    [
        ({"exchange": "binance", "symbol": "BTC/USDT", "source": "ccxt", "api_ur": "http://proxy"}, "api_ur",
         "did you mean 'api_url'"),
        ({"exchange": "sim", "symbol": "BTC/USDT", "trade_per_minute": 5}, "trade_per_minute",
         "did you mean 'trades_per_minute'"),
        ({"exchange": "binance", "symbol": "BTC/USDT", "source": "replay", "path": "x.csv", "format": "csv"},
         "format", ""),
        ({"exchange": "sim", "symbol": "BTC/USDT", "api_url": "http://proxy"}, "api_url", ""),  # not ccxt
    ],
)  # fmt: skip
def test_unknown_instrument_options_are_rejected(entry: dict, unknown: str, hint: str) -> None:
    ok = {"exchange": "sim", "symbol": "ETH/USDT"}
    with pytest.raises(SettingsError) as err:
        parse_universe({"instruments": [ok, entry]}, P)
    message = str(err.value)
    assert message.startswith(f"{P}: instruments[1] ({entry['exchange']} {entry['symbol']}): ")
    assert f"unknown option {unknown!r} for source {entry.get('source', 'synthetic')!r}" in message
    assert hint in message and "allowed: " in message and "min_non_empty_share" in message


def test_every_option_in_use_stays_allowed() -> None:
    """The repo's instruments files and every option the code reads from an entry still load."""
    for path in [DEFAULT_INSTRUMENTS_FILE, Path(__file__).parent / "instruments_test.yaml"]:
        assert load_universe(path).instruments
    u = parse_universe(
        {
            "instruments": [
                {"exchange": "sim", "symbol": "BTC/USDT", "trades_per_minute": 30,
                 "min_non_empty_share": 0.9},
                {"exchange": "binance", "symbol": "BTC/USDT", "source": "ccxt", "api_url": "http://127.0.0.1:9",
                 "page_limit": 400, "max_retries": 2, "backoff_seconds": 0.1, "timeout_ms": 5000,
                 "exchange_options": {"fetchMarkets": ["spot"]}, "min_non_empty_share": None},
                {"exchange": "binanceusdm", "symbol": "BTC/USDT:USDT", "source": "replay", "path": "a.csv"},
                {"exchange": "ftx", "symbol": "BTC/USD:USD", "source": "candles", "path": "f.csv",
                 "format": "csv", "volume_unit": "quote", "api_url": "http://127.0.0.1:9", "max_retries": 1},
            ]
        },
        P,
    )  # fmt: skip
    assert u.instrument("binance.BTC-USDT").options["exchange_options"] == {"fetchMarkets": ["spot"]}
