"""Skill-check false alarms: the platform's model trained on early January, `skill_lost` per held-out day."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
import polars as pl

from bench.drift_study.data import SKILL_HORIZON
from crypto_platform.ml.dataset import training_frame
from crypto_platform.ml.training import TrainResult, train
from crypto_platform.monitoring.performance import MIN_HIT_RATE, MIN_RANK_IC, prediction_errors, skill_lost
from crypto_platform.transforms.features import FEATURE_COLUMNS
from crypto_platform.transforms.labels import forward_return_labels


@dataclass(frozen=True)
class SkillDay:
    """skill_lost's verdict on one held-out day."""

    day: date
    n: int
    rank_ic: float | None
    hit_rate: float | None
    lost: bool
    sufficient: bool


def skill_days(
    candles: pl.DataFrame, features: pl.DataFrame, holdout_fraction: float, *, shuffle: bool = False
) -> tuple[list[SkillDay], str]:
    """Train the platform's model on January's first part; skill_lost on each full held-out day."""
    result = trained(candles, features, holdout_fraction)[1]
    pred = result.holdout["prediction"].to_numpy()
    if shuffle:  # control: forecasts detached from the bars they were made at (no skill by construction)
        pred = np.random.default_rng(0).permutation(pred)
    preds = result.holdout.select(
        "exchange",
        "symbol",
        "ts",
        pl.lit(SKILL_HORIZON, pl.Int64).alias("horizon"),
        pl.Series("predicted_return", pred),
        pl.lit("1").alias("model_version"),
    )
    errors = prediction_errors(preds, candles, SKILL_HORIZON)
    errors = errors.with_columns(pl.col("ts").dt.date().alias("day"))
    counts = errors.group_by("day").len()
    days = sorted(d for d, n in counts.iter_rows() if n >= 1440 - SKILL_HORIZON)  # full held-out days
    out = []
    for d in days:
        v = skill_lost(errors.filter(pl.col("day") == d).drop("day"), window_minutes=24 * 60)
        out.append(SkillDay(d, v.n, v.rank_ic, v.hit_rate, v.lost, v.sufficient))
    span = f"trained {result.train_start:%m-%d %H:%M} – {result.train_end:%m-%d %H:%M}"
    return out, span


_TRAINED: dict[tuple[int, int, float], tuple[pl.DataFrame, TrainResult]] = {}


def trained(
    candles: pl.DataFrame, features: pl.DataFrame, holdout_fraction: float
) -> tuple[pl.DataFrame, TrainResult]:
    """(training frame, the platform's model trained on it with this holdout), trained once per study."""
    key = (id(candles), id(features), holdout_fraction)
    if key not in _TRAINED:
        labels = forward_return_labels(candles, SKILL_HORIZON)
        df = training_frame(features.drop("day"), labels)
        result = train(df, FEATURE_COLUMNS, horizon=SKILL_HORIZON, holdout_fraction=holdout_fraction, seed=42)
        _TRAINED[key] = (df, result)
    return _TRAINED[key]


@dataclass(frozen=True)
class SkillSummary:
    """skill_lost over a set of held-out days: daily rank IC / hit rate and how often it fired."""

    label: str
    days: int
    ic_median: float
    ic_min: float
    ic_lost_days: int  # rank IC <= MIN_RANK_IC
    hit_median: float
    hit_lost_days: int  # hit rate <= MIN_HIT_RATE
    fired: int


def skill_summary(label: str, days: Sequence[SkillDay]) -> SkillSummary:
    """Summarise the daily verdicts of one model (or control)."""
    ics = [d.rank_ic for d in days if d.rank_ic is not None]
    hits = [d.hit_rate for d in days if d.hit_rate is not None]
    return SkillSummary(
        label=label,
        days=len(days),
        ic_median=float(np.median(ics)),
        ic_min=min(ics),
        ic_lost_days=sum(x <= MIN_RANK_IC for x in ics),
        hit_median=float(np.median(hits)),
        hit_lost_days=sum(x <= MIN_HIT_RATE for x in hits),
        fired=sum(d.lost for d in days),
    )
