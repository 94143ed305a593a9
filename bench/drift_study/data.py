"""The drift study's data (FTX January 2022, Kraken Q1 2023, read in place) and its settings.

Features come from crypto_platform.transforms.features.build_features; days are UTC days.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path

import polars as pl

from crypto_platform.monitoring.drift import MIN_ROWS, DriftThresholds
from crypto_platform.transforms.features import SCALE_FREE_FEATURES, build_features
from crypto_platform.transforms.ohlcv_import import read_ftx_csv, read_kraken_ohlcvt

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / ".." / "shared" / "data"
FTX_FILE = DATA / "candles" / "ftx_btcperp_1m_2022-01.csv"
# A wider candidate set compared against drift.DRIFT_FEATURES (the one monitoring uses): the
# scale-free features plus liquidity levels and bounded oscillators.
WIDE_DRIFT_SET: list[str] = [
    *SCALE_FREE_FEATURES,
    "vol_ratio_15_60",
    "rsi_14",
    "bb_pctb_20",
    "stoch_15",
    "volume_z_60",
    "taker_buy_ratio_15",
    "empty_frac_60",
]
KRAKEN_FILE = DATA / "candles" / "kraken_2023q1" / "XBTUSDC_1.csv"
BINANCE_TRADES = DATA / "trades" / "binance_spot_btcusdt_2024-01-01_1200-1230.parquet"
OUT = REPO / "bench" / "MONITORING.md"

REFERENCE_DAYS = 7
LIQUID_EMPTY_FRAC = 0.2  # "liquid minute": at most 20% of the trailing 60 minutes were empty bars
SKILL_HORIZON = 5
SKILL_HOLDOUTS = (0.2, 0.5)  # bench/MODEL.md's split, and a longer held-out span for more days
PSI_GRID = (0.1, 0.15, 0.2, 0.25, 0.3, 0.5)
KS_GRID = (0.08, 0.1, 0.12, 0.15, 0.2, 0.25)
DEFAULT = DriftThresholds()
CANDIDATES: dict[str, DriftThresholds] = {
    "textbook PSI 0.1 / 0.25, D 0.1 / 0.2": DriftThresholds(0.1, 0.25, 0.1, 0.2),
    "PSI 0.15 / 0.25, D 0.12 / 0.2": DriftThresholds(0.15, 0.25, 0.12, 0.2),
    "PSI 0.2 / 0.25, D 0.15 / 0.2": DriftThresholds(0.2, 0.25, 0.15, 0.2),
    "PSI 0.2 / 0.3, D 0.15 / 0.2": DriftThresholds(0.2, 0.3, 0.15, 0.2),
    "PSI 0.25 / 0.5, D 0.15 / 0.25": DriftThresholds(0.25, 0.5, 0.15, 0.25),
}


Loaded = tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]


def with_features(ftx: pl.DataFrame, kraken: pl.DataFrame) -> Loaded:
    """FTX candles, FTX features, Kraken candles, Kraken features (features carry a 'day' column)."""
    return ftx, with_day(build_features(ftx)), kraken, with_day(build_features(kraken))


def load() -> Loaded:
    """Both markets' candles, read in place, and their features."""
    return with_features(read_ftx_csv(FTX_FILE), read_kraken_ohlcvt(KRAKEN_FILE, symbol="BTC/USDC"))


def with_day(df: pl.DataFrame) -> pl.DataFrame:
    """`df` with its UTC day as a 'day' column."""
    return df.with_columns(pl.col("ts").dt.date().alias("day"))


def full_days(df: pl.DataFrame, *, history: int = REFERENCE_DAYS) -> list[date]:
    """Days with all 1,440 minutes and `history` full days before them."""
    counts = df.group_by("day").len()
    complete = sorted(d for d, n in counts.iter_rows() if n == 1440)
    ok = set(complete)
    return [d for d in complete if all(d - timedelta(days=k) in ok for k in range(1, history + 1))]


def before(df: pl.DataFrame, day: date, days: int = REFERENCE_DAYS) -> pl.DataFrame:
    """The `days` days before `day` (the rolling reference)."""
    return df.filter((pl.col("day") < day) & (pl.col("day") >= day - timedelta(days=days)))


def on(df: pl.DataFrame, day: date) -> pl.DataFrame:
    """The rows of one day."""
    return df.filter(pl.col("day") == day)


def judged(df: pl.DataFrame, columns: Sequence[str]) -> list[str]:
    """Columns with enough finite values to be judged at all (e.g. taker ratios are null in OHLCV)."""
    return [c for c in columns if df[c].cast(pl.Float64).is_finite().sum() >= MIN_ROWS]
