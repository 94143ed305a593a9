"""Out of sample across venues, instruments and periods: train on one span, score on spans never trained on.

Every variant is trained by the platform's `ml.training.train` (Optuna on purged walk-forward CV, final
fit, untouched last block) on Binance BTC/USDT 1-minute klines of December 2021 and February 2022 (plus,
for the pooling variants, more series), then scored on windows it never saw, with the same baselines
the gate uses, fitted on the same development span: zero, momentum (ret_5), reversal (sign and
lookback chosen on the development span) and ridge (same features), through `ml.evaluation.evaluate`
(rank IC, hit rate with the overlap-adjusted binomial p, MAE, paired HAC test against each baseline).

Windows: the variant's own untouched final block (in period); Binance BTC/USDT January 2022 (same
venue, a month not trained on); FTX BTC-PERP January 2022 (another venue, a period not trained on);
Binance BTC/USDT May–August 2025 (three years later); Binance ETH/USDT May–August 2025 (another
instrument). A window that shares a period with a variant's training data is not scored for it; a
model is only scored where every feature it learned from exists (an OHLCV-only window has no order
flow).

The variant kept for the headline is fixed in advance: among the variants whose features exist on the
test window, the last one (in the order tried) whose rank IC on the validation window (Binance BTC
January 2022) beats the previous kept one; FTX January 2022 is the test window and its figures play no
part in the choice.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from bench.model_eval.venues import SERIES, labelled_frame, read_candles

if TYPE_CHECKING:
    from crypto_platform.ml.evaluation import EvaluationReport
    from crypto_platform.ml.training import TrainResult

HORIZON = 5
ORDER_FLOW = ["taker_buy_ratio_5", "taker_buy_ratio_15", "trade_intensity_60", "vwap_dist"]
# features whose scale or meaning is tied to a regime (price levels, volatility levels, clock)
REGIME = ["rv_15", "rv_60", "atr_14", "range_1", "macd", "tod_sin", "tod_cos", "dow_sin", "dow_cos"]
VALIDATION = "binance BTC Jan 2022"
TEST = "ftx BTC-PERP Jan 2022"
TARGET_IC, TARGET_HIT = 0.07, 0.53


@dataclass(frozen=True)
class Variant:
    """One way of training: data, candidate features, target."""

    name: str
    train: tuple[str, ...]  # window names pooled for training
    features: str  # 'price' (what OHLCV venues support) | 'all' (+ order flow) | 'scale-free'
    vol_scaled: bool  # train on label / (rv_60 sqrt(h)); forecasts multiplied back
    note: str


VARIANTS = [
    Variant("base", ("binance BTC Dec 2021 + Feb 2022",), "price", False, "price features, raw target"),
    Variant("vol-scaled", ("binance BTC Dec 2021 + Feb 2022",), "price", True, "+ volatility-scaled target"),
    Variant(
        "order flow", ("binance BTC Dec 2021 + Feb 2022",), "all", True, "+ taker buy ratio, trade intensity"
    ),
    Variant(
        "pooled BTC+ETH",
        ("binance BTC Dec 2021 + Feb 2022", "binance ETH May-Aug 2025"),
        "price",
        True,
        "vol-scaled, + ETH/USDT pooled",
    ),
    Variant(
        "longer history",
        ("binance BTC Dec 2021 + Feb 2022", "binance BTC May-Aug 2025"),
        "price",
        True,
        "vol-scaled, + 4 months of BTC 2025",
    ),
    Variant(
        "scale-free",
        ("binance BTC Dec 2021 + Feb 2022", "binance BTC May-Aug 2025"),
        "scale-free",
        True,
        "longer history, without level/clock features",
    ),
]

# window name -> (series, month filter, period tags)
PERIODS = {
    "binance BTC Dec 2021 + Feb 2022": {"2021-12", "2022-02"},
    VALIDATION: {"2022-01"},
    TEST: {"2022-01"},
    "binance BTC May-Aug 2025": {"2025"},
    "binance ETH May-Aug 2025": {"2025"},
}


@dataclass(frozen=True)
class Score:
    """A variant's model and baselines on one window."""

    window: str
    report: EvaluationReport | None  # None: not applicable (why in `skip`)
    skip: str = ""


@dataclass
class VariantResult:
    """One trained variant: the platform's TrainResult figures and its scores per window."""

    variant: Variant
    cv_rank_ic: float
    n_train: int
    n_features: int
    dropped: dict[str, str]
    scores: dict[str, Score] = field(default_factory=dict)
    seconds: float = 0.0

    def ic(self, window: str) -> float:
        s = self.scores.get(window)
        return s.report.model.rank_ic if s and s.report else math.nan


@dataclass
class Study:
    """Every variant on every window, and which variant is kept."""

    windows: dict[str, int]  # name -> rows
    results: list[VariantResult]
    kept: str
    seconds: float


def load_windows() -> dict[str, pl.DataFrame]:
    """The labelled feature frames of every window (features computed on each whole series)."""
    b21 = labelled_frame(read_candles(SERIES["binance BTC 2021-12..22-02"]), HORIZON)
    jan = pl.col("ts").dt.month() == 1
    return {
        "binance BTC Dec 2021 + Feb 2022": b21.filter(~jan),
        VALIDATION: b21.filter(jan),
        TEST: labelled_frame(read_candles(SERIES["ftx BTC-PERP 2022-01"]), HORIZON),
        "binance BTC May-Aug 2025": labelled_frame(read_candles(SERIES["binance BTC 2025-05..08"]), HORIZON),
        "binance ETH May-Aug 2025": labelled_frame(read_candles(SERIES["binance ETH 2025-05..08"]), HORIZON),
    }


def candidates(kind: str) -> list[str]:
    """The candidate feature columns of a variant."""
    from crypto_platform.transforms.features import FEATURE_COLUMNS

    if kind == "all":
        return list(FEATURE_COLUMNS)
    price = [c for c in FEATURE_COLUMNS if c not in ORDER_FLOW]
    return price if kind == "price" else [c for c in price if c not in REGIME]


def vol_scale(frame: pl.DataFrame) -> np.ndarray:
    """rv_60 * sqrt(h): the forecast horizon's volatility known at t (NaN where not yet defined)."""
    s = frame["rv_60"].cast(pl.Float64).to_numpy() * math.sqrt(HORIZON)
    return np.where(np.isfinite(s) & (s > 0), s, np.nan)


def run_variant(v: Variant, windows: dict[str, pl.DataFrame], *, n_trials: int, seed: int) -> VariantResult:
    """Train the variant with `ml.training.train`, then score it and the baselines on each window."""
    from crypto_platform.ml.baselines import fit_reversal, fit_ridge
    from crypto_platform.ml.training import predict, train

    t0 = time.perf_counter()
    data = pl.concat([windows[w] for w in v.train]).sort("ts", "exchange", "symbol")
    fit_on = data
    if v.vol_scaled:
        scale = vol_scale(data)
        fit_on = data.with_columns(pl.Series("label", data["label"].to_numpy() / scale)).filter(
            pl.col("label").is_finite()
        )
    # one row per 5 minutes: 5-minute labels that do not overlap, a fifth of the fitting time, little
    # information lost (neighbouring rows' labels share 4 of their 5 minutes)
    fit_on = fit_on.filter(pl.col("ts").dt.minute() % HORIZON == 0)
    result = train(
        fit_on,
        candidates(v.features),
        horizon=HORIZON,
        n_trials=n_trials,
        seed=seed,
        n_folds=3,
        num_threads=1,
    )
    dev = data.filter(pl.col("ts") <= result.train_end)
    reversal, ridge = fit_reversal(dev), fit_ridge(dev, result.feature_cols)

    def forecast(frame: pl.DataFrame) -> np.ndarray:
        raw = predict(result.booster, frame, result.feature_cols)
        return np.nan_to_num(raw * vol_scale(frame)) if v.vol_scaled else raw

    out = VariantResult(
        v, result.best_value, result.n_train, len(result.feature_cols), result.dropped_features
    )
    trained_periods = set().union(*(PERIODS[w] for w in v.train))
    scored = {"in period (untouched last block)": data.filter(pl.col("ts") >= result.holdout_start)}
    scored.update({w: f for w, f in windows.items() if w not in v.train})
    for name, frame in scored.items():
        out.scores[name] = _score(name, frame, result, forecast, reversal, ridge, trained_periods)
    out.seconds = time.perf_counter() - t0
    print(f"[model_eval] variant {v.name}: {out.seconds:.1f}s", flush=True)
    return out


def _score(name, frame, result: TrainResult, forecast, reversal, ridge, trained_periods) -> Score:
    from crypto_platform.ml.evaluation import evaluate
    from crypto_platform.ml.feature_availability import usable_features

    if name in PERIODS and PERIODS[name] & trained_periods:
        return Score(name, None, "period trained on")
    present = [c for c in result.feature_cols if c in frame.columns]
    absent = [c for c in result.feature_cols if c not in present or frame[c].null_count() == frame.height]
    if absent:
        return Score(name, None, f"lacks {', '.join(absent)}")
    usable_features(frame, present)  # at least one varies (a clear error otherwise)
    report = evaluate(
        frame,
        forecast(frame),
        horizon=HORIZON,
        momentum_col=f"ret_{HORIZON}",
        booster=None,
        baselines={"reversal": reversal.predict(frame), "ridge": ridge.predict(frame)},
        specs={"reversal": reversal.describe(), "ridge": ridge.describe()},
    )
    return Score(name, report)


def kept_variant(results: list[VariantResult]) -> str:
    """The last variant, in the order tried, that raised the validation window's rank IC over the kept one
    (among those whose features exist on the test window: applicability, not its figures)."""
    scorable = [r for r in results if r.scores.get(TEST) is not None and r.scores[TEST].report is not None]
    kept = scorable[0] if scorable else results[0]
    for r in scorable[1:]:
        if math.isfinite(r.ic(VALIDATION)) and r.ic(VALIDATION) > kept.ic(VALIDATION):
            kept = r
    return kept.variant.name


def run_study(*, n_trials: int = 6, seed: int = 42, variants: list[Variant] | None = None) -> Study:
    """Load the windows, train and score every variant."""
    t0 = time.perf_counter()
    windows = load_windows()
    results = [run_variant(v, windows, n_trials=n_trials, seed=seed) for v in (variants or VARIANTS)]
    return Study(
        windows={k: f.height for k, f in windows.items()},
        results=results,
        kept=kept_variant(results),
        seconds=time.perf_counter() - t0,
    )
