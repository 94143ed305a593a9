"""The instruments file: valid universes load, every mistake is named precisely."""

from __future__ import annotations

from pathlib import Path

import pytest

from crypto_platform.settings import SettingsError, parse_universe, symbol_slug

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
