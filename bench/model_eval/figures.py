"""The figures MODEL.md reports, as plain dataclasses, and their derivation from what the platform recorded.

`Result` holds numbers, texts and dates only (no frames): `render` formats it, tests build it by hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

if TYPE_CHECKING:  # crypto_platform is imported only after the temporary project is set up (see measure)
    from bench.model_eval.measurement import Options
    from crypto_platform.ml.evaluation import ForecastMetrics

MIN_FULL_DAY_ROWS = 300  # a holdout day counts in "rank IC > 0 on k/n full days" with this many rows
TOP_FEATURES = 10
PARAM_KEYS = (
    "learning_rate",
    "num_leaves",
    "min_data_in_leaf",
    "feature_fraction",
    "bagging_fraction",
    "lambda_l2",
)


@dataclass(frozen=True)
class Fold:
    """One walk-forward CV fold of the best trial (bar times as ISO text)."""

    fold: int
    train_start: str
    train_end: str
    n_train: int
    val_start: str
    val_end: str
    n_val: int
    rank_ic: float


@dataclass(frozen=True)
class DayIC:
    """Holdout rank IC of the model and of momentum on one UTC day."""

    day: date
    n: int
    model: float
    momentum: float


@dataclass(frozen=True)
class Bin:
    """One forecast-rank bin of the holdout (`ml.calibration.rank_bins`)."""

    bin: int
    n: int
    predicted_bp: float
    realized_bp: float
    realized_se_bp: float
    share_up: float


@dataclass(frozen=True)
class Importance:
    """Gain importance of one feature."""

    feature: str
    gain: float
    gain_share: float
    splits: int


@dataclass(frozen=True)
class Silver:
    """silver/candles_1m as imported."""

    n: int
    first: datetime
    last: datetime
    empty: int
    origin: str
    vwap_not_close: int
    with_taker_split: int
    with_trade_count: int
    n_days: int


@dataclass(frozen=True)
class Evaluation:
    """The first gold/model run: split, tuning, holdout metrics, gate (run params/metrics as recorded)."""

    model: ForecastMetrics
    zero: ForecastMetrics
    momentum: ForecastMetrics
    params: dict[str, str]  # the MLflow run's parameters
    n_metrics: int
    n_train: int
    n_holdout: int
    n_pruned: int
    promoted: bool
    alias: str
    reasons: list[str]
    best_trial: int
    best_value: float
    best_params: dict[str, Any]
    folds: list[Fold]

    @property
    def horizon(self) -> int:
        """Label horizon in minutes."""
        return int(self.params["horizon"])


@dataclass(frozen=True)
class SecondRun:
    """gold/model again with another seed, gated against the first version as champion."""

    version: str
    eval_window: str
    alias: str
    decision: str
    model: ForecastMetrics
    champion: ForecastMetrics | None
    reasons: list[str]


@dataclass(frozen=True)
class SeedRow:
    """A direct train() call with another seed."""

    seed: int
    cv_rank_ic: float
    holdout: ForecastMetrics
    promoted: bool


@dataclass(frozen=True)
class ControlFigures:
    """Direct train() calls on gold/training_set: the same seed, shuffled labels, other seeds."""

    same_seed: ForecastMetrics
    shuffled_cv: float
    shuffled: ForecastMetrics
    shuffled_promote: bool
    shuffled_reasons: list[str]
    seeds: list[SeedRow] = field(default_factory=list)


@dataclass(frozen=True)
class Result:
    """Everything MODEL.md reports."""

    options: Options  # the CLI flags
    generated_at: datetime
    python: str
    cpus: int
    timings: dict[str, float]
    silver: Silver
    training_set: dict[str, Any]  # gold/training_set materialization metadata
    n_features: int
    lookback_minutes: int
    evaluation: Evaluation
    quintiles: list[Bin]
    daily: list[DayIC]
    n_distinct_forecasts: int
    importance: list[Importance]  # all features, by gain
    second: SecondRun
    controls: ControlFigures
    model_name: str
    version: str
    mlflow_check: str
    artifacts: list[str]


# ---------------------------------------------------------------------------------------- derivation


def metrics_of(evals: pl.DataFrame, forecast: str) -> ForecastMetrics | None:
    """One forecast's ForecastMetrics from gold.model_evaluations rows (None if absent)."""
    from crypto_platform.ml.evaluation import METRIC_NAMES, ForecastMetrics

    rows = evals.filter(pl.col("forecast") == forecast)
    if rows.is_empty():
        return None
    row = rows.row(0, named=True)
    vals = {k: (float("nan") if row[k] is None else float(row[k])) for k in METRIC_NAMES}
    return ForecastMetrics(**{**vals, "n": int(vals["n"]), "n_directional": int(vals["n_directional"])})


def _required(evals: pl.DataFrame, forecast: str) -> ForecastMetrics:
    """metrics_of, or an error naming the missing row."""
    m = metrics_of(evals, forecast)
    if m is None:
        versions = evals["model_version"].unique().to_list() if "model_version" in evals.columns else "?"
        raise RuntimeError(f"model_eval: gold.model_evaluations has no '{forecast}' row (version {versions})")
    return m


def daily_ic(holdout: pl.DataFrame) -> list[DayIC]:
    """Rank IC of the forecast and of momentum against the label, per UTC day of the holdout."""
    from crypto_platform.ml.evaluation import rank_ic

    daily = (
        holdout.with_columns(pl.col("ts").dt.date().alias("day"))
        .group_by("day")
        .agg(pl.len().alias("n"), pl.col("prediction"), pl.col("label"), pl.col("momentum"))
        .sort("day")
    )
    return [
        DayIC(day, n, rank_ic(np.array(p), np.array(lb)), rank_ic(np.array(mm), np.array(lb)))
        for day, n, p, lb, mm in daily.iter_rows()
    ]


def quintiles(holdout: pl.DataFrame, horizon: int) -> list[Bin]:
    """Equal-count forecast-rank quintiles of the holdout (s.e. on n/horizon effective rows)."""
    from crypto_platform.ml.calibration import rank_bins

    bins = rank_bins(holdout, 5, overlap=horizon)
    cols = ("bin", "n", "predicted_bp", "realized_bp", "realized_se_bp", "share_up")
    return [Bin(*r) for r in bins.select(cols).iter_rows()]


def importance_of(table: pl.DataFrame) -> list[Importance]:
    """feature_importance.csv rows, in the file's order (by gain)."""
    return [Importance(*r) for r in table.select("feature", "gain", "gain_share", "splits").iter_rows()]


def evaluation_of(run: Any) -> Evaluation:
    """The first gold/model run's figures from its evaluations rows, MLflow run and gate.json."""
    evals, gate = run.evals, run.gate
    m, z, mo = (_required(evals, f) for f in ("model", "zero", "momentum"))
    folds = [
        Fold(
            f["fold"],
            *(f[k] for k in ("train_start", "train_end", "n_train", "val_start", "val_end")),
            f["n_val"],
            s,
        )
        for f, s in zip(gate["folds"], gate["cv_scores"], strict=True)
    ]
    return Evaluation(
        model=m,
        zero=z,
        momentum=mo,
        params=dict(run.params),
        n_metrics=len(run.metrics),
        n_train=int(run.metrics["n_train"]),
        n_holdout=int(run.metrics["n_holdout"]),
        n_pruned=int(run.metrics["n_pruned_trials"]),
        promoted=bool(evals["promoted"][0]),
        alias=str(evals["alias"][0]),
        reasons=str(evals["gate_reasons"][0]).split("\n"),
        best_trial=gate["best_trial"],
        best_value=gate["best_value"],
        best_params={k: gate["best_params"][k] for k in PARAM_KEYS if k in gate["best_params"]},
        folds=folds,
    )


def second_run_of(run: Any) -> SecondRun:
    """The seed-2 gold/model run against the first version as champion."""
    s2 = run.second
    model = _required(run.second_evals, "model")
    return SecondRun(
        version=str(s2["version"]),
        eval_window=str(s2["eval_window"]),
        alias=str(s2["alias"]),
        decision=str(s2["decision"]),
        model=model,
        champion=metrics_of(run.second_evals, "champion"),
        reasons=str(run.second_evals["gate_reasons"][0]).split("\n"),
    )


def silver_of(run: Any) -> Silver:
    """silver/candles_1m summary (warehouse query) and the number of day partitions."""
    sv = run.silver
    keys = ("n", "first", "last", "empty", "origin", "vwap_not_close", "with_taker_split", "with_trade_count")
    return Silver(*(sv[k] for k in keys), n_days=run.n_days)


def full_day_ics(daily: list[DayIC]) -> list[float]:
    """Model rank IC of the holdout days with at least MIN_FULL_DAY_ROWS rows."""
    return [d.model for d in daily if d.n >= MIN_FULL_DAY_ROWS]


def is_positive(x: float) -> bool:
    """x > 0 (False for NaN)."""
    return not math.isnan(x) and x > 0
