"""The real 1-minute series of ../shared/data/candles as labelled feature frames, one per venue and period.

Each series is read with the platform's own OHLCV import (`transforms.ohlcv_import.read_ohlcv`: Binance
kline dumps keep trade counts and taker buy volume, FTX and the freqtrade ETH file are OHLCV only),
turned into gold features (`transforms.features.build_features`) and forward-return labels
(`transforms.labels.forward_return_labels`) and joined point-in-time (`ml.dataset.training_frame`):
the same code path as gold/features, gold/labels and gold/training_set, without the Dagster run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from crypto_platform.ml.dataset import training_frame
from crypto_platform.transforms.features import build_features
from crypto_platform.transforms.labels import forward_return_labels
from crypto_platform.transforms.ohlcv_import import read_ohlcv

CANDLES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "candles"


@dataclass(frozen=True)
class Series:
    """One instrument's 1-minute history: where it comes from and how to read it."""

    name: str  # short label used in the report, e.g. 'binance BTC 2021-12..2022-02'
    exchange: str
    symbol: str
    files: str  # glob under CANDLES
    volume_unit: str = "base"


SERIES: dict[str, Series] = {
    s.name: s
    for s in [
        Series(
            "binance BTC 2021-12..22-02",
            "binance",
            "BTC/USDT",
            "binance_spot_btcusdt_1m_raw_2021-12_2022-02/*.csv",
        ),
        Series(
            "binance BTC 2025-05..08",
            "binance",
            "BTC/USDT",
            "binance_spot_btcusdt_1m_raw_2025-05_2025-08/*.csv",
        ),
        Series(
            "binance ETH 2025-05..08",
            "binance",
            "ETH/USDT",
            "binance_spot_btc_eth_1m_ohlcv_2025-05-20_2025-08-18/ETH_USDT-1m.feather",
        ),
        Series("ftx BTC-PERP 2022-01", "ftx", "BTC/USD:USD", "ftx_btcperp_1m_2022-01.csv", "quote"),
    ]
}


def read_candles(series: Series, root: Path = CANDLES) -> pl.DataFrame:
    """Every file of the series through the OHLCV import, concatenated in time order."""
    paths = sorted(root.glob(series.files))
    if not paths:
        raise FileNotFoundError(f"{series.name}: no file matches {root / series.files}")
    frames = [
        read_ohlcv(p, exchange=series.exchange, symbol=series.symbol, volume_unit=series.volume_unit)  # type: ignore[arg-type]
        for p in paths
    ]
    return pl.concat(frames).sort("ts")


def labelled_frame(candles: pl.DataFrame, horizon: int) -> pl.DataFrame:
    """Features + the `horizon`-minute forward log return (`label`) of every bar that has both."""
    feats = build_features(candles)
    labels = forward_return_labels(candles, horizon)
    return training_frame(feats, labels, horizon=horizon)
