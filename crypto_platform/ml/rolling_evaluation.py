"""Rolling out-of-sample evaluation: the served model and every baseline scored on one matured day.

Each (instrument, day) whose labels have matured is scored once for the model and the baselines the
promotion gate uses (zero, momentum, short-term reversal, ridge; `ml.baselines` fitted on the model's
own training window, so neither sees the day), with `ml.evaluation.evaluate`: n, MAE, RMSE, hit rate
with its overlap-adjusted binomial p-value, rank IC, and the model's rank-IC advantage over each
baseline with its one-sided HAC p-value. A day inside the model's training span is flagged
`in_sample` (its score there flatters the model).

`pooled_skill` aggregates cells (instruments, days) for the `model_skill` check: the mean of the
daily rank ICs weighted by rows (the usual "mean IC"), and the exact pooled hit rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import polars as pl

from crypto_platform.ml.baselines import Reversal, Ridge, fit_reversal, fit_ridge
from crypto_platform.ml.evaluation import evaluate

FORECAST_ORDER = ("model", "zero", "momentum", "reversal", "ridge")
# one row per (cell, forecast): the columns of gold/rolling_evaluation
COLUMNS: dict[str, pl.DataType] = {
    "exchange": pl.String(),
    "symbol": pl.String(),
    "day": pl.Date(),
    "model_name": pl.String(),
    "model_version": pl.String(),
    "horizon": pl.Int32(),
    "in_sample": pl.Boolean(),
    "forecast": pl.String(),
    "spec": pl.String(),
    "n": pl.Int64(),
    "rank_ic": pl.Float64(),
    "hit_rate": pl.Float64(),
    "n_directional": pl.Int64(),
    "hit_rate_null": pl.Float64(),
    "hit_p_value": pl.Float64(),
    "mae": pl.Float64(),
    "rmse": pl.Float64(),
    "model_advantage": pl.Float64(),  # model rank IC minus this forecast's (null on the model row)
    "model_advantage_p": pl.Float64(),  # one-sided HAC p-value of that advantage
    "scored_at": pl.Datetime("us", "UTC"),
}


@dataclass(frozen=True)
class FittedBaselines:
    """The reversal and ridge baselines fitted on the model's training window (None: could not be)."""

    reversal: Reversal | None
    ridge: Ridge | None
    note: str | None = None  # why a baseline is missing

    def forecasts(self, frame: pl.DataFrame) -> dict[str, np.ndarray]:
        """Each fitted baseline's forecast on `frame`."""
        out = {}
        if self.reversal is not None:
            out["reversal"] = self.reversal.predict(frame)
        if self.ridge is not None:
            out["ridge"] = self.ridge.predict(frame)
        return out

    def specs(self) -> dict[str, str]:
        """What each fitted baseline forecasts."""
        out = {}
        if self.reversal is not None:
            out["reversal"] = self.reversal.describe()
        if self.ridge is not None:
            out["ridge"] = self.ridge.describe()
        return out


def fit_baselines(
    train: pl.DataFrame, feature_cols: list[str], *, label_col: str = "label"
) -> FittedBaselines:
    """Fit reversal and ridge on the model's training rows (features + label); missing ones say why."""
    if train.height < 3:
        return FittedBaselines(
            None, None, f"only {train.height} training rows: reversal and ridge not fitted"
        )
    usable = [c for c in feature_cols if c in train.columns]
    try:
        ridge = fit_ridge(train, usable, label_col=label_col) if usable else None
        note = None if usable else "no feature of the model in the training rows: ridge not fitted"
    except ValueError as exc:
        ridge, note = None, f"ridge not fitted: {exc}"
    return FittedBaselines(fit_reversal(train, label_col=label_col), ridge, note)


def score_cell(
    frame: pl.DataFrame,
    prediction: np.ndarray,
    baselines: FittedBaselines,
    *,
    horizon: int,
    label_col: str = "label",
) -> pl.DataFrame:
    """One row per forecast (model, zero, momentum, fitted baselines) scored on `frame` (ts, label, ret_h)."""
    report = evaluate(
        frame,
        prediction,
        horizon=horizon,
        momentum_col=f"ret_{horizon}",
        label_col=label_col,
        baselines=baselines.forecasts(frame),
        specs=baselines.specs(),
    )
    table = report.table("rank_ic")
    spec = {"model": "the served model", **report.specs}
    return table.select(
        "forecast",
        pl.col("forecast").replace_strict(spec, default=None, return_dtype=pl.String).alias("spec"),
        pl.col("n").cast(pl.Int64),
        "rank_ic",
        "hit_rate",
        pl.col("n_directional").cast(pl.Int64),
        "hit_rate_null",
        "hit_p_value",
        "mae",
        "rmse",
        pl.col("model_advantage").cast(pl.Float64),
        pl.col("model_advantage_p").cast(pl.Float64),
    ).with_columns(_nan_to_null())


def cell_rows(
    scores: pl.DataFrame,
    *,
    exchange: str,
    symbol: str,
    day: date,
    model_name: str,
    model_version: str,
    horizon: int,
    in_sample: bool,
    scored_at: datetime,
) -> pl.DataFrame:
    """`score_cell` rows tagged with the cell, the model version and when they were scored (COLUMNS)."""
    return scores.with_columns(
        pl.lit(exchange).alias("exchange"),
        pl.lit(symbol).alias("symbol"),
        pl.lit(day).alias("day"),
        pl.lit(model_name).alias("model_name"),
        pl.lit(str(model_version)).alias("model_version"),
        pl.lit(horizon).alias("horizon"),
        pl.lit(in_sample).alias("in_sample"),
        pl.lit(scored_at).alias("scored_at"),
    ).select([pl.col(c).cast(t) for c, t in COLUMNS.items()])


@dataclass(frozen=True)
class PooledSkill:
    """One forecast over several cells: rows, mean daily rank IC (row-weighted), pooled hit rate."""

    forecast: str
    cells: int
    n: int
    rank_ic: float | None
    hit_rate: float | None
    mae: float | None


def pooled_skill(rows: pl.DataFrame) -> list[PooledSkill]:
    """Per forecast over the cells of `rows` (COLUMNS): row-weighted mean rank IC, exact pooled hit rate
    (hits / directional rows) and row-weighted MAE; in FORECAST_ORDER."""
    if rows.is_empty():
        return []
    ic_ok = pl.col("rank_ic").is_not_null() & pl.col("rank_ic").is_finite()
    hit_ok = pl.col("hit_rate").is_not_null() & (pl.col("n_directional") > 0)
    agg = rows.group_by("forecast").agg(
        pl.len().alias("cells"),
        pl.col("n").sum().alias("n"),
        ((pl.col("rank_ic") * pl.col("n")).filter(ic_ok).sum() / pl.col("n").filter(ic_ok).sum()).alias(
            "rank_ic"
        ),
        (
            (pl.col("hit_rate") * pl.col("n_directional")).filter(hit_ok).sum()
            / pl.col("n_directional").filter(hit_ok).sum()
        ).alias("hit_rate"),
        ((pl.col("mae") * pl.col("n")).sum() / pl.col("n").sum()).alias("mae"),
    )
    order = {f: i for i, f in enumerate(FORECAST_ORDER)}
    out = [
        PooledSkill(
            r["forecast"],
            int(r["cells"]),
            int(r["n"]),
            _finite(r["rank_ic"]),
            _finite(r["hit_rate"]),
            _finite(r["mae"]),
        )
        for r in agg.iter_rows(named=True)
    ]
    return sorted(out, key=lambda p: (order.get(p.forecast, len(order)), p.forecast))


def _nan_to_null() -> list[pl.Expr]:
    cols = ["rank_ic", "hit_rate", "hit_rate_null", "hit_p_value", "mae", "rmse", "model_advantage"]
    return [pl.col(c).fill_nan(None) for c in [*cols, "model_advantage_p"]]


def _finite(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)
